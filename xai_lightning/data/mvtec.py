"""Read an MVTec AD category from disk into a checked index of samples.

The index is a pandas DataFrame (one row per image) that every later stage works from;
building it verifies the folder layout, the image/mask pairing and the files themselves.
"""

from __future__ import annotations

import os
import warnings
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd
from PIL import Image, UnidentifiedImageError

# GOOD and has_mask are re-exported: callers import them from here.
from xai_lightning.data.classes import GOOD, label_order
from xai_lightning.data.layout import MVTEC_SPLITS, TEST_DIR, TRAIN_DIR, has_mask, mask_file
from xai_lightning.errors import DatasetError

MVTEC_URL = "https://www.mvtec.com/company/research/datasets/mvtec-ad"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")

#: Columns of the sample index, in order.
INDEX_COLUMNS = ["image_id", "image_path", "mask_path", "label", "mvtec_split", "category"]


def list_categories(root: str | Path) -> list[str]:
    """Names of the category folders (those holding ``train/`` and ``test/``) under ``root``."""
    root = Path(root)
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if all((p / split).is_dir() for split in MVTEC_SPLITS))


def list_classes(root: str | Path, category: str) -> list[str]:
    """Class names of a category: the folders under ``test/`` (``good`` plus the defect types), sorted."""
    category_dir = _category_dir(Path(root), category)
    return label_order(p.name for p in class_folders(category_dir / TEST_DIR))


def class_folders(split_dir: Path) -> list[Path]:
    """The class folders of ``train/`` or ``test/``: sub-folders holding images, sorted by name.

    What an unpacked archive or a file browser leaves there is not a class: hidden folders (``.ipynb_checkpoints``)
    and ``__MACOSX`` are skipped, and so, with a warning, is a folder without images (``notes/``), which would
    otherwise become a class with no image. A class folder that cannot be read (a broken link, no permission)
    is an error: skipping it would silently drop its class.
    """
    folders = []
    for entry in sorted(split_dir.iterdir()):
        if entry.name.startswith(".") or entry.name == "__MACOSX":
            continue
        if entry.is_symlink() and not entry.exists():
            raise DatasetError(
                f"Class folder '{entry}' is a link to '{os.readlink(entry)}', which does not exist. Restore the "
                "folder it points to, or remove the link."
            )
        if not entry.is_dir():
            continue
        try:
            images = image_files(entry)
        except OSError as error:
            raise DatasetError(
                f"Class folder '{entry}' cannot be read ({type(error).__name__}: {error}). Fix its permissions, or "
                "move it out of the dataset."
            ) from error
        if not images:
            warnings.warn(f"'{entry}' holds no images; it is not a class and is ignored.", stacklevel=2)
            continue
        folders.append(entry)
    return folders


def build_index(root: str | Path, category: str = "hazelnut", *, verify_images: bool = True) -> pd.DataFrame:
    """Index every image of ``<root>/<category>`` and check it can be trained on.

    Pairs each defect image ``test/<class>/<stem>.png`` with ``ground_truth/<class>/<stem>_mask.png``
    (the MVTec convention); ``good`` images get no mask path (an all-zero mask is used).
    Raises :class:`DatasetError` naming the file when a defect image has no mask, a mask's size
    differs from its image's, or (with ``verify_images``) a file cannot be decoded.

    >>> index = build_index("data/synthetic", "hazelnut")  # doctest: +SKIP
    >>> index.groupby(["mvtec_split", "label"]).size()  # doctest: +SKIP
    """
    root = Path(root)
    category_dir = _category_dir(root, category)
    rows: list[dict] = []
    for mvtec_split in MVTEC_SPLITS:
        for class_dir in class_folders(category_dir / mvtec_split):
            for image_path in image_files(class_dir):
                label = class_dir.name
                mask_path = None if label == GOOD else _mask_for(category_dir, label, image_path)
                rows.append(
                    {
                        "image_id": f"{mvtec_split}/{label}/{image_path.stem}",
                        "image_path": str(image_path),
                        "mask_path": None if mask_path is None else str(mask_path),
                        "label": label,
                        "mvtec_split": mvtec_split,
                        "category": category,
                    }
                )
    index = pd.DataFrame(rows, columns=INDEX_COLUMNS)
    if index.empty:
        raise DatasetError(
            f"No images found under '{category_dir}'. Expected PNG files in train/good/ and test/<class>/."
        )
    if not (index["mvtec_split"] == TEST_DIR).any() or not (index["label"] != GOOD).any():
        raise DatasetError(
            f"'{category_dir / TEST_DIR}' holds no defect images; the classification task needs test/<defect>/ "
            "folders with their masks in ground_truth/<defect>/."
        )
    if verify_images:
        check_files(index)
    return index


