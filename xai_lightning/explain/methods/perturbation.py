"""Perturbation methods: Occlusion, LIME and KernelSHAP, which replace parts of the image by a baseline.

They run forward passes only; LIME and KernelSHAP fit :class:`~.surrogate.WeightedLinearRegression` to superpixels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from captum.attr import KernelShap, Lime, Occlusion
from torch import Tensor

from xai_lightning.errors import ConfigError
from xai_lightning.explain.base import PassCount, register_explainer
from xai_lightning.data.transforms import input_normalized
from xai_lightning.explain.baselines import baseline_image
from xai_lightning.explain.captum_support import ReducedExplainer
from xai_lightning.explain.methods.surrogate import WeightedLinearRegression
from xai_lightning.explain.options import ExplainerOptions, baseline_option, non_negative_float, positive_int


def grid_feature_mask(height: int, width: int, cell: int, device: torch.device) -> Tensor:
    """(1, 1, H, W) square "superpixels" of ``cell`` pixels numbered row by row from 0; shared by all images.

    >>> grid_feature_mask(2, 3, 2, torch.device("cpu"))[0, 0].tolist()
    [[0, 0, 1], [0, 0, 1]]
    """
    rows = torch.arange(height, device=device) // cell
    cols = torch.arange(width, device=device) // cell
    return (rows[:, None] * math.ceil(width / cell) + cols[None, :]).view(1, 1, height, width)


@dataclass(frozen=True)
class OcclusionOptions(ExplainerOptions):
    """Options of :class:`OcclusionExplainer`.

    Attributes:
        window: side of the square window, in pixels.
        stride: step between windows, in pixels.
        baseline: what the window is filled with: ``mean`` (dataset mean; ``zero``, the default, is
            its older name) or ``black``.
        perturbations_per_eval: occluded copies per forward pass.
    """

    window: int = positive_int(16)
    stride: int = positive_int(8)
    baseline: str = baseline_option()
    perturbations_per_eval: int = positive_int(16)


@register_explainer
class OcclusionExplainer(ReducedExplainer):
    """Occlusion: drop in y_c when a square window (all channels) is set to the baseline; reduction ``sum_abs``.

    Each pixel gets the mean drop over the windows that cover it. Options: :class:`OcclusionOptions`.
    """

    name = "occlusion"
    reduction = "sum_abs"
    Options = OcclusionOptions
    settings: OcclusionOptions

    def setup(self) -> None:
        self._occlusion = Occlusion(self.model.classify)

    def passes(self, image_size: tuple[int, int]) -> PassCount:
        window, stride = self.settings.window, self.settings.stride
        windows = math.prod(math.ceil(max(side - window, 0) / stride) + 1 for side in image_size)
        return PassCount(forward=1 + windows)  # the unoccluded image, then every window position

    def raw_attribution(self, images: Tensor, targets: Tensor) -> Tensor:
        settings = self.settings
        channels, height, width = images.shape[1:]
        if settings.window > min(height, width):
            raise ConfigError(
                f"explainer occlusion: window {settings.window} is larger than the {height}x{width} images."
            )
        return self._occlusion.attribute(
            images,
            sliding_window_shapes=(channels, settings.window, settings.window),
            strides=(channels, settings.stride, settings.stride),
            baselines=baseline_image(settings.baseline, images, normalized=input_normalized(self.model)),
            target=targets,
            perturbations_per_eval=settings.perturbations_per_eval,
        )


@dataclass(frozen=True)
class SuperpixelOptions(ExplainerOptions):
    """Options of the surrogate-model methods; KernelSHAP's as they are, LIME's with :class:`LimeOptions`.

    Attributes:
        cell: side of a square superpixel, in pixels.
        n_samples: perturbed copies (coalitions) per image.
        perturbations_per_eval: perturbed copies per forward pass.
        baseline: what a switched-off superpixel shows: ``mean`` (dataset mean; ``zero``, the
            default, is its older name) or ``black``.
    """

    cell: int = positive_int(16)
    n_samples: int = positive_int(64)
    perturbations_per_eval: int = positive_int(16)
    baseline: str = baseline_option()


@dataclass(frozen=True)
class LimeOptions(SuperpixelOptions):
    """Options of :class:`LimeExplainer`: the superpixel options and the surrogate's penalty.

    Attributes:
        alpha: ridge penalty of the surrogate (the ``lime`` package's default Ridge uses 1).
    """

    alpha: float = non_negative_float(1.0)


class _SuperpixelExplainer(ReducedExplainer):
    """The feature mask and Captum call the surrogate-model methods (LIME, KernelSHAP) share."""

    reduction = "sum_abs"
    stochastic = True
    Options = SuperpixelOptions
    settings: SuperpixelOptions

    def passes(self, image_size: tuple[int, int]) -> PassCount:
        return PassCount(forward=self.settings.n_samples)

    def _attribute_superpixels(self, surrogate: Lime, images: Tensor, targets: Tensor) -> Tensor:
        settings = self.settings
        height, width = images.shape[-2:]
        if math.ceil(height / settings.cell) * math.ceil(width / settings.cell) < 2:
            raise ConfigError(
                f"explainer {self.name}: cell {settings.cell} leaves a single superpixel on {height}x{width} images."
            )
        # Captum fits one surrogate per image (a Python loop over the batch); each pixel of a
        # superpixel gets that superpixel's coefficient.
        return surrogate.attribute(
            images,
            baselines=baseline_image(settings.baseline, images, normalized=input_normalized(self.model)),
            target=targets,
            feature_mask=grid_feature_mask(height, width, settings.cell, images.device),
            n_samples=settings.n_samples,
            perturbations_per_eval=settings.perturbations_per_eval,
        )


@register_explainer
class LimeExplainer(_SuperpixelExplainer):
    """LIME: coefficients of a weighted ridge surrogate on square superpixels; reduction ``sum_abs``.

    Superpixels are switched off to the baseline at random; samples are weighted by Captum's
    exponential cosine-distance kernel. The surrogate is :class:`WeightedLinearRegression` (no
    scikit-learn). Options: :class:`LimeOptions`.
    """

    name = "lime"
    Options = LimeOptions
    settings: LimeOptions

    def setup(self) -> None:
        self._lime = Lime(self.model.classify, interpretable_model=WeightedLinearRegression(alpha=self.settings.alpha))

    def raw_attribution(self, images: Tensor, targets: Tensor) -> Tensor:
        return self._attribute_superpixels(self._lime, images, targets)


@register_explainer
class KernelShapExplainer(_SuperpixelExplainer):
    """KernelSHAP: Shapley values of square superpixels estimated by Shapley-kernel regression; reduction ``sum_abs``.

    Coalitions are drawn from the Shapley kernel (Captum), so the regression is unweighted except
    for the full and empty coalitions; fitted by exact least squares (Captum hard-codes
    scikit-learn's LinearRegression, which we replace by :class:`WeightedLinearRegression`).
    Options: :class:`SuperpixelOptions`.
    """

    name = "kernel_shap"

    def setup(self) -> None:
        self._kernel_shap = KernelShap(self.model.classify)
        self._kernel_shap.interpretable_model = WeightedLinearRegression(alpha=0.0)

    def raw_attribution(self, images: Tensor, targets: Tensor) -> Tensor:
        return self._attribute_superpixels(self._kernel_shap, images, targets)
