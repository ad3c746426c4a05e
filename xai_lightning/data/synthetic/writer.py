"""Write a synthetic set in the MVTec AD layout (or the plain one), labelled by SYNTHETIC.json; resume or refuse safely.

Never overwrites a folder that may hold the real data, and never mixes two configurations in one root.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from xai_lightning.data.classes import GOOD
from xai_lightning.data.layout import (
    MARKER_FILE,
    TEST_DIR,
    MVTEC_SUBDIRS,
    image_file,
    marker_path,
    mask_file,
    shortcut_mask_file,
)
from xai_lightning.data.plain import IMAGES_DIR, INDEX_CSV, MASKS_DIR, plain_image_file, plain_mask_file
from xai_lightning.data.synthetic.config import (
    COUNT_KEYS,
    SPLIT_CLASSES,
    SyntheticConfig,
    sample_entropy,
)
from xai_lightning.data.synthetic.defects import render_sample
from xai_lightning.data.synthetic.shortcut import (
    add_shortcut_marker,
    shortcut_marked,
    shortcut_rng,
    shortcut_section,
)
from xai_lightning.errors import DatasetError

# The marker names this package by its historical module path: sets already written carry it.
_GENERATOR = "xai_lightning.data.synthetic"
_VERSION = 1
# Fixed so the bytes never depend on a library default. Level 3 encodes a 1024 px image ~3x faster
# than Pillow's default 6 for files ~2% larger (the shell's grain barely compresses).
_PNG_OPTIONS = {"format": "PNG", "compress_level": 3, "optimize": False}


def generate_synthetic_mvtec(
    out: str | Path, config: SyntheticConfig = SyntheticConfig(), *, progress: bool = False
) -> Path:
    """Write the dataset; return the category folder <out>/<category> (``layout: plain``: ``out`` itself).

    Writes ``<out>/<category>/{train,test}/<class>/NNN.png``, ``ground_truth/<defect>/NNN_mask.png``,
    with the shortcut on ``shortcut_mask/<defect>/NNN_mask.png`` for the marked images, and the
    ``<out>/SYNTHETIC.json`` marker. With ``config.layout == "plain"`` the same pixels go to
    ``<out>/images/<class>/NNN.png`` and ``<out>/masks/<defect>/NNN.png`` (MVTec's ``train/good`` as
    ``images/good/train_NNN.png``). Does nothing when the same set is already complete;
    finishes an interrupted run; raises :class:`DatasetError` when ``out`` holds a synthetic set of
    another configuration, or MVTec-like folders without the marker (possibly the real data).
    """
    out = Path(out)
    category_dir = _dataset_dir(out, config)
    if check_target(out, config):
        return category_dir
    out.mkdir(parents=True, exist_ok=True)
    # The marker goes first so that an interrupted run is recognised as ours and resumed.
    marker_path(out).write_text(json.dumps(_marker(config), indent=2) + "\n")
    planned = list(_planned(config))
    marked = shortcut_marked(config)
    bar = tqdm(planned, desc=f"synthetic {config.category}", unit="image", disable=not progress, file=sys.stderr)
    for split, label, index in bar:
        image_path, mask_path = (category_dir / name for name in _sample_files(config, split, label, index))
        has_marker = index in marked.get(label, ())
        marker_mask_path = category_dir / shortcut_mask_file(label, _stem(index))
        if (
            image_path.is_file()
            and (label == GOOD or mask_path.is_file())
            and (not has_marker or marker_mask_path.is_file())
        ):
            continue
        defect = None if label == GOOD else label
        image, mask = render_sample(_sample_rng(config, split, label, index), config.size, defect)
        if has_marker:
            image, marker_mask = add_shortcut_marker(
                shortcut_rng(config, split, label, index, 2), image, mask, label, config.shortcut_side
            )
            _save_png(marker_mask.astype(np.uint8) * 255, marker_mask_path)
        if defect is not None:
            # Masks before image: a present image then always implies its masks are present.
            _save_png(mask.astype(np.uint8) * 255, mask_path)
        _save_png(image, image_path)
    return category_dir


def check_target(out: Path, config: SyntheticConfig) -> bool:
    """True when ``out`` already holds this exact synthetic set; raise when writing there is unsafe."""
    path = marker_path(out)
    if path.is_file():
        try:
            existing = json.loads(path.read_text())
        except (OSError, ValueError) as error:
            raise DatasetError(f"'{path}' cannot be read ({error}); delete '{out}' or choose another --out.") from error
        if existing != _marker(config):
            raise DatasetError(
                f"'{out}' already holds a synthetic set made with a different configuration "
                f"({_describe(existing)}; asked for {_describe(_marker(config))}). "
                f"Delete '{out}' or choose another --out."
            )
        category_dir = _dataset_dir(out, config)
        return all((category_dir / name).is_file() for name in _expected_files(config))
    if out.exists() and not out.is_dir():
        raise DatasetError(f"'{out}' is a file; choose a folder for --out.")
    if out.is_dir():
        looks_like_mvtec = [
            p.name for p in sorted(out.iterdir()) if p.is_dir() and any((p / s).is_dir() for s in MVTEC_SUBDIRS)
        ]
        if any((out / s).is_dir() for s in MVTEC_SUBDIRS):
            looks_like_mvtec.append(".")
        if (out / config.category).exists() and config.category not in looks_like_mvtec:
            looks_like_mvtec.append(config.category)
        if config.layout == "plain":
            looks_like_mvtec += [name for name in (IMAGES_DIR, MASKS_DIR, INDEX_CSV) if (out / name).exists()]
        if looks_like_mvtec:
            raise DatasetError(
                f"'{out}' holds MVTec-AD-like folders ({', '.join(looks_like_mvtec)}) but no {MARKER_FILE} "
                "marker: it may be the real MVTec AD data, which the synthetic generator never overwrites. "
                "Choose another --out."
            )
    return False


def _marker(config: SyntheticConfig) -> dict:
    marker = {
        "generator": _GENERATOR,
        "version": _VERSION,
        "category": config.category,
        "size": config.size,
        "seed": config.seed,
        "counts": {key: int(config.counts.get(key, 0)) for key in COUNT_KEYS},
    }
    # Only when plain: sets in the MVTec layout keep their SYNTHETIC.json byte for byte.
    if config.layout != "mvtec":
        marker["layout"] = config.layout
    # Only when on: sets written without the shortcut keep their SYNTHETIC.json byte for byte.
    if config.shortcut_fraction > 0:
        marker["shortcut"] = shortcut_section(config)
    return marker


def _describe(marker: dict) -> str:
    counts = marker.get("counts", {})
    total = sum(counts.values()) if isinstance(counts, dict) else "?"
    shortcut = marker.get("shortcut")
    fraction = shortcut.get("fraction") if isinstance(shortcut, dict) else 0.0
    return (
        f"category={marker.get('category')!r}, size={marker.get('size')}, seed={marker.get('seed')}, {total} images, "
        f"shortcut_fraction={fraction}, layout={marker.get('layout', 'mvtec')}"
    )


def _planned(config: SyntheticConfig) -> Iterator[tuple[str, str, int]]:
    """(split, class, index) of every image, in a fixed order."""
    for split, label in SPLIT_CLASSES:
        for index in range(config.count(split, label)):
            yield split, label, index


def _stem(index: int) -> str:
    # MVTec's own file names: 000.png, 001.png, ...
    return f"{index:03d}"


def _dataset_dir(out: Path, config: SyntheticConfig) -> Path:
    """The folder the layout's relative paths start from: the category folder (MVTec), or ``out`` (plain)."""
    return out if config.layout == "plain" else out / config.category


