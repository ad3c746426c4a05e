"""Models: the backbone registry and the multi-task (classification + segmentation) module.

``create_backbone("resnet18")`` builds a registered encoder; :class:`MultiTaskClassifier` puts both heads on it.
"""

from xai_lightning.models.backbones import (
    Backbone,
    create_backbone,
    list_backbones,
    register_backbone,
    registered_backbones,
    unregister_backbone,
)
from xai_lightning.models.multitask import MultiTaskClassifier, MultiTaskOutput

__all__ = [
    "Backbone",
    "MultiTaskClassifier",
    "MultiTaskOutput",
    "create_backbone",
    "list_backbones",
    "register_backbone",
    "registered_backbones",
    "unregister_backbone",
]
