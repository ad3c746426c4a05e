"""LightningDataModule for an MVTec AD category, or a plain set of images with masks (real, or the synthetic stand-in).

It indexes and checks the data, makes the seeded stratified split, and serves the three splits.
"""

from __future__ import annotations

import dataclasses
import warnings
from pathlib import Path
from typing import Any, Literal

import pandas as pd
import pytorch_lightning as pl
from torch.utils.data import DataLoader

from xai_lightning.data.cache import ResizedImageCache, default_cache_dir
from xai_lightning.data.dataset import DefectDataset
from xai_lightning.data.layout import MARKER_FILE, is_synthetic
from xai_lightning.data.mvtec import build_index, list_classes
from xai_lightning.data.plain import IMAGES_DIR, INDEX_CSV, build_plain_index, list_plain_classes
from xai_lightning.data.splits import SPLITS, SplitConfig, restored_split, split_summary, stratified_split
from xai_lightning.data.synthetic import SyntheticConfig, generate_synthetic_mvtec
from xai_lightning.data.transforms import AugmentationConfig, eval_transform, train_transform
from xai_lightning.errors import ConfigError, DatasetError

Source = Literal["mvtec", "synthetic"]
Layout = Literal["mvtec", "plain"]
LAYOUTS = ("mvtec", "plain")
CacheMode = Literal["none", "memory", "disk"]
CACHE_MODES = ("none", "memory", "disk")


