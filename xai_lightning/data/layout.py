"""Where each file of an MVTec AD category lives: images, defect masks, shortcut masks and the SYNTHETIC.json marker.

The reader (:mod:`.mvtec`) and the writer (:mod:`.synthetic`) spell these paths only through this module.
"""

from __future__ import annotations

from pathlib import Path

#: MVTec's own folders of a category: ``train/`` (good images only) and ``test/`` (every class). Not the
#: project's train / val / test split (:data:`xai_lightning.data.splits.SPLITS`), which re-splits them.
TRAIN_DIR = "train"
TEST_DIR = "test"
MVTEC_SPLITS: tuple[str, ...] = (TRAIN_DIR, TEST_DIR)
GROUND_TRUTH_DIR = "ground_truth"
#: Every folder of an MVTec category; any of them marks a folder as MVTec-like.
MVTEC_SUBDIRS: tuple[str, ...] = (*MVTEC_SPLITS, GROUND_TRUTH_DIR)

#: Folder (inside the category folder) holding the shortcut markers' masks, ``<class>/<stem>_mask.png``.
SHORTCUT_MASK_DIR = "shortcut_mask"

#: In the dataset root (beside the category folders): present only in sets the synthetic generator wrote.
MARKER_FILE = "SYNTHETIC.json"

_MASK_SUFFIX = "_mask.png"


def image_file(split: str, label: str, stem: str, suffix: str = ".png") -> str:
    """Path of an image, relative to its category folder.

    >>> image_file("test", "crack", "000")
    'test/crack/000.png'
    """
    return f"{split}/{label}/{stem}{suffix}"


def mask_file(label: str, stem: str) -> str:
    """Path of the defect mask of image ``test/<label>/<stem>.*``, relative to the category folder (MVTec's rule).

    >>> mask_file("crack", "000")
    'ground_truth/crack/000_mask.png'
    """
    return f"{GROUND_TRUTH_DIR}/{label}/{stem}{_MASK_SUFFIX}"


def shortcut_mask_file(label: str, stem: str) -> str:
    """Path of the shortcut marker's mask of image ``test/<label>/<stem>.png``, relative to the category folder.

    >>> shortcut_mask_file("hole", "007")
    'shortcut_mask/hole/007_mask.png'
    """
    return f"{SHORTCUT_MASK_DIR}/{label}/{stem}{_MASK_SUFFIX}"


def category_dir_of(image_path: str | Path) -> Path:
    """The category folder of an image ``<category>/<split>/<class>/<stem>.png``.

    >>> category_dir_of("data/hazelnut/test/crack/000.png").as_posix()
    'data/hazelnut'
    """
    return Path(image_path).parent.parent.parent


def has_mask(mask_path: object) -> bool:
    """Whether an index entry names a mask file (``good`` images have none: None or NaN in pandas).

    >>> has_mask("ground_truth/crack/000_mask.png"), has_mask(None), has_mask(float("nan"))
    (True, False, False)
    """
    return isinstance(mask_path, str) and bool(mask_path)


def shortcut_mask_path(image_path: str | Path) -> str | None:
    """Path of the shortcut marker's mask of an image ``<category>/<split>/<class>/<stem>.png``; None if unmarked.

    For scoring attributions against the planted marker (the known-answer experiment): the mask is
    ``<category>/shortcut_mask/<class>/<stem>_mask.png``, 0/255 like MVTec masks, and exists only for
    images that carry a marker, so None means "no marker in this image" (or a set without the shortcut).
    """
    image_path = Path(image_path)
    path = category_dir_of(image_path) / shortcut_mask_file(image_path.parent.name, image_path.stem)
    return str(path) if path.is_file() else None


def marker_path(root: str | Path) -> Path:
    """The SYNTHETIC.json marker of a dataset root (the folder holding the category folders).

    >>> marker_path("data/synthetic").as_posix()
    'data/synthetic/SYNTHETIC.json'
    """
    return Path(root) / MARKER_FILE


def is_synthetic(root: str | Path) -> bool:
    """True when ``root`` (the folder holding the category folders) carries the SYNTHETIC.json marker."""
    return marker_path(root).is_file()
