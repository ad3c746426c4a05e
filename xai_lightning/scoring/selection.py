"""Which images an attribution pass explains: a fixed, seeded sample per class, the same in training and evaluation.

The sample depends only on the split's table, the cap and the seed, so the callback, ``evaluate.py``
and its checks explain the same images of a run.
"""

from __future__ import annotations

import zlib

import numpy as np
import pandas as pd

from xai_lightning.data.mvtec import has_mask


def select_images(
    frame: pd.DataFrame, max_images_per_class: int | None, include_good: bool = False, seed: int = 0
) -> list[int]:
    """Positions (in ``frame``'s row order) of a fixed, seeded image set: at most M per class.

    Images with an empty mask are left out unless ``include_good``. Each class is sampled with a
    generator keyed by (seed, class name), so the sample does not move when other classes come or go.

    >>> frame = pd.DataFrame({"image_id": list("abcdef"), "label": ["crack"] * 3 + ["good"] * 3,
    ...                       "mask_path": ["m"] * 3 + [None] * 3})
    >>> select_images(frame, None)
    [0, 1, 2]
    >>> len(select_images(frame, 2, include_good=True))
    4
    """
    frame = frame.reset_index(drop=True)
    keep = frame["mask_path"].map(has_mask) | include_good
    chosen: list[int] = []
    for label, rows in sorted(frame[keep].groupby("label"), key=lambda item: item[0]):
        positions = rows.sort_values("image_id").index.to_numpy()
        if max_images_per_class is not None and len(positions) > max_images_per_class:
            rng = np.random.default_rng([seed, zlib.crc32(label.encode())])
            positions = np.sort(rng.choice(positions, max_images_per_class, replace=False))
        chosen += positions.tolist()
    return sorted(chosen)


def count_empty_masks(frame: pd.DataFrame) -> int:
    """Images of the split without a defect mask (``good``): what a pass skips unless it includes them."""
    return int((~frame["mask_path"].map(has_mask)).sum())