class MVTecDataModule(pl.LightningDataModule):
    """Images, defect masks and class labels of one MVTec AD category, split into train / val / test.

    Args:
        root: folder that holds the category folders (``<root>/hazelnut/train/good/...``).
        category: the MVTec category; its ``test/`` sub-folders are the classes.
        source: ``mvtec`` reads real data and never writes; ``synthetic`` generates the stand-in set
            into ``root`` on first use (labelled synthetic in every log and manifest).
        image_size: images and masks are resized to this square size.
        batch_size: training batch size; evaluation uses ``eval_batch_size`` (default: the same).
        num_workers: DataLoader worker processes.
        split: fractions and seed of the stratified split.
        augmentation: training augmentation (evaluation is always deterministic).
        synthetic: options of the synthetic generator (image size, counts, seed); ``source: synthetic`` only.
        verify_images: decode-check every file when indexing (catches corrupt files before training).
        cache: keep images decoded and resized after their first use (see :mod:`xai_lightning.data.cache`):
            ``memory`` for the run, ``disk`` also in ``cache_dir`` for later runs and other processes (seeds),
            ``none`` decodes every image in every epoch. Results are the same bit for bit in all three.
        cache_dir: folder of the disk cache; default ``$XDG_CACHE_HOME/xai_lightning/images`` (or
            ``~/.cache/xai_lightning/images``). Outside the dataset on purpose: ``source: mvtec`` never
            writes there, and entries are named by file content, so one folder serves any dataset copy.
        resize_size: resize to this size first and centre-crop ``image_size`` (e.g. 256 then 224); None resizes
            straight to ``image_size``.
        normalize: normalise inputs with the ImageNet statistics (what torchvision's pretrained weights expect);
            ``false`` feeds [0, 1] values (the poster's pipeline). Linked to ``model.normalize_input``.
        layout: how ``root`` is laid out. ``mvtec``: ``<root>/<category>/train|test|ground_truth``. ``plain`` (any
            dataset of images with pixel masks, see :mod:`xai_lightning.data.plain`): ``<root>/images/<class>/``
            with ``<root>/masks/<class>/`` (``good`` has no masks), or the CSV ``index_csv`` / ``<root>/index.csv``
            (columns image, mask, class); every image joins the split pool and ``category`` only names the set.
            With ``source: synthetic`` the generator writes the chosen layout.
        index_csv: the plain layout's CSV (a relative path is taken inside ``root``); default ``<root>/index.csv``
            when it exists, else the folders. ``layout: plain`` with ``source: mvtec`` only.
    """

    def __init__(
        self,
        root: str = "data/mvtec_anomaly_detection",
        category: str = "hazelnut",
        source: Source = "mvtec",
        image_size: int = 224,
        batch_size: int = 16,
        eval_batch_size: int | None = None,
        num_workers: int = 2,
        split: SplitConfig = SplitConfig(),
        augmentation: AugmentationConfig = AugmentationConfig(),
        synthetic: SyntheticConfig = SyntheticConfig(size=256),
        verify_images: bool = True,
        cache: CacheMode = "memory",
        cache_dir: str | None = None,
        resize_size: int | None = None,
        normalize: bool = True,
        layout: Layout = "mvtec",
        index_csv: str | None = None,
    ) -> None:
        super().__init__()
        if source not in ("mvtec", "synthetic"):
            raise ConfigError(f"`data.source` is '{source}'; use 'mvtec' (real data) or 'synthetic'.")
        _check_layout(layout, source, index_csv)
        if image_size < 32:
            raise ConfigError(f"`data.image_size` is {image_size}; use at least 32 pixels.")
        if batch_size < 1 or (eval_batch_size is not None and eval_batch_size < 1):
            raise ConfigError("`data.batch_size` and `data.eval_batch_size` must be positive.")
        if cache not in CACHE_MODES:
            raise ConfigError(
                f"`data.cache` is {cache!r}; use 'memory' (decode each image once per run), 'disk' (once, kept in "
                "`data.cache_dir` for later runs) or 'none' (decode every epoch)."
            )
        if cache_dir is not None and cache != "disk":
            warnings.warn(
                f"`data.cache_dir` is set but `data.cache` is '{cache}': the folder is not used.", stacklevel=2
            )
        self.root = Path(root)
        self.category = category
        self.source = source
        self.image_size = image_size
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.num_workers = num_workers
        self.split_config = split
        self.augmentation = augmentation
        self.layout = layout
        self.index_csv = None if index_csv is None else self.root / index_csv
        self.synthetic = dataclasses.replace(synthetic, category=category, layout=layout)
        self.verify_images = verify_images
        self.cache_dir = None
        if cache == "disk":
            self.cache_dir = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
        # One cache for all splits and datasets of this module: the attribution callback and evaluation
        # read the same files as the loaders and find them resized already.
        self.resize_size = resize_size
        self.normalize = normalize
        self.image_cache = None if cache == "none" else ResizedImageCache(resize_size or image_size, self.cache_dir)
        self.split_frame: pd.DataFrame | None = None
        self.save_hyperparameters()

    # ------------------------------------------------------------------ what the data is
    @property
    def class_names(self) -> list[str]:
        """Class names in label order: the category's ``test/`` folders, sorted (crack, cut, good, hole, print);
        with ``layout: plain`` the ``images/`` class folders, or the classes of the CSV.

        For ``source: synthetic`` they come from ``synthetic.counts`` (a class with count 0 is left out): the CLI
        builds the model from them before :meth:`prepare_data` writes the set, and what it then writes (or finds,
        which must be the same set) has exactly these classes.
        """
        if self.source == "synthetic":
            return self.synthetic.class_names
        if self.layout == "plain":
            return list_plain_classes(self.root, csv=self.index_csv)
        return list_classes(self.root, self.category)

    @property
    def is_synthetic(self) -> bool:
        """True when the data on disk was written by the synthetic generator (whatever ``source`` says)."""
        return self.source == "synthetic" or is_synthetic(self.root)

    def describe(self) -> dict[str, Any]:
        """What a run trained on, for the manifest and the logger."""
        info: dict[str, Any] = {
            "root": str(self.root.resolve()),
            "category": self.category,
            "kind": "synthetic" if self.is_synthetic else self.layout,
            "layout": self.layout,
            "class_names": self.class_names,
            "image_size": self.image_size,
        }
        if self.is_synthetic:
            info["synthetic"] = dataclasses.asdict(self.synthetic)
        if self.split_frame is not None:
            info["split_counts"] = split_summary(self.split_frame).to_dict()
        return info

    # ------------------------------------------------------------------ Lightning hooks
    def prepare_data(self) -> None:
        """Write the synthetic set on first use (rank 0 only; other ranks wait for it)."""
        if self.source != "synthetic":
            return
        existing = self.root / (IMAGES_DIR if self.layout == "plain" else self.category)
        if existing.is_dir() and not is_synthetic(self.root):
            raise DatasetError(
                f"'{existing}' exists and was not written by the synthetic generator (no "
                f"{MARKER_FILE} in '{self.root}'). It may be real data: set `data.source: mvtec` to use it, or point "
                "`data.root` elsewhere for synthetic data."
            )
        generate_synthetic_mvtec(self.root, self.synthetic, progress=True)

    def setup(self, stage: str | None = None) -> None:
        """Index, check and split the data once; the same data seed gives the same split."""
        if self.split_frame is not None:
            return
        if self.source == "mvtec" and is_synthetic(self.root):
            warnings.warn(
                f"'{self.root}' holds SYNTHETIC data (it has {MARKER_FILE}); results are labelled synthetic.",
                stacklevel=2,
            )
        self.split_frame = stratified_split(self.read_index(), self.split_config)

    def restore_split(self, path: str | Path) -> None:
        """Use the split a run saved (its ``split.csv``) instead of splitting the data anew; see
        :func:`~xai_lightning.data.splits.restored_split` for images added or removed since."""
        self.split_frame = restored_split(self.read_index(), pd.read_csv(path, index_col="row"), path)

    def read_index(self) -> pd.DataFrame:
        """The checked sample index of the data on disk, read with the reader of ``layout``."""
        if self.layout == "plain":
            return build_plain_index(
                self.root, csv=self.index_csv, verify_images=self.verify_images, category=self.category
            )
        return build_index(self.root, self.category, verify_images=self.verify_images)

    def frame(self, split: str) -> pd.DataFrame:
        """Rows of one split (``train``, ``val`` or ``test``); index = row id in the split table."""
        if split not in SPLITS:
            raise ConfigError(f"Unknown split '{split}'; use one of {', '.join(SPLITS)}.")
        if self.split_frame is None:
            self.setup()
        return self.split_frame[self.split_frame["split"] == split]

    def dataset(self, split: str, augment: bool = False) -> DefectDataset:
        """A split as a Dataset; ``augment`` applies the training augmentation (reseeded per sample)."""
        transform = self.transform(augment)
        return DefectDataset(self.frame(split), self.class_names, transform, reseed=augment, cache=self.image_cache)

    def transform(self, augment: bool = False):
        """The albumentations pipeline of the splits: training augmentation, or the deterministic evaluation one."""
        if augment:
            return train_transform(self.image_size, self.augmentation, self.resize_size, self.normalize)
        return eval_transform(self.image_size, self.resize_size, self.normalize)

    def train_dataloader(self) -> DataLoader:
        # Workers start anew each epoch, seeded from torch's generator (which checkpoints hold): persistent workers
        # would carry their generators across epochs, and a resumed run could not draw what they would have.
        return self._loader(self.dataset("train", augment=True), self.batch_size, shuffle=True, persistent=False)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.dataset("val"), self.eval_batch_size, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.dataset("test"), self.eval_batch_size, shuffle=False)

    def _loader(self, dataset: DefectDataset, batch_size: int, shuffle: bool, persistent: bool = True) -> DataLoader:
        if self.image_cache is not None and self.num_workers > 0:
            # Fill the cache here, before the loader's workers exist: each worker is a process with its own
            # copy of the cache, and a shuffled epoch sends it images it has not seen, so caches filled by
            # the workers themselves would still decode about half of epoch 2 (with 2 workers). Forked
            # workers share what the main process holds, in every epoch.
            frame = dataset.frame
            self.image_cache.preload(frame["image_path"], frame["mask_path"], processes=self.num_workers)
        return DataLoader(
            dataset,
            batch_size=batch_size,
            shuffle=shuffle,
            num_workers=self.num_workers,
            persistent_workers=persistent and self.num_workers > 0,
            pin_memory=False,
        )


def _check_layout(layout: str, source: str, index_csv: str | None) -> None:
    """Refuse a layout the module cannot read, and an ``index_csv`` that would not be read."""
    if layout not in LAYOUTS:
        raise ConfigError(
            f"`data.layout` is {layout!r}; use 'mvtec' (<root>/<category>/train, test, ground_truth) or 'plain' "
            f"(<root>/images/<class>/ with <root>/masks/<class>/, or <root>/{INDEX_CSV})."
        )
    if index_csv is not None and (layout != "plain" or source != "mvtec"):
        raise ConfigError(
            f"`data.index_csv` is set but the data is read with `data.layout: {layout}` and `data.source: {source}`; "
            "the CSV is read only with `data.layout: plain` and `data.source: mvtec` (the synthetic generator writes "
            "folders). Remove it or change those options."
        )
