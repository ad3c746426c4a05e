"""albumentations pipelines: random augmentation for training, deterministic resizing for evaluation.

Image and mask go through the same geometric transform, so a defect's pixels stay under its mask.
"""

from __future__ import annotations

from dataclasses import dataclass

import xai_lightning  # noqa: F401  (sets NO_ALBUMENTATIONS_UPDATE before albumentations is imported)

import albumentations as A
import cv2
from albumentations.pytorch import ToTensorV2

from xai_lightning.errors import ConfigError

#: ImageNet statistics: torchvision's pretrained weights expect inputs normalised with these.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

#: Resizing of the first pipeline step; :mod:`xai_lightning.data.cache` resizes the same way, so cached
#: images pass that step unchanged. Area averaging keeps fine defects (thin cracks) when shrinking 1024 px
#: images; nearest keeps masks binary. Masks take the pixel-centred nearest rule: cv2's plain INTER_NEAREST
#: samples the top-left of each source block, which shifts a 1024 px mask about half a pixel down-right of
#: its area-resized image at 224 px (a map equal to the true defect then scores TKO 0.95 instead of 0.99).
IMAGE_INTERPOLATION = cv2.INTER_AREA
MASK_INTERPOLATION = cv2.INTER_NEAREST_EXACT


@dataclass(frozen=True)
class AugmentationConfig:
    """Training augmentation; probabilities in [0, 1], 0 switches a transform off.

    Attributes:
        hflip: probability of a horizontal flip.
        vflip: probability of a vertical flip.
        rotate_limit: rotations are drawn uniformly from [-limit, limit] degrees.
        rotate_p: probability of a rotation.
        color_jitter: strength of brightness / contrast / saturation jitter (0.1 = ±10 %).
        color_jitter_p: probability of colour jitter.
    """

    hflip: float = 0.5
    vflip: float = 0.5
    rotate_limit: float = 30.0
    rotate_p: float = 0.5
    color_jitter: float = 0.1
    color_jitter_p: float = 0.5

    def __post_init__(self) -> None:
        for name in ("hflip", "vflip", "rotate_p", "color_jitter_p"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"`data.augmentation.{name}` is {getattr(self, name)}; a probability lies in [0, 1].")
        if self.rotate_limit < 0 or self.color_jitter < 0:
            raise ConfigError("`data.augmentation.rotate_limit` and `color_jitter` must be >= 0.")


def _resize(image_size: int, resize_size: int | None = None) -> list:
    """Resize to ``image_size``; or, with ``resize_size``, resize to it and centre-crop ``image_size`` (as torchvision's
    ImageNet evaluation does: 256 then 224)."""
    size = resize_size or image_size
    steps = [A.Resize(size, size, interpolation=IMAGE_INTERPOLATION, mask_interpolation=MASK_INTERPOLATION)]
    if resize_size is not None and resize_size != image_size:
        if resize_size < image_size:
            raise ConfigError(f"`data.resize_size` ({resize_size}) must be at least `data.image_size` ({image_size}).")
        steps.append(A.CenterCrop(image_size, image_size))
    return steps


def _finish(normalize: bool) -> list:
    """Normalise with the ImageNet statistics (or keep [0, 1] values: ``normalize: false``), then to a tensor."""
    return [A.Normalize(IMAGENET_MEAN, IMAGENET_STD) if normalize else A.ToFloat(max_value=255), ToTensorV2()]


def train_transform(
    image_size: int,
    augmentation: AugmentationConfig = AugmentationConfig(),
    resize_size: int | None = None,
    normalize: bool = True,
) -> A.Compose:
    """Resize (and centre-crop), then flips / rotation / colour jitter on image and mask together, then normalise."""
    aug = augmentation
    steps = _resize(image_size, resize_size)
    if aug.hflip:
        steps.append(A.HorizontalFlip(p=aug.hflip))
    if aug.vflip:
        steps.append(A.VerticalFlip(p=aug.vflip))
    if aug.rotate_limit and aug.rotate_p:
        # Constant black fill: MVTec backgrounds are dark, and 0 keeps the mask honest at the border.
        steps.append(
            A.Rotate(
                limit=aug.rotate_limit,
                interpolation=cv2.INTER_LINEAR,
                mask_interpolation=cv2.INTER_NEAREST,
                border_mode=cv2.BORDER_CONSTANT,
                fill=0,
                fill_mask=0,
                p=aug.rotate_p,
            )
        )
    if aug.color_jitter and aug.color_jitter_p:
        strength = aug.color_jitter
        steps.append(
            A.ColorJitter(brightness=strength, contrast=strength, saturation=strength, hue=0.0, p=aug.color_jitter_p)
        )
    return A.Compose([*steps, *_finish(normalize)])


def eval_transform(image_size: int, resize_size: int | None = None, normalize: bool = True) -> A.Compose:
    """Deterministic: resize (nearest for the mask), centre-crop with ``resize_size``, normalise. No random flips."""
    return A.Compose([*_resize(image_size, resize_size), *_finish(normalize)])


def denormalize(images, mean=IMAGENET_MEAN, std=IMAGENET_STD, normalized: bool = True):
    """Undo :func:`A.Normalize` on a (B, 3, H, W) or (3, H, W) tensor, for display; values in [0, 1].

    ``normalized=False``: the images were never normalised (``data.normalize: false``) and are only clamped.
    """
    if not normalized:
        return images.clamp(0, 1)
    mean_t = images.new_tensor(mean).view(-1, 1, 1)
    std_t = images.new_tensor(std).view(-1, 1, 1)
    return (images * std_t + mean_t).clamp(0, 1)


def input_normalized(model) -> bool:
    """Whether ``model`` takes ImageNet-normalised inputs (its ``normalize_input`` hyperparameter; default yes)."""
    hparams = getattr(model, "hparams", None) or {}
    return bool(hparams.get("normalize_input", True))
