"""Reference maps that bracket the attribution methods: the model's own predicted mask, uniform noise, and two
model-free priors (a centred Gaussian and the image's edges) that a method must beat to show it localises anything.

``segmentation_head`` is a supervised upper reference, ``random`` the chance floor of every metric.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from xai_lightning.errors import ConfigError
from xai_lightning.explain.base import PassCount, register_explainer
from xai_lightning.explain.baselines import BLUR, baseline_image
from xai_lightning.explain.captum_support import ReducedExplainer
from xai_lightning.explain.options import ExplainerOptions, non_negative_float, positive_float
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


@dataclass(frozen=True)
class CenterPriorOptions(ExplainerOptions):
    """Options of :class:`CenterPriorExplainer`.

    Attributes:
        sigma: standard deviation of the Gaussian as a fraction of the image side, per axis
            (``sigma · H`` rows, ``sigma · W`` columns), so the prior covers the same share of any image.
    """

    sigma: float = positive_float(0.25)


@register_explainer
class CenterPriorExplainer(ReducedExplainer):
    """A Gaussian centred on the image centre, the same map for every image; reduction ``none``.

    ``exp(-(u² + v²) / (2 sigma²))`` with ``u``, ``v`` a pixel centre's offset from the image centre
    in units of the image height and width; the peak (1 on an odd side) lies on the central pixel(s).
    It ignores the model, the image content and the target class: a method that does not beat it has
    not shown that it localises anything (on VOC07 the centre prior scores 69.6 on the pointing game
    against Grad-CAM's 86.6), and hazelnuts sit in the middle of their images.
    Options: :class:`CenterPriorOptions`.
    """

    name = "center_prior"
    reduction = "none"
    Options = CenterPriorOptions
    settings: CenterPriorOptions

    def passes(self, image_size: tuple[int, int]) -> PassCount:
        return PassCount()

    def raw_attribution(self, images: Tensor, targets: Tensor) -> Tensor:
        batch, _, height, width = images.shape
        rows = _centred_offsets(height, images.device) / height
        columns = _centred_offsets(width, images.device) / width
        # One sum of squares per pixel, not a product of two 1-D Gaussians: pixels at the same distance
        # from the centre get bitwise-equal values, so rank-based metrics see them as exact ties.
        squared = rows[:, None] ** 2 + columns[None, :] ** 2
        prior = torch.exp(-squared / (2 * self.settings.sigma**2))
        # A copy per image, not an expanded view: a caller may edit one image's map in place.
        return prior.repeat(batch, 1, 1)


def _centred_offsets(size: int, device: torch.device) -> Tensor:
    """Pixel-centre coordinates ``0 … size-1`` minus the image centre ``(size-1)/2``, float32."""
    return torch.arange(size, dtype=torch.float32, device=device) - (size - 1) / 2


@dataclass(frozen=True)
class EdgeOptions(ExplainerOptions):
    """Options of :class:`EdgeExplainer`.

    Attributes:
        blur_sigma: standard deviation in pixels of a Gaussian blur applied to the edge magnitude;
            0 (the default) keeps the plain Sobel magnitude.
    """

    blur_sigma: float = non_negative_float(0.0)


#: Sobel kernels (horizontal derivative, then vertical), as one (2, 1, 3, 3) conv2d weight.
SOBEL = torch.tensor(
    [
        [[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]],
        [[-1.0, -2.0, -1.0], [0.0, 0.0, 0.0], [1.0, 2.0, 1.0]],
    ]
).unsqueeze(1)


@register_explainer
class EdgeExplainer(ReducedExplainer):
    """The Sobel gradient magnitude of the image, max over colour channels; reduction ``none``.

    Per channel ``sqrt(G_x² + G_y²)`` with the 3×3 Sobel kernels (replicate padding, so a flat region,
    the image border included, is exactly zero), then the max over channels: an edge in any one colour
    counts, as the gradient methods' ``max_abs`` keeps the most sensitive channel. Optionally blurred
    (``blur_sigma``). It ignores the model and the target class: a method that only traces contours
    (defects are edges on a hazelnut) does no better than this map.

    It is computed on the image as given, normalised or not. Normalisation is a per-channel affine map:
    its shift (the mean) cancels in the Sobel kernels, its scale (1 / std) multiplies that channel's
    magnitude, so the map is invariant to it only up to a scale per channel, which can change which
    channel wins the max.
    Options: :class:`EdgeOptions`.
    """

    name = "edge"
    reduction = "none"
    Options = EdgeOptions
    settings: EdgeOptions

    def passes(self, image_size: tuple[int, int]) -> PassCount:
        return PassCount()

    def raw_attribution(self, images: Tensor, targets: Tensor) -> Tensor:
        magnitude = sobel_magnitude(images).amax(dim=1, keepdim=True)
        sigma = self.settings.blur_sigma
        if sigma > 0:
            magnitude = baseline_image(BLUR, magnitude, blur_sigma=sigma)  # the baselines' blur, any channel count
        return magnitude[:, 0]


def sobel_magnitude(images: Tensor) -> Tensor:
    """(B, C, H, W) per-channel Sobel gradient magnitude ``sqrt(G_x² + G_y²)`` of (B, C, H, W) images.

    >>> step = torch.zeros(1, 1, 5, 5)
    >>> step[..., 2:] = 1.0
    >>> sobel_magnitude(step)[0, 0, 0].tolist()  # a vertical step between columns 1 and 2
    [0.0, 4.0, 4.0, 0.0, 0.0]
    """
    channels = images.shape[1]
    weight = SOBEL.to(device=images.device, dtype=images.dtype).repeat(channels, 1, 1, 1)
    # Replicate padding: zero padding would draw an edge along the border of any non-zero image.
    padded = F.pad(images, (1, 1, 1, 1), mode="replicate")
    gradients = F.conv2d(padded, weight, groups=channels)  # (B, 2C, H, W): G_x, G_y per channel
    return gradients.unflatten(1, (channels, 2)).square().sum(dim=2).sqrt()
