"""Path methods: Integrated Gradients and GradientSHAP, which integrate gradients between a baseline and x.

The batched quadrature lives in :mod:`xai_lightning.explain.integrated_gradients`; these are the registered explainers.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from captum.attr import GradientShap
from captum.attr._utils.approximation_methods import SUPPORTED_METHODS as IG_METHODS
from torch import Tensor

from xai_lightning.errors import ConfigError
from xai_lightning.explain.base import PassCount, register_explainer
from xai_lightning.data.transforms import input_normalized
from xai_lightning.explain.baselines import BLACK, MEAN, baseline_image
from xai_lightning.explain.captum_support import ReducedExplainer, numpy_rng_seeded
from xai_lightning.explain.integrated_gradients import (
    adaptive_integrated_gradients,
    default_internal_batch,
    integrated_gradients,
)
from xai_lightning.explain.options import ExplainerOptions, baseline_option, non_negative_float, one_of, positive_int

#: GradientSHAP's baseline distribution: the dataset-mean image and the black image.
SHAP_BASELINES = (MEAN, BLACK)


@dataclass(frozen=True)
class IntegratedGradientsOptions(ExplainerOptions):
    """Options of :class:`IntegratedGradientsExplainer`.

    Attributes:
        n_steps: points of the path integral (the most per image when ``completeness_tolerance`` is set).
        baseline: the reference x': ``mean`` (the dataset mean; ``zero``, the default, is its older
            name) or ``black``.
        internal_batch_size: path points per forward/backward pass; ``None`` takes the measured
            default for the device (16 on a CPU, 128 on a GPU).
        method: Captum's quadrature rule (``gausslegendre`` or a ``riemann_*`` rule).
        completeness_tolerance: if set, choose the steps per image: start at ``min_steps`` and double
            while ``|Σ a − (y_c(x) − y_c(x'))|`` (logit units) is above it, up to ``n_steps``.
        min_steps: first refinement level of the adaptive mode.

    >>> IntegratedGradientsOptions(n_steps=16, completeness_tolerance=0.01, min_steps=32)
    Traceback (most recent call last):
    ...
    xai_lightning.errors.ConfigError: min_steps (32) is above n_steps (16), the most steps the adaptive \
mode may use; lower min_steps or raise n_steps.
    """

    n_steps: int = positive_int(32)
    baseline: str = baseline_option()
    internal_batch_size: int | None = positive_int(None, optional=True)
    method: str = one_of("gausslegendre", IG_METHODS)
    completeness_tolerance: float | None = non_negative_float(None, optional=True)
    min_steps: int = positive_int(8)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.completeness_tolerance is not None and self.min_steps > self.n_steps:
            raise ConfigError(
                f"min_steps ({self.min_steps}) is above n_steps ({self.n_steps}), the most steps the adaptive "
                "mode may use; lower min_steps or raise n_steps."
            )


@register_explainer
class IntegratedGradientsExplainer(ReducedExplainer):
    """Integrated Gradients: (x − x') · ∫₀¹ ∂y_c/∂x(x' + t(x − x')) dt; reduction ``sum_abs``.

    Computed by :func:`~xai_lightning.explain.integrated_gradients.integrated_gradients`: Captum's
    quadrature, batched over (image, step) pairs so peak memory is set by ``internal_batch_size``
    alone (equal to Captum's ``IntegratedGradients`` to float tolerance; tested).
    Options: :class:`IntegratedGradientsOptions`.
    """

    name = "integrated_gradients"
    reduction = "sum_abs"
    Options = IntegratedGradientsOptions
    settings: IntegratedGradientsOptions

    def setup(self) -> None:
        #: Steps used per image by the last call (the adaptive mode's choice; n_steps otherwise).
        self.last_steps: Tensor | None = None

    def passes(self, image_size: tuple[int, int]) -> PassCount:
        settings = self.settings
        if settings.completeness_tolerance is None:
            return PassCount(forward_backward=settings.n_steps)
        # Adaptive: at least the first level, and the two forward passes that give f(x) − f(x').
        return PassCount(forward_backward=min(settings.min_steps, settings.n_steps), forward=2)

    def raw_attribution(self, images: Tensor, targets: Tensor) -> Tensor:
        """Signed (B, C, H, W) attributions; they sum to about y_c(x) − y_c(x') (completeness)."""
        settings = self.settings
        chunk = settings.internal_batch_size or default_internal_batch(images.device)
        baselines = baseline_image(settings.baseline, images, normalized=input_normalized(self.model))
        classify = self.model.classify
        if settings.completeness_tolerance is None:
            self.last_steps = torch.full((len(images),), settings.n_steps, dtype=torch.long)
            return integrated_gradients(classify, images, baselines, targets, settings.n_steps, settings.method, chunk)
        attributions, steps, _ = adaptive_integrated_gradients(
            classify,
            images,
            baselines,
            targets,
            settings.completeness_tolerance,
            settings.min_steps,
            settings.n_steps,
            settings.method,
            chunk,
        )
        self.last_steps = steps.cpu()
        return attributions


@dataclass(frozen=True)
class GradientShapOptions(ExplainerOptions):
    """Options of :class:`GradientShapExplainer`.

    Attributes:
        n_samples: random (baseline, path point, noise) draws per image.
        stdevs: standard deviation of the Gaussian noise added to x, in normalised-input units.
    """

    n_samples: int = positive_int(16)
    stdevs: float = non_negative_float(0.1)


@register_explainer
class GradientShapExplainer(ReducedExplainer):
    """GradientSHAP: expected gradient × (x − x') over baselines x' and noisy x; reduction ``sum_abs``.

    The baseline distribution holds two images (:data:`SHAP_BASELINES`): the dataset mean and black.
    Options: :class:`GradientShapOptions`.
    """

    name = "gradient_shap"
    reduction = "sum_abs"
    stochastic = True
    Options = GradientShapOptions
    settings: GradientShapOptions

    def setup(self) -> None:
        self._gradient_shap = GradientShap(self.model.classify)

    def passes(self, image_size: tuple[int, int]) -> PassCount:
        return PassCount(forward_backward=self.settings.n_samples)

    def raw_attribution(self, images: Tensor, targets: Tensor) -> Tensor:
        first = images[:1]
        baselines = torch.cat([baseline_image(kind, first, normalized=input_normalized(self.model)) for kind in SHAP_BASELINES])
        # Drawn from torch's RNG, which the base class seeds per image: NumPy then follows the same key.
        with numpy_rng_seeded(int(torch.randint(0, 2**31 - 1, ()))):
            return self._gradient_shap.attribute(
                images,
                baselines=baselines,
                n_samples=self.settings.n_samples,
                stdevs=self.settings.stdevs,
                target=targets,
            )
