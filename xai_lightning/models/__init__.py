"""Models: the backbone registry and the multi-task (classification + segmentation) module."""

from xai_lightning.models.backbones import Backbone, create_backbone, list_backbones, register_backbone
from xai_lightning.models.multitask import MultiTaskClassifier, MultiTaskOutput

__all__ = ["Backbone", "MultiTaskClassifier", "MultiTaskOutput", "create_backbone", "list_backbones", "register_backbone"]
