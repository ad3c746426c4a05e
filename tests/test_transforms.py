"""Augmentation moves image and mask together; evaluation transforms are deterministic."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from xai_lightning.data.dataset import DefectDataset, load_mask
from xai_lightning.data.transforms import AugmentationConfig, denormalize, eval_transform, train_transform
from xai_lightning.errors import ConfigError


def _red_square(size: int = 120) -> tuple[np.ndarray, np.ndarray]:
    """A red square on grey, off-centre so flips and rotations move it; its mask marks exactly the square."""
    image = np.full((size, size, 3), 90, dtype=np.uint8)
    mask = np.zeros((size, size), dtype=np.uint8)
    image[20:50, 60:100] = (230, 20, 20)
    mask[20:50, 60:100] = 1
    return image, mask


@pytest.mark.parametrize("seed", range(8))
def test_train_transform_keeps_image_and_mask_aligned(seed):
    image, mask = _red_square()
    transform = train_transform(64, AugmentationConfig(hflip=0.5, vflip=0.5, rotate_limit=45, rotate_p=1.0))
    transform.set_random_seed(seed)
    out = transform(image=image, mask=mask)
    rgb = denormalize(out["image"])
    red = (rgb[0] > 0.6) & (rgb[1] < 0.3)
    out_mask = torch.as_tensor(out["mask"]) > 0
    assert set(torch.unique(torch.as_tensor(out["mask"])).tolist()) <= {0, 1}
    iou = (red & out_mask).sum() / (red | out_mask).sum()
    assert iou > 0.85, f"red square and mask drifted apart (IoU {iou:.2f})"


def test_eval_transform_is_deterministic_and_never_flips():
    image, mask = _red_square()
    transform = eval_transform(60)
    first, second = transform(image=image, mask=mask), transform(image=image, mask=mask)
    assert torch.equal(first["image"], second["image"])
    expected = np.asarray(Image.fromarray(mask * 255).resize((60, 60), Image.NEAREST)) > 0
    assert np.array_equal(np.asarray(first["mask"]) > 0, expected)


def test_masks_are_binarised_with_greater_than_zero(tmp_path):
    path = tmp_path / "faint_mask.png"
    values = np.zeros((10, 10), dtype=np.uint8)
    values[2:4, 2:4] = 7  # a mask saved with values below 255 must not vanish
    Image.fromarray(values).save(path)
    mask = load_mask(str(path), (10, 10))
    assert mask.sum() == 4 and set(np.unique(mask)) == {0, 1}
    assert load_mask(None, (3, 5)).shape == (3, 5) and load_mask(float("nan"), (3, 5)).sum() == 0


def test_reseeded_augmentation_follows_torch_seed(smoke_root):
    from xai_lightning.data.mvtec import build_index

    frame = build_index(smoke_root).head(4)
    names = ["crack", "cut", "good", "hole", "print"]
    dataset = DefectDataset(frame, names, train_transform(48, AugmentationConfig(rotate_p=1.0)), reseed=True)
    torch.manual_seed(0)
    first = [dataset[i]["image"] for i in range(4)]
    torch.manual_seed(0)
    again = [dataset[i]["image"] for i in range(4)]
    torch.manual_seed(1)
    other = [dataset[i]["image"] for i in range(4)]
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    assert not all(torch.equal(a, b) for a, b in zip(first, other))


def test_bad_augmentation_option_is_named():
    with pytest.raises(ConfigError, match="data.augmentation.hflip"):
        AugmentationConfig(hflip=1.5)


@pytest.mark.parametrize("size", [224, 128])
def test_a_map_equal_to_the_true_defect_scores_a_near_perfect_tko_after_resizing(size):
    """The mask must stay aligned with its image when a 1024² MVTec pair is shrunk (no half-pixel shift)."""
    import cv2

    from xai_lightning.metrics import top_k_overlap

    yy, xx = np.mgrid[:1024, :1024]
    mask = (((yy - 500) / 90.0) ** 2 + ((xx - 430) / 130.0) ** 2 < 1).astype(np.uint8) * 255  # a hole-like blob
    image = np.repeat(mask[..., None], 3, axis=2)  # the defect as the image sees it
    out = eval_transform(size)(image=image, mask=(mask > 0).astype(np.uint8))
    resized_mask = torch.as_tensor(out["mask"] > 0)[None]
    perfect_map = torch.from_numpy(cv2.resize(mask.astype(np.float32), (size, size), interpolation=cv2.INTER_AREA))
    assert resized_mask.shape[-1] == size
    assert top_k_overlap(perfect_map[None], resized_mask).item() >= 0.99
