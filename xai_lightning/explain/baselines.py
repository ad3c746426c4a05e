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
EXPLAINER_BASELINES = ("zero", MEAN, BLACK)

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


def baseline_image(name: str, images: Tensor, blur_sigma: float = DEFAULT_BLUR_SIGMA) -> Tensor:
    """The reference image of each of ``images`` (B, C, H, W), normalised like them.

    ``mean`` (alias ``zero``): zeros, the dataset-mean image. ``black``: a black image pushed through
    the ImageNet normalisation (3-channel images only). ``blur``: a Gaussian-blurred copy of each
    image (sigma ``blur_sigma`` pixels), which removes local structure such as a defect while keeping
    colour and brightness, so a curve does not measure the model's reaction to a flat image.

    >>> images = torch.ones(1, 3, 4, 4)
    >>> bool(baseline_image("zero", images).eq(0).all())
    True
    >>> [round(v, 3) for v in baseline_image("black", images)[0, :, 0, 0].tolist()]
    [-2.118, -2.036, -1.804]
    """
    kind = canonical_baseline(name)
    if kind == MEAN:
        return torch.zeros_like(images)
    if kind == BLACK:
        if images.shape[1] != len(IMAGENET_MEAN):
            raise ValueError(f"A black baseline needs {len(IMAGENET_MEAN)}-channel images, got {images.shape[1]}.")
        mean = torch.tensor(IMAGENET_MEAN, dtype=images.dtype, device=images.device)
        std = torch.tensor(IMAGENET_STD, dtype=images.dtype, device=images.device)
        return ((0.0 - mean) / std).view(1, -1, 1, 1).expand_as(images).contiguous()
    if kind == BLUR:
        # Kernel covering ±3 sigma, truncated so that reflect padding stays below the image size
        # (torch's reflect pad needs pad < size); both bounds are odd, as gaussian_blur requires.
        kernel = min(2 * math.ceil(3 * blur_sigma) + 1, 2 * min(images.shape[-2:]) - 1)
        return gaussian_blur(images, [kernel, kernel], [blur_sigma, blur_sigma])
    raise ValueError(f"Unknown baseline {name!r}; use one of {MEAN!r} (alias 'zero'), {BLACK!r}, {BLUR!r}.")
