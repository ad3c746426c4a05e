"""Read a PLAIN dataset of images with pixel masks (any domain) into the same checked index as the MVTec reader.

Two forms, both giving the index :func:`~xai_lightning.data.mvtec.build_index` gives (columns ``INDEX_COLUMNS``):

* folders: ``<root>/images/<class>/<name>.<ext>``, each with its mask ``<root>/masks/<class>/<name>.<ext>``
  (same name, any image suffix);
* a CSV: ``<root>/index.csv`` (or any CSV path) with the columns ``image``, ``mask`` and ``class``; relative
  paths are taken from the CSV's folder. When ``<root>/index.csv`` exists it is used instead of the folders.

The class named ``good`` (:data:`~xai_lightning.data.classes.GOOD`) has no masks (an all-zero mask is used, and a
mask given for it is ignored with a warning); every image of every other class needs its mask, and a missing one
is a :class:`~xai_lightning.errors.DatasetError` naming the image and the mask expected, as in the MVTec reader.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import pandas as pd

from xai_lightning.data.classes import GOOD, label_order
from xai_lightning.data.layout import TEST_DIR
from xai_lightning.data.mvtec import IMAGE_SUFFIXES, INDEX_COLUMNS, check_files, class_folders, image_files
from xai_lightning.errors import DatasetError

#: Folders of the folder form, inside the dataset root.
IMAGES_DIR = "images"
MASKS_DIR = "masks"
#: The CSV form's file in the dataset root, used when present.
INDEX_CSV = "index.csv"
#: Columns the CSV form needs (others are ignored).
CSV_COLUMNS: tuple[str, ...] = ("image", "mask", "class")

_LAYOUT_HELP = (
    f"A plain dataset holds {IMAGES_DIR}/<class>/<name>.png with {MASKS_DIR}/<class>/<name>.png (no masks for "
    f"'{GOOD}'), or an {INDEX_CSV} with the columns {', '.join(CSV_COLUMNS)}."
)


def plain_image_file(label: str, stem: str, suffix: str = ".png") -> str:
    """Path of an image of the folder form, relative to the dataset root.

    >>> plain_image_file("crack", "000")
    'images/crack/000.png'
    """
    return f"{IMAGES_DIR}/{label}/{stem}{suffix}"


def plain_mask_file(label: str, stem: str, suffix: str = ".png") -> str:
    """Path of the mask of image ``images/<label>/<stem>.*`` in the folder form, relative to the dataset root.

    >>> plain_mask_file("crack", "000")
    'masks/crack/000.png'
    """
    return f"{MASKS_DIR}/{label}/{stem}{suffix}"


def list_plain_classes(root: str | Path, *, csv: str | Path | None = None) -> list[str]:
    """Class names of a plain dataset in label order: its ``images/`` class folders, or the CSV's ``class`` column.

    For building the model before the data is indexed; reads no image (:func:`build_plain_index` checks them).
    """
    root = Path(root)
    csv_path = _csv_path(root, csv)
    if csv_path is not None:
        return label_order(_read_csv(csv_path)["class"])
    return label_order(p.name for p in class_folders(_images_dir(root)))


def build_plain_index(
    root: str | Path, *, csv: str | Path | None = None, verify_images: bool = True, category: str | None = None
) -> pd.DataFrame:
    """Index every image of a plain dataset and check it can be trained on; the same index as ``build_index``.

    ``csv`` names the CSV form's file (default ``<root>/index.csv`` when it exists, else the folder form);
    ``category`` fills the ``category`` column (default: the root folder's name). ``image_id`` is
    ``<class>/<stem>``, unique. Every row gets ``mvtec_split`` = ``test``: the stratified split pools the rows of
    MVTec's ``test/`` folder (and only samples MVTec's good-only ``train/``), and a plain set has no such
    good-only folder, so all of its images belong in the pool. Raises :class:`DatasetError` naming the file when
    a defect image has no mask, a mask's size differs from its image's, or (with ``verify_images``) a file
    cannot be decoded.
    """
    root = Path(root)
    category = category or root.resolve().name
    csv_path = _csv_path(root, csv)
    rows = _csv_rows(csv_path, category) if csv_path is not None else _folder_rows(root, category)
    index = pd.DataFrame(rows, columns=INDEX_COLUMNS)
    source = csv_path or root
    _check_index(index, source)
    if verify_images:
        check_files(index)
    return index.sort_values("image_id", kind="stable").reset_index(drop=True)


# ---------------------------------------------------------------------------------------------- the folder form
def _images_dir(root: Path) -> Path:
    """``<root>/images``, after checking the root is a plain dataset."""
    if not root.is_dir():
        raise DatasetError(f"Dataset root '{root}' does not exist or is not a folder. {_LAYOUT_HELP}")
    images_dir = root / IMAGES_DIR
    if not images_dir.is_dir():
        raise DatasetError(
            f"'{images_dir}' is missing, and there is no '{root / INDEX_CSV}'. {_LAYOUT_HELP} For the MVTec AD "
            "layout (<category>/train, test, ground_truth) set `data.layout: mvtec`."
        )
    return images_dir


def _folder_rows(root: Path, category: str) -> list[dict]:
    """One index row per image of ``images/<class>/``, each defect image paired with its mask."""
    rows = []
    for class_dir in class_folders(_images_dir(root)):
        label = class_dir.name
        masks = {} if label == GOOD else _masks_by_stem(root / MASKS_DIR / label)
        if label == GOOD and (root / MASKS_DIR / GOOD).is_dir():
            warnings.warn(f"'{root / MASKS_DIR / GOOD}' is ignored: '{GOOD}' images have no mask.", stacklevel=3)
        for image_path in image_files(class_dir):
            mask_path = None if label == GOOD else _mask_for(masks, root, label, image_path)
            rows.append(_row(label, image_path, mask_path, category))
    return rows


def _masks_by_stem(mask_dir: Path) -> dict[str, list[Path]]:
    """The mask files of a class folder by stem ({} when the folder is missing: each image then reports it)."""
    masks: dict[str, list[Path]] = {}
    if mask_dir.is_dir():
        for path in image_files(mask_dir):
            masks.setdefault(path.stem, []).append(path)
    return masks


def _mask_for(masks: dict[str, list[Path]], root: Path, label: str, image_path: Path) -> Path:
    found = masks.get(image_path.stem, [])
    expected = root / plain_mask_file(label, image_path.stem)
    if not found:
        raise DatasetError(
            f"Defect image '{image_path}' has no mask: expected '{expected}' (or the same name with any of "
            f"{', '.join(IMAGE_SUFFIXES)}). Every image of a class other than '{GOOD}' needs its mask in "
            f"{MASKS_DIR}/<class>/; restore the mask or remove the image."
        )
    if len(found) > 1:
        raise DatasetError(
            f"Image '{image_path}' has {len(found)} masks ({', '.join(map(str, found))}); keep one of them."
        )
    return found[0]


# ---------------------------------------------------------------------------------------------- the CSV form
def _csv_path(root: Path, csv: str | Path | None) -> Path | None:
    """The CSV to read: ``csv`` (which must exist), else ``<root>/index.csv`` when present, else None (folders)."""
    if csv is not None:
        csv = Path(csv)
        if not csv.is_file():
            raise DatasetError(f"Index CSV '{csv}' does not exist. {_LAYOUT_HELP}")
        return csv
    default = root / INDEX_CSV
    return default if default.is_file() else None


def _read_csv(csv_path: Path) -> pd.DataFrame:
    """The CSV as strings (empty cells are ''), with its required columns checked."""
    try:
        table = pd.read_csv(csv_path, dtype=str, keep_default_na=False, skipinitialspace=True)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        raise DatasetError(f"Index CSV '{csv_path}' cannot be read ({type(error).__name__}: {error}).") from error
    missing = [column for column in CSV_COLUMNS if column not in table.columns]
    if missing:
        raise DatasetError(
            f"Index CSV '{csv_path}' lacks the column(s) {', '.join(missing)}; it has {', '.join(table.columns)}. "
            f"{_LAYOUT_HELP}"
        )
    return table.apply(lambda column: column.str.strip())


def _csv_rows(csv_path: Path, category: str) -> list[dict]:
    """One index row per CSV line; relative paths are read from the CSV's folder."""
    rows = []
    ignored_good_masks = 0
    entries = _read_csv(csv_path)[list(CSV_COLUMNS)].itertuples(index=False, name=None)
    for line, (image, mask, label) in enumerate(entries, start=2):  # line 1 is the header
        where = f"line {line} of '{csv_path}'"
        if not image or not label:
            raise DatasetError(f"The {where} has no {'image' if not image else 'class'}; fill it or remove it.")
        image_path = _resolve(csv_path, image, f"Image '{image}' ({where})")
        mask_path = None
        if label == GOOD:
            ignored_good_masks += bool(mask)
        elif not mask:
            raise DatasetError(
                f"Defect image '{image_path}' ({where}, class '{label}') has no mask; give its mask in the 'mask' "
                f"column (only '{GOOD}' images go without), or remove the line."
            )
        else:
            mask_path = _resolve(csv_path, mask, f"Mask '{mask}' of image '{image_path}' ({where})")
        rows.append(_row(label, image_path, mask_path, category))
    if ignored_good_masks:
        warnings.warn(
            f"{ignored_good_masks} '{GOOD}' image(s) in '{csv_path}' give a mask; it is ignored ('{GOOD}' images have "
            "no mask).",
            stacklevel=3,
        )
    return rows


