"""The known-answer shortcut: a class-specific marker planted on some defect images, away from the defect.

Which images carry one, how it is drawn, and its section of SYNTHETIC.json (written and read back).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from xai_lightning.data.classes import DEFECT_TYPES
from xai_lightning.data.layout import SHORTCUT_MASK_DIR, TEST_DIR, marker_path
from xai_lightning.data.synthetic.config import SyntheticConfig, sample_entropy
from xai_lightning.data.synthetic.defects import blank_canvas
from xai_lightning.errors import DatasetError

#: Shape and RGB colour of the shortcut marker of each defect class. Saturated colours that the brown
#: nut, the dark background and the print defect's inks never show, so the marker is trivially learnable.
SHORTCUT_MARKERS: dict[str, tuple[str, tuple[int, int, int]]] = {
    "crack": ("square", (40, 220, 60)),
    "cut": ("cross", (30, 110, 255)),
    "hole": ("ring", (235, 40, 205)),
    "print": ("triangle", (250, 225, 20)),
}

_MARKER_CANDIDATES = 8


def shortcut_rng(config: SyntheticConfig, split: str, label: str, index: int, stream: int) -> np.random.Generator:
    """RNG of one sample's shortcut: stream 1 picks the marked images, stream 2 places the marker."""
    # Child streams (spawn_key) of the sample's seed: independent of the image's own stream, which
    # therefore draws exactly what it draws with the shortcut off.
    entropy = sample_entropy(config, split, label, index)
    return np.random.default_rng(np.random.SeedSequence(entropy, spawn_key=(stream,)))


def shortcut_marked(config: SyntheticConfig) -> dict[str, frozenset[int]]:
    """Indices of the images of each defect class that carry the shortcut marker.

    Exactly round(fraction * n) per class: the images with the smallest per-image random keys, so a
    class's choice depends on the seed and its own count only.
    """
    marked: dict[str, frozenset[int]] = {}
    if config.shortcut_fraction <= 0:
        return marked
    for defect in DEFECT_TYPES:
        count = config.count(TEST_DIR, defect)
        keys = [shortcut_rng(config, TEST_DIR, defect, index, 1).random() for index in range(count)]
        chosen = sorted(range(count), key=lambda index: (keys[index], index))
        marked[defect] = frozenset(chosen[: math.floor(config.shortcut_fraction * count + 0.5)])
    return marked


def shortcut_section(config: SyntheticConfig) -> dict:
    """The ``shortcut`` section of SYNTHETIC.json for a config with the shortcut on."""
    marked = shortcut_marked(config)
    return {
        "fraction": config.shortcut_fraction,
        "size": config.shortcut_size,
        "side_px": config.shortcut_side,
        "mask_dir": SHORTCUT_MASK_DIR,
        "markers": {label: {"shape": shape, "rgb": list(rgb)} for label, (shape, rgb) in SHORTCUT_MARKERS.items()},
        "marked": {label: len(marked.get(label, ())) for label in DEFECT_TYPES},
    }


def shortcut_settings(root: str | Path) -> dict | None:
    """The shortcut section of ``<root>/SYNTHETIC.json`` (fraction, size, markers, ...); None when off or not synthetic.

    Lets evaluation tell a known-answer data set from a plain one without guessing from file names.
    """
    path = marker_path(root)
    if not path.is_file():
        return None
    try:
        shortcut = json.loads(path.read_text()).get("shortcut")
    except (OSError, ValueError, AttributeError) as error:
        raise DatasetError(f"'{path}' cannot be read ({error}).") from error
    return shortcut if isinstance(shortcut, dict) else None


def shortcut_marker_region(label: str, x0: int, y0: int, side: int, size: int) -> np.ndarray:
    """(size, size) bool: the pixels of ``label``'s shortcut marker with its ``side``-pixel box at (x0, y0)."""
    if label not in SHORTCUT_MARKERS:
        raise ValueError(f"label is {label!r}; shortcut markers exist for {', '.join(SHORTCUT_MARKERS)} only.")
    shape, _ = SHORTCUT_MARKERS[label]
    x1, y1 = x0 + side - 1, y0 + side - 1  # PIL boxes include their far edge
    canvas, draw = blank_canvas(size)
    if shape == "square":
        draw.rectangle([x0, y0, x1, y1], fill=255)
    elif shape == "cross":
        bar = max(1, round(side / 3))
        offset = (side - bar) // 2
        draw.rectangle([x0, y0 + offset, x1, y0 + offset + bar - 1], fill=255)
        draw.rectangle([x0 + offset, y0, x0 + offset + bar - 1, y1], fill=255)
    elif shape == "ring":
        draw.ellipse([x0, y0, x1, y1], outline=255, width=max(1, round(side / 4)))
    else:  # triangle, apex up
        draw.polygon([((x0 + x1) / 2, y0), (x1, y1), (x0, y1)], fill=255)
    return np.asarray(canvas) > 0


def add_shortcut_marker(
    rng: np.random.Generator, image: np.ndarray, defect_mask: np.ndarray, label: str, side: int
) -> tuple[np.ndarray, np.ndarray]:
    """Paint ``label``'s shortcut marker away from the defect; returns (new image, marker mask HxW bool).

    The marker lies wholly inside the image's inscribed circle, so the training augmentation's rotations
    (black fill at the corners) never crop it, and of a few random positions the one farthest from the
    defect is taken, so the marker never touches the defect mask and the two attribution targets stay apart.
    Only the marker's pixels change: the defect and its mask are exactly those of the unmarked sample.
    """
    size = image.shape[0]
    _, colour = SHORTCUT_MARKERS[label]
    reach = size / 2 - side / math.sqrt(2) - 1  # farthest marker centre from the image centre
    if reach <= 0:
        raise ValueError(f"a {side} px marker does not fit in a {size} px image.")
    ys, xs = np.nonzero(defect_mask)
    best: tuple[float, int, int] | None = None
    for _ in range(_MARKER_CANDIDATES):
        angle = rng.uniform(0, 2 * np.pi)
        distance = reach * math.sqrt(rng.uniform())  # uniform over the disc
        x0 = round(size / 2 + distance * math.cos(angle) - side / 2)
        y0 = round(size / 2 + distance * math.sin(angle) - side / 2)
        # Gap between the marker's box and the nearest defect pixel (0 = touching or overlapping).
        dx = np.maximum(np.maximum(x0 - xs, xs - (x0 + side - 1)), 0)
        dy = np.maximum(np.maximum(y0 - ys, ys - (y0 + side - 1)), 0)
        gap = float(np.hypot(dx, dy).min()) if xs.size else float(size)
        if best is None or gap > best[0]:
            best = (gap, x0, y0)
    assert best is not None
    gap, x0, y0 = best
    if gap < 1:
        raise RuntimeError(f"could not place the '{label}' shortcut marker clear of the defect")
    region = shortcut_marker_region(label, x0, y0, side, size)
    marked = image.copy()
    marked[region] = colour
    # As for defects, the mask is the pixels that changed (a pixel already of the marker's colour did not).
    return marked, region & (marked != image).any(axis=-1)