def _sample_files(config: SyntheticConfig, split: str, label: str, index: int) -> tuple[str, str]:
    """(image, mask) paths of one sample relative to :func:`_dataset_dir`; the mask is written for defects only."""
    if config.layout == "plain":
        # One images/good/ folder holds MVTec's train/good and test/good: the prefix keeps their names apart.
        stem = f"{split}_{_stem(index)}" if split != TEST_DIR else _stem(index)
        return plain_image_file(label, stem), plain_mask_file(label, stem)
    return image_file(split, label, _stem(index)), mask_file(label, _stem(index))


def _expected_files(config: SyntheticConfig) -> list[str]:
    files = []
    marked = shortcut_marked(config)
    for split, label, index in _planned(config):
        image, mask = _sample_files(config, split, label, index)
        files.append(image)
        if label != GOOD:
            files.append(mask)
        if index in marked.get(label, ()):
            files.append(shortcut_mask_file(label, _stem(index)))
    return files


def _sample_rng(config: SyntheticConfig, split: str, label: str, index: int) -> np.random.Generator:
    return np.random.default_rng(sample_entropy(config, split, label, index))


def _save_png(array: np.ndarray, path: Path) -> None:
    """Write atomically: an interrupted run never leaves a truncated PNG under its final name."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    Image.fromarray(array).save(temporary, **_PNG_OPTIONS)
    os.replace(temporary, path)
