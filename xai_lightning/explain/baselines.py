"""The reference images that attributions and faithfulness curves compare an image against, each named once.

``mean`` is the dataset-mean image (0 after normalisation), ``black`` a black image, ``blur`` a blurred copy.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor
from torchvision.transforms.functional import gaussian_blur

from xai_lightning.data.transforms import IMAGENET_MEAN, IMAGENET_STD

MEAN = "mean"
BLACK = "black"
BLUR = "blur"

#: Older names still accepted, and the baseline each one names. The explainers called the
#: dataset-mean image ``zero`` (it is all zeros once normalised); configs and run records say so.
ALIASES: dict[str, str] = {"zero": MEAN}

#: What an explainer's ``baseline`` option accepts. Its default stays ``zero`` and a given name is
#: recorded as given, so the run record (``explainers.json``) of an existing config is unchanged.
EXPLAINER_BASELINES = ("zero", MEAN, BLACK, BLUR)

#: The baselines a deletion / insertion curve replaces pixels with.
CURVE_BASELINES = (BLUR, MEAN)

#: Default sigma of the ``blur`` baseline, in pixels: strong enough to wipe out defect-sized structure.
DEFAULT_BLUR_SIGMA = 5.0


def canonical_baseline(name: str) -> str:
    """The one name of a baseline, aliases resolved.

    >>> canonical_baseline("zero"), canonical_baseline("black")
    ('mean', 'black')
    """
    return ALIASES.get(name, name)


def baseline_image(
    name: str, images: Tensor, blur_sigma: float = DEFAULT_BLUR_SIGMA, normalized: bool = True
) -> Tensor:
    """The reference image of each of ``images`` (B, C, H, W), in the same value space as them.

    ``mean`` (alias ``zero``): the ImageNet-mean image, i.e. zeros once normalised. ``black``: a black
    image (zeros in [0, 1] values; pushed through the ImageNet normalisation when ``normalized``; 3-channel
    images only). ``blur``: a Gaussian-blurred copy of each image (sigma ``blur_sigma`` pixels), which removes
    local structure such as a defect while keeping colour and brightness, so a curve does not measure the
    model's reaction to a flat image. ``normalized=False``: the images are [0, 1] values (``data.normalize:
    false``), so ``black`` is zeros, what the poster's "zero baseline" is, and ``mean`` is the mean colour.

    >>> images = torch.ones(1, 3, 4, 4)
    >>> bool(baseline_image("zero", images).eq(0).all())
    True
    >>> [round(v, 3) for v in baseline_image("black", images)[0, :, 0, 0].tolist()]
    [-2.118, -2.036, -1.804]
    >>> [round(v, 3) for v in baseline_image("black", images, normalized=False)[0, :, 0, 0].tolist()]
    [0.0, 0.0, 0.0]
    """
    kind = canonical_baseline(name)
    if kind in (MEAN, BLACK):
        if normalized and kind == MEAN:
            return torch.zeros_like(images)
        if images.shape[1] != len(IMAGENET_MEAN):
            raise ValueError(f"A {kind} baseline needs {len(IMAGENET_MEAN)}-channel images, got {images.shape[1]}.")
        mean = torch.tensor(IMAGENET_MEAN, dtype=images.dtype, device=images.device)
        std = torch.tensor(IMAGENET_STD, dtype=images.dtype, device=images.device)
        value = (0.0 - mean) / std if normalized else (torch.zeros_like(mean) if kind == BLACK else mean)
        return value.view(1, -1, 1, 1).expand_as(images).contiguous()
    if kind == BLUR:
        # Kernel covering ±3 sigma, truncated so that reflect padding stays below the image size
        # (torch's reflect pad needs pad < size); both bounds are odd, as gaussian_blur requires.
        kernel = min(2 * math.ceil(3 * blur_sigma) + 1, 2 * min(images.shape[-2:]) - 1)
        return gaussian_blur(images, [kernel, kernel], [blur_sigma, blur_sigma])
    raise ValueError(f"Unknown baseline {name!r}; use one of {MEAN!r} (alias 'zero'), {BLACK!r}, {BLUR!r}.")
