"""Registry of torchvision backbones, filled at import: each an encoder in named stages and the layer a CAM hooks.

``create_backbone("resnet18", pretrained=True)`` builds one by name; ``list_backbones("resnet*")`` filters names.
"""

from __future__ import annotations

import contextlib
import fnmatch
import math
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.error import URLError

import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from xai_lightning.errors import ConfigError


@dataclass
class Backbone:
    """An encoder split into named stages, the last one giving a (B, C, h, w) feature map.

    Attributes:
        name: torchvision model name.
        encoder: named stages run in order; the last one outputs the deep feature map.
        skip_stage: name of the stage whose output (stride 8; stride 16 for ViTs, which have no finer
            map) feeds the segmentation decoder.
        cam_layer: dotted path, inside ``encoder``, of the layer Grad-CAM hooks by default.
    """

    name: str
    encoder: nn.Sequential
    skip_stage: str
    cam_layer: str

    @property
    def cam_stage(self) -> str:
        """The encoder stage that holds the Grad-CAM layer."""
        return self.cam_layer.split(".")[0]

    def stage_shapes(self, size: int = 64) -> dict[str, tuple[int, int]]:
        """``{stage: (channels, stride)}`` of the stages that output a feature map (B, C, h, w), in order,
        measured with one dry forward pass on a ``size``² input (a ViT's token stages are left out)."""
        x = torch.zeros(1, 3, size, size)
        shapes = {}
        with torch.no_grad():
            for stage_name, stage in self.encoder.named_children():
                x = stage(x)
                if x.dim() == 4:
                    shapes[stage_name] = (x.shape[1], size // x.shape[-1])
        return shapes


#: What a registry entry does: turn the torchvision model of the same name into a :class:`Backbone`.
BackboneBuilder = Callable[[nn.Module], Backbone]

_REGISTRY: dict[str, BackboneBuilder] = {}
#: The backbone of a model (and of a run whose config names none).
DEFAULT_BACKBONE = "resnet18"


def register_backbone(name: str) -> Callable[[BackboneBuilder], BackboneBuilder]:
    """Decorator: register a function that turns the torchvision model ``name`` into a :class:`Backbone`.

    ``create_backbone(name)`` builds torchvision's ``name`` and hands it to the function, so ``name``
    must be a torchvision model name. A name is registered once: registering it again is a
    ValueError, never a silent replacement; for a while only (a test), use :func:`registered_backbones`.
    """

    def wrap(fn: BackboneBuilder) -> BackboneBuilder:
        if name in _REGISTRY:
            raise ValueError(f"Backbone '{name}' is registered twice.")
        _REGISTRY[name] = fn
        return fn

    return wrap


def unregister_backbone(name: str) -> BackboneBuilder:
    """Remove ``name`` from the registry and return its function (a ValueError when it is not registered)."""
    if name not in _REGISTRY:
        raise ValueError(f"Backbone '{name}' is not registered.")
    return _REGISTRY.pop(name)


@contextlib.contextmanager
def registered_backbones(**builders: BackboneBuilder) -> Iterator[None]:
    """Register ``name=function`` pairs for the duration of the block, then remove them, even when it raises.

    The scope for test doubles: the registry is left as it was found; names follow the rule of
    :func:`register_backbone` (a name taken already is a ValueError).

    >>> with registered_backbones(resnet152=_resnet):
    ...     list_backbones("resnet15*")
    ['resnet152']
    >>> list_backbones("resnet15*")
    []
    """
    added: list[str] = []
    try:
        for name, fn in builders.items():
            register_backbone(name)(fn)
            added.append(name)
        yield
    finally:
        for name in reversed(added):
            _REGISTRY.pop(name, None)


def list_backbones(pattern: str = "*") -> list[str]:
    """Registered backbone names matching a shell-style ``pattern``, sorted.

    >>> list_backbones("resnet*")
    ['resnet101', 'resnet18', 'resnet34', 'resnet50']
    """
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


def pretrained_weights_cached(name: str) -> bool:
    """Whether torchvision's default ImageNet weights of backbone ``name`` are in its cache (no download needed)."""
    weights = torchvision.models.get_model_weights(name).DEFAULT
    return (Path(torch.hub.get_dir()) / "checkpoints" / weights.url.rsplit("/", 1)[-1]).is_file()


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


# ---------------------------------------------------------------------------- vision transformer
# Every encoder outputs (B, C, h, w) feature maps, the vision transformer too: its last stage reshapes
# the patch tokens into a grid, so the classifier, the segmentation decoder and every layer CAM in
# xai_lightning.explain treat it like any convolutional stage.
class PatchEmbedding(nn.Module):
    """ViT stage 1: image → (B, 1 + N, D) tokens (class token, then patches in row-major order).

    Holds (shares, not copies) torchvision's ``conv_proj``, ``class_token``, ``pos_embedding`` and the
    encoder's embedding dropout, so pretrained weights load unchanged. torchvision's ViT only accepts
    its build ``image_size`` (224); here the patch position embeddings are resampled bicubically to
    the input's patch grid, as timm and DeiT do for fine-tuning at another resolution. The stored
    embedding stays the 14×14 one, so a checkpoint works at any input size that is a multiple of
    the patch size.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.patch_size: int = model.patch_size
        self.conv_proj = model.conv_proj
        self.class_token = model.class_token
        self.pos_embedding = model.encoder.pos_embedding
        self.dropout = model.encoder.dropout
        #: Side of the patch grid the stored position embeddings were trained for (224 / 16 = 14).
        self.trained_grid: int = model.image_size // model.patch_size

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        height, width = images.shape[-2:]
        if height % self.patch_size or width % self.patch_size:
            # The conv would silently drop the last rows/columns, and a CAM upsampled over the whole
            # image would then be shifted against it.
            raise ConfigError(
                f"A ViT with patch size {self.patch_size} needs image sides that are multiples of "
                f"{self.patch_size}; got {height}×{width} (set `data.image_size`, e.g. 64, 128 or 224)."
            )
        patches = self.conv_proj(images)  # (B, D, h, w)
        grid = patches.shape[-2:]
        tokens = patches.flatten(2).transpose(1, 2)  # (B, h·w, D)
        class_token = self.class_token.expand(tokens.shape[0], -1, -1)
        tokens = torch.cat([class_token, tokens], dim=1)
        return self.dropout(tokens + self.position_embedding(tuple(grid)))

    def position_embedding(self, grid: tuple[int, int]) -> torch.Tensor:
        """(1, 1 + h·w, D) position embeddings for an h × w patch grid (class token's unchanged)."""
        if grid == (self.trained_grid, self.trained_grid):
            return self.pos_embedding
        cls_pos, patch_pos = self.pos_embedding[:, :1], self.pos_embedding[:, 1:]
        dim = patch_pos.shape[-1]
        patch_pos = patch_pos.reshape(1, self.trained_grid, self.trained_grid, dim).permute(0, 3, 1, 2)
        # Bicubic, align_corners=False: torchvision's own interpolate_embeddings and timm's
        # resample_abs_pos_embed resample the same way.
        patch_pos = F.interpolate(patch_pos, size=grid, mode="bicubic", align_corners=False)
        return torch.cat([cls_pos, patch_pos.flatten(2).transpose(1, 2)], dim=1)


class TokenGrid(nn.Module):
    """ViT last stage: drop the class token and reshape patch tokens (B, 1 + h·w, D) → (B, D, h, w).

    This is the layer Grad-CAM hooks: a 4-D activation whose gradient's spatial mean weighs each of
    the D channels, exactly as for a CNN stage. Inputs are square (the data module resizes to
    ``image_size`` × ``image_size``), so the side is √N; a non-square token count is an error rather
    than a wrong reshape.
    """

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        patches = tokens[:, 1:]
        batch, count, dim = patches.shape
        side = math.isqrt(count)
        if side * side != count:
            raise ValueError(f"TokenGrid expects a square patch grid; got {count} patch tokens.")
        return patches.transpose(1, 2).reshape(batch, dim, side, side)


@register_backbone("vit_b_16")
def _vit_b_16(model: nn.Module) -> Backbone:
    """ViT-B/16 as stages ``patchify`` → ``blocks`` → ``grid`` (a (B, 768, H/16, W/16) map).

    The classifier pools the patch grid (global average of the patch tokens after the final
    LayerNorm, a standard ViT variant), so torchvision's class-token head (``model.heads``) is not
    used, pretrained or not. The class token still goes through the blocks, where pretrained
    attention expects it. A ViT has no stride-8 map, so the segmentation decoder's skip input is the
    stride-16 grid itself (skip and deep features are then the same map).
    """
    stages = OrderedDict(
        patchify=PatchEmbedding(model),
        blocks=nn.Sequential(model.encoder.layers, model.encoder.ln),
        grid=TokenGrid(),
    )
    return Backbone(name="vit_b_16", encoder=nn.Sequential(stages), skip_stage="grid", cam_layer="grid")
