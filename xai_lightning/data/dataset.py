"""A torch Dataset over rows of the sample index: decoded image, binary mask and class label."""

from __future__ import annotations

from typing import TYPE_CHECKING, TypedDict

import albumentations as A
import pandas as pd
import torch
from torch.utils.data import Dataset

# Re-exported: callers import the decoders from here.
from xai_lightning.data.decoding import decode_mask, load_image, load_mask

if TYPE_CHECKING:
    from xai_lightning.data.cache import ResizedImageCache

__all__ = ["DefectDataset", "Sample", "decode_mask", "load_image", "load_mask"]


class Sample(TypedDict):
    """One item; batches are the same keys with a leading batch dimension."""

    image: torch.Tensor  # (3, H, W) float, normalised
    mask: torch.Tensor  # (1, H, W) float in {0, 1}
    label: torch.Tensor  # () long, index into the class names
    index: torch.Tensor  # () long, row of the split table: ties results back to image ids


class DefectDataset(Dataset):
    """Images of one split with their masks and labels, transformed by an albumentations pipeline.

    Args:
        frame: rows of the split table (``image_path``, ``mask_path``, ``label``), index = row id.
        class_names: label order; ``label`` values are mapped to their position here.
        transform: albumentations pipeline taking ``image`` and ``mask``.
        reseed: draw each sample's augmentation seed from torch's RNG. albumentations keeps its own
            generator that global seeding does not reach; torch's RNG is seeded per worker by
            Lightning, so this makes random augmentation reproducible for a given seed.
        cache: where to get images and masks already resized to the transform's ``Resize`` size (which
            then has nothing to do); None decodes the files on every access.
    """

    def __init__(
        self,
        frame: pd.DataFrame,
        class_names: list[str],
        transform: A.Compose,
        reseed: bool = False,
        cache: ResizedImageCache | None = None,
    ):
        self.frame = frame
        self.class_to_idx = {name: i for i, name in enumerate(class_names)}
        self.transform = transform
        self.reseed = reseed
        self.cache = cache
        if cache is not None:
            # Pixels resized to another size would be resized twice: silently different from a fresh decode.
            sizes = {(t.height, t.width) for t in transform.transforms if isinstance(t, A.Resize)}
            if sizes - {(cache.size, cache.size)}:
                raise ValueError(f"The cache holds {cache.size}² images but the transform resizes to {sizes}.")

    def __len__(self) -> int:
        return len(self.frame)

    def __getitem__(self, position: int) -> Sample:
        row = self.frame.iloc[position]
        if self.cache is None:
            image = load_image(row["image_path"])
            mask = load_mask(row["mask_path"], image.shape[:2])
        else:
            image = self.cache.image(row["image_path"])
            mask = self.cache.mask(row["mask_path"])
        if self.reseed:
            self.transform.set_random_seed(int(torch.randint(0, 2**31 - 1, ())))
        out = self.transform(image=image, mask=mask)
        # Nearest resizing keeps {0, 1}; binarise again so any interpolating transform cannot leak 0.5s.
        mask_t = torch.as_tensor(out["mask"] > 0, dtype=torch.float32).unsqueeze(0)
        return Sample(
            image=out["image"],
            mask=mask_t,
            label=torch.tensor(self.class_to_idx[row["label"]], dtype=torch.long),
            index=torch.tensor(int(self.frame.index[position]), dtype=torch.long),
        )
