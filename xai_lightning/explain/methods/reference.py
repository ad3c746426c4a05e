"""Reference maps that bracket the attribution methods: the model's own predicted mask and uniform noise.

``segmentation_head`` is a supervised upper reference, ``random`` the chance floor of every metric.
"""

from __future__ import annotations

import torch
from torch import Tensor

from xai_lightning.errors import ConfigError
from xai_lightning.explain.base import PassCount, register_explainer
from xai_lightning.explain.captum_support import ReducedExplainer
from xai_lightning.explain.shared import GradientPass, GradientRequest


@register_explainer
class SegmentationHeadExplainer(ReducedExplainer):
    """The model's own defect mask, ``sigmoid(mask_logits)``: a supervised upper reference; reduction ``none``.

    It ignores the target class: the segmentation head predicts "defect" for any class.
    """

    name = "segmentation_head"
    reduction = "none"

    def passes(self, image_size: tuple[int, int]) -> PassCount:
        return PassCount(forward=1)

    def raw_attribution(self, images: Tensor, targets: Tensor) -> Tensor:
        with torch.no_grad():
            output = self.model(images)
        if not hasattr(output, "mask_logits"):
            raise ConfigError(
                f"explainer {self.name}: the model's output ({type(output).__name__}) has no `mask_logits`; "
                "this reference needs a model with a segmentation head."
            )
        return torch.sigmoid(output.mask_logits)[:, 0]

    def gradient_request(self) -> GradientRequest:
        return GradientRequest(mask_logits=True)

    def raw_from_gradients(self, gradients: GradientPass) -> Tensor:
        return torch.sigmoid(gradients.mask_logits)[:, 0]


@register_explainer
class RandomExplainer(ReducedExplainer):
    """Uniform random values in [0, 1), seeded: the chance floor of every metric; reduction ``none``."""

    name = "random"
    reduction = "none"
    stochastic = True

    def passes(self, image_size: tuple[int, int]) -> PassCount:
        return PassCount()

    def raw_attribution(self, images: Tensor, targets: Tensor) -> Tensor:
        batch, _, height, width = images.shape
        return torch.rand(batch, height, width, device=images.device)