def _resolve(csv_path: Path, value: str, what: str) -> Path:
    path = Path(value) if Path(value).is_absolute() else csv_path.parent / value
    if not path.is_file():
        raise DatasetError(f"{what} does not exist: '{path}'. Fix the path (relative ones start at the CSV's folder).")
    return path


# ---------------------------------------------------------------------------------------------- both forms
def _row(label: str, image_path: Path, mask_path: Path | None, category: str) -> dict:
    return {
        "image_id": f"{label}/{image_path.stem}",
        "image_path": str(image_path),
        "mask_path": None if mask_path is None else str(mask_path),
        "label": label,
        # Every image into the split pool: stratified_split pools MVTec's test/ rows (see build_plain_index).
        "mvtec_split": TEST_DIR,
        "category": category,
    }


def _check_index(index: pd.DataFrame, source: Path) -> None:
    """A trainable index: some defect images, and ``image_id`` unique (one ``<class>/<stem>`` per image)."""
    if index.empty:
        raise DatasetError(f"No images found in '{source}'. {_LAYOUT_HELP}")
    if not (index["label"] != GOOD).any():
        raise DatasetError(
            f"'{source}' holds only '{GOOD}' images; the classification task needs classes with masks. {_LAYOUT_HELP}"
        )
    duplicated = index[index["image_id"].duplicated(keep=False)].sort_values("image_id")
    if not duplicated.empty:
        first = duplicated[duplicated["image_id"] == duplicated["image_id"].iloc[0]]
        raise DatasetError(
            f"Images {', '.join(repr(p) for p in first['image_path'])} share the id '{first['image_id'].iloc[0]}' "
            "(class and file name without suffix): rename one of them."
        )