def check_files(index: pd.DataFrame) -> None:
    """Decode every image and mask once, and check that each mask has its image's size.

    A full decode, not PIL's ``verify()``: a truncated JPEG, or a PNG whose chunks and checksums are intact
    but whose compressed data is not, passes ``verify()`` and would fail only when training or testing
    reaches it. Decoding runs on a thread per core (PIL releases the GIL while it decodes).
    """
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        images = pool.map(_decoded_size, map(Path, index["image_path"]))
        masks = pool.map(lambda p: _decoded_size(Path(p)) if has_mask(p) else None, index["mask_path"])
        for row, image_size, mask_size in zip(index.itertuples(index=False), images, masks):
            if mask_size is not None and mask_size != image_size:
                raise DatasetError(
                    f"Mask '{row.mask_path}' is {mask_size[0]}x{mask_size[1]} but its image '{row.image_path}' is "
                    f"{image_size[0]}x{image_size[1]}. A mask must have its image's size: re-export the mask, "
                    "or remove the pair from the dataset."
                )


def _category_dir(root: Path, category: str) -> Path:
    if not root.exists():
        raise DatasetError(
            f"Dataset root '{root}' does not exist. Download MVTec AD ({MVTEC_URL}) and extract it so that "
            f"'{root / category / TRAIN_DIR / GOOD}' exists, or set `data.source: synthetic` to generate a "
            "synthetic stand-in there."
        )
    if not root.is_dir() or not any(root.iterdir()):
        raise DatasetError(
            f"Dataset root '{root}' is empty. Extract MVTec AD there (so that '{root / category}' exists), "
            "or set `data.source: synthetic`."
        )
    category_dir = root / category
    if not category_dir.is_dir():
        found = list_categories(root)
        hint = f"Categories found there: {', '.join(found)}." if found else "No MVTec category folder was found there."
        raise DatasetError(
            f"Category '{category}' not found under '{root}'. {hint} Set `data.category` to one of them or "
            f"point `data.root` at the folder that holds '{category}/'."
        )
    for sub in MVTEC_SPLITS:
        if not (category_dir / sub).is_dir():
            raise DatasetError(
                f"'{category_dir / sub}' is missing: an MVTec AD category holds train/good/, test/<class>/ and "
                "ground_truth/<defect>/. Re-extract the dataset."
            )
    return category_dir


def image_files(folder: Path) -> list[Path]:
    """The image files of ``folder`` (by suffix, hidden files left out), sorted."""
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith("."))


def _mask_for(category_dir: Path, label: str, image_path: Path) -> Path:
    mask_path = category_dir / mask_file(label, image_path.stem)
    if not mask_path.is_file():
        raise DatasetError(
            f"Defect image '{image_path}' has no mask: expected '{mask_path}'. Every image in test/<defect>/ needs "
            f"{mask_file('<defect>', '<stem>')}; restore the mask or remove the image."
        )
    return mask_path


def _decoded_size(path: Path) -> tuple[int, int]:
    """(width, height) of an image file, after decoding all of its pixels."""
    try:
        with Image.open(path) as image:
            image.load()
            return image.size
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, zlib.error) as error:
        raise DatasetError(
            f"Cannot read image file '{path}' ({type(error).__name__}: {error}). The file is corrupt or not an "
            "image: re-extract it from the dataset archive or remove it."
        ) from error
