"""Registry of torchvision backbones: each one an encoder, its feature sizes and the layer a CAM hooks.

``create_backbone("resnet18", pretrained=True)`` builds one by name; ``list_backbones("resnet*")``
filters names, as timm's registry does. Pretrained weights come from torchvision's weights API.
"""

from __future__ import annotations

import fnmatch
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable
from urllib.error import URLError

import torch
import torchvision
from torch import nn

from xai_lightning.errors import ConfigError


@dataclass
class Backbone:
    """A convolutional encoder split into named stages.

    Attributes:
        name: torchvision model name.
        encoder: named stages run in order; the last one outputs the deep feature map.
        skip_stage: name of the stage whose output (stride 8) feeds the segmentation decoder.
        cam_layer: dotted path, inside ``encoder``, of the layer Grad-CAM hooks by default.
    """

    name: str
    encoder: nn.Sequential
    skip_stage: str
    cam_layer: str

    def channels(self) -> tuple[int, int]:
        """(skip channels, deep channels), measured with one dry forward pass on a small input."""
        x = torch.zeros(1, 3, 64, 64)
        skip = None
        with torch.no_grad():
            for stage_name, stage in self.encoder.named_children():
                x = stage(x)
                if stage_name == self.skip_stage:
                    skip = x
        return skip.shape[1], x.shape[1]


_REGISTRY: dict[str, Callable[[nn.Module], Backbone]] = {}


def register_backbone(name: str) -> Callable:
    """Decorator: register a function that turns a torchvision model into a :class:`Backbone`."""

    def wrap(fn: Callable[[nn.Module], Backbone]) -> Callable[[nn.Module], Backbone]:
        _REGISTRY[name] = fn
        return fn

    return wrap


def list_backbones(pattern: str = "*") -> list[str]:
    """Registered backbone names matching a shell-style ``pattern``."""
    return sorted(name for name in _REGISTRY if fnmatch.fnmatch(name, pattern))


def create_backbone(name: str, pretrained: bool = False) -> Backbone:
    """Build a registered backbone; ``pretrained`` loads torchvision's default ImageNet weights.

    Weights are downloaded once into ``$TORCH_HOME/hub/checkpoints`` (torchvision's cache); with no
    network a clear :class:`ConfigError` says how to proceed instead of a socket traceback.
    """
    if name not in _REGISTRY:
        raise ConfigError(f"Unknown backbone '{name}' (`model.backbone`). Available: {', '.join(list_backbones())}.")
    weights = torchvision.models.get_model_weights(name).DEFAULT if pretrained else None
    try:
        model = torchvision.models.get_model(name, weights=weights)
    except (URLError, OSError, RuntimeError) as error:
        if weights is None:
            raise
        cache = torch.hub.get_dir() + "/checkpoints"
        raise ConfigError(
            f"Could not load pretrained weights {weights} for `model.backbone: {name}` "
            f"({type(error).__name__}: {error}). Without internet, copy '{weights.url.rsplit('/', 1)[-1]}' "
            f"into '{cache}', or set `model.pretrained: false` to train from scratch."
        ) from error
    backbone = _REGISTRY[name](model)
    backbone.name = name
    return backbone


def _resnet(model: nn.Module) -> Backbone:
    stages = OrderedDict(
        stem=nn.Sequential(model.conv1, model.bn1, model.relu, model.maxpool),
        layer1=model.layer1,
        layer2=model.layer2,
        layer3=model.layer3,
        layer4=model.layer4,
    )
    return Backbone(name="resnet", encoder=nn.Sequential(stages), skip_stage="layer2", cam_layer="layer4")


for _name in ("resnet18", "resnet34", "resnet50", "resnet101"):
    register_backbone(_name)(_resnet)


@register_backbone("densenet121")
def _densenet121(model: nn.Module) -> Backbone:
    f = model.features
    # torchvision applies the final ReLU functionally in forward(); a module makes it hookable for CAMs.
    stages = OrderedDict(
        stem=nn.Sequential(f.conv0, f.norm0, f.relu0, f.pool0),
        block1=nn.Sequential(f.denseblock1, f.transition1),
        block2=nn.Sequential(f.denseblock2, f.transition2),
        block3=nn.Sequential(f.denseblock3, f.transition3),
        block4=nn.Sequential(f.denseblock4, f.norm5, nn.ReLU()),
    )
    return Backbone(name="densenet121", encoder=nn.Sequential(stages), skip_stage="block2", cam_layer="block4")


@register_backbone("efficientnet_b0")
def _efficientnet_b0(model: nn.Module) -> Backbone:
    f = model.features
    stages = OrderedDict(stem=f[:3], stage3=f[3], deep=f[4:])  # f[3] ends at stride 8
    return Backbone(name="efficientnet_b0", encoder=nn.Sequential(stages), skip_stage="stage3", cam_layer="deep")
