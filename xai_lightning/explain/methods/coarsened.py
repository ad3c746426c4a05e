"""Another method's map at Grad-CAM's resolution: averaged over the CAM layer's cells, upsampled as a CAM is.

A Grad-CAM map is a 7×7 grid (EfficientNet-B0 at 224²) upsampled bilinearly: smooth, and blob-shaped
like a defect mask. A pixel-level map (Saliency, Integrated Gradients) is speckled, and rank-based
scores such as Top-K overlap punish the speckle. Comparing methods at one resolution separates
"where the method points" from "how finely it draws": the poster ablation's smoothing factor.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from xai_lightning.errors import ConfigError
from xai_lightning.explain.base import Explainer, PassCount, create_explainer, register_explainer
from xai_lightning.explain.options import ExplainerOptions, option, positive_int, resolve_layer
from xai_lightning.explain.shared import capture_outputs


def _check_method(option_name: str, value: Any) -> str:
    if not isinstance(value, str) or value == CoarsenedExplainer.name:
        raise ConfigError(f"{option_name} is {value!r}; give the registry name of another method, e.g. 'saliency'.")
    return value


def _check_options(option_name: str, value: Any) -> dict:
    if not isinstance(value, dict):
        raise ConfigError(f"{option_name} is {value!r}; give the inner method's options as a mapping.")
    return dict(value)


@dataclass(frozen=True)
class CoarsenedOptions(ExplainerOptions):
    """Options of ``coarsened``.

    Attributes:
        inner: the registry name of the method whose maps are coarsened.
        inner_options: that method's options.
        grid: cells per side; None: the grid of the model's Grad-CAM layer at the input's size.
    """

    inner: str = option("saliency", _check_method)
    inner_options: dict | None = option(None, _check_options, optional=True)
    grid: int | None = positive_int(None, optional=True)


@register_explainer
class CoarsenedExplainer(Explainer):
    """``inner``'s maps averaged over a grid of cells (default: the Grad-CAM layer's), bilinearly upsampled."""

    name = "coarsened"
    reduction = "none"
    Options = CoarsenedOptions

    def setup(self) -> None:
        self.inner = create_explainer(self.settings.inner, self.model, **(self.settings.inner_options or {}))
        self.inner.seed = self.seed
        self._grids: dict[tuple[int, int], tuple[int, int]] = {}  # Grad-CAM grid per input size

    def passes(self, image_size: tuple[int, int]) -> PassCount:
        return self.inner.passes(image_size)

    def attribute(self, images: Tensor, targets: Tensor) -> Tensor:
        maps = self.inner.explain(images, targets)
        cells = F.adaptive_avg_pool2d(maps.unsqueeze(1), self._grid(images))
        return F.interpolate(cells, size=tuple(images.shape[-2:]), mode="bilinear", align_corners=False)[:, 0]


    def _grid(self, images: Tensor) -> int | tuple[int, int]:
        """The cells per side: the option, or the Grad-CAM layer's grid at the images' size (found once per size:
        it takes a forward pass)."""
        if self.settings.grid:
            return self.settings.grid
        size = tuple(images.shape[-2:])
        if size not in self._grids:
            self._grids[size] = cam_grid(self.model, images[:1])
        return self._grids[size]


def cam_grid(model: torch.nn.Module, image: Tensor) -> tuple[int, int]:
    """(h, w) of the model's Grad-CAM layer output for ``image`` (one forward pass, hooked)."""
    name, _ = resolve_layer(model, None)
    with capture_outputs(model, (name,)) as captured, torch.no_grad():
        model.classify(image)
    return tuple(captured[name].shape[-2:])
