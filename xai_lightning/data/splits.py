"""Seeded, stratified train / val / test split of the classification task.

MVTec only labels defects in its test folder, so the classification task re-splits the labelled
images; the split is a column of the sample index and is saved with every run.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd

from xai_lightning.data.classes import GOOD
from xai_lightning.data.layout import TEST_DIR, TRAIN_DIR
from xai_lightning.errors import ConfigError, DatasetError

#: The project's own splits, in order (tables, manifests and loaders list them so).
SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class SplitConfig:
    """How the labelled images are divided.

    Attributes:
        val_fraction: share of each class that goes to validation.
        test_fraction: share of each class that goes to test; the rest trains.
        max_train_good: how many images of MVTec's ``train/good`` join the pool of ``good`` images
            (a seeded sample; 0 keeps the classes close to balanced).
        seed: the data seed; the same seed gives the same split.
        test_per_class: a fixed number of test images per class instead of ``test_fraction`` (the poster's
            split: 4 defect images per class); the rest is split between train and val by their fractions.
    """

    val_fraction: float = 0.2
    test_fraction: float = 0.2
    max_train_good: int = 0
    seed: int = 0
    test_per_class: int | None = None

    def __post_init__(self) -> None:
        for name in ("val_fraction", "test_fraction"):
            value = getattr(self, name)
            if not 0.0 <= value < 1.0:
                raise ConfigError(f"`data.split.{name}` is {value}; it must lie in [0, 1).")
        if self.val_fraction + self.test_fraction >= 1.0:
            raise ConfigError(
                f"`data.split.val_fraction` + `data.split.test_fraction` = {self.val_fraction + self.test_fraction:g}"
                " leaves nothing to train on; keep their sum below 1."
            )
        if self.test_per_class is not None and self.test_per_class < 1:
            raise ConfigError(f"`data.split.test_per_class` is {self.test_per_class}; use 1 or more, or null.")
        if self.max_train_good < 0:
            raise ConfigError(f"`data.split.max_train_good` is {self.max_train_good}; use 0 or a positive count.")


def stratified_split(index: pd.DataFrame, config: SplitConfig) -> pd.DataFrame:
    """Return the labelled pool of ``index`` with a ``split`` column (train / val / test).

    The pool is every image of MVTec's ``test/`` plus up to ``max_train_good`` of ``train/good``.
    Each class is shuffled with its own seeded generator and cut by the fractions (largest-remainder
    rounding), so adding images of one class never moves the images of another.
    Raises :class:`DatasetError` when a split with a positive fraction would get no image of a class.
    """
    pool = index[index["mvtec_split"] == TEST_DIR]
    if config.max_train_good:
        train_good = index[(index["mvtec_split"] == TRAIN_DIR) & (index["label"] == GOOD)].sort_values("image_id")
        take = min(config.max_train_good, len(train_good))
        rng = np.random.default_rng([config.seed, 1])
        pool = pd.concat([pool, train_good.iloc[np.sort(rng.choice(len(train_good), take, replace=False))]])

    fractions = {"val": config.val_fraction, "test": config.test_fraction}
    fractions["train"] = 1.0 - config.val_fraction - config.test_fraction
    parts = []
    for class_id, (label, rows) in enumerate(sorted(pool.groupby("label"), key=lambda item: item[0])):
        rows = rows.sort_values("image_id")
        order = np.random.default_rng([config.seed, 0, class_id]).permutation(len(rows))
        counts = _allocate(len(rows), fractions, config.test_per_class)
        for split, count in counts.items():
            if count == 0 and fractions[split] > 0:
                raise DatasetError(_empty_split_message(label, len(rows), split, config))
        labels = np.repeat(list(counts), list(counts.values()))
        part = rows.iloc[order].assign(split=labels)
        parts.append(part)
    split = pd.concat(parts).sort_values(["split", "label", "image_id"], key=_split_order).reset_index(drop=True)
    return split


def split_summary(split: pd.DataFrame) -> pd.DataFrame:
    """Images per class (rows) and split (columns), for logs and the run manifest."""
    table = split.groupby(["label", "split"]).size().unstack(fill_value=0)
    return table.reindex(columns=[s for s in SPLITS if s in table.columns])


def _empty_split_message(label: str, n_images: int, split: str, config: SplitConfig) -> str:
    fix = (
        f"raise `data.split.{split}_fraction`"
        if split != "train"
        else "lower `data.split.val_fraction` / `data.split.test_fraction`"
    )
    return (
        f"Class '{label}' has {n_images} image(s); the split (val {config.val_fraction:g}, test "
        f"{config.test_fraction:g}) leaves it no image in '{split}'. To fix it, {fix}, or add images of that class."
    )


def _allocate(n: int, fractions: dict[str, float], test_count: int | None = None) -> dict[str, int]:
    """Cut ``n`` items by ``fractions`` with largest-remainder rounding (counts sum to ``n``); with ``test_count``,
    that many (at most ``n``) go to test and the rest is cut between train and val by their fractions.

    >>> _allocate(18, {"train": 0.6, "val": 0.2, "test": 0.2}, test_count=4)
    {'train': 11, 'val': 3, 'test': 4}
    """
    if test_count is not None:
        test = min(test_count, n)
        share = fractions["val"] / (fractions["train"] + fractions["val"])
        rest = _allocate(n - test, {"train": 1.0 - share, "val": share, "test": 0.0})
        return {"train": rest["train"], "val": rest["val"], "test": test}
    exact = {split: n * fractions[split] for split in SPLITS}
    counts = {split: int(np.floor(value)) for split, value in exact.items()}
    by_remainder = sorted(SPLITS, key=lambda s: (-(exact[s] - counts[s]), SPLITS.index(s)))
    for split in by_remainder[: n - sum(counts.values())]:
        counts[split] += 1
    return counts


def _split_order(column: pd.Series) -> pd.Series:
    if column.name == "split":
        return column.map(SPLITS.index)
    return column


def restored_split(index: pd.DataFrame, saved: pd.DataFrame, source: object = "split.csv") -> pd.DataFrame:
    """The split a run was trained with (``saved``: its ``split.csv``, index = row id) over the files on disk now.

    Re-splitting what is on disk is not the same split once images were added or removed (each class is
    shuffled as a whole), and would score training images as validation. Rows, row ids, order and split
    come from ``saved``; paths and labels from ``index`` (the folder may have moved). An image listed
    but no longer on disk is left out, and one on disk in ``test/`` but not listed is not scored; both
    are named in a warning.
    """
    if "image_id" not in saved or "split" not in saved:
        raise DatasetError(f"'{source}' is not a split file: it has no 'image_id' and 'split' columns.")
    current = index.set_index("image_id")
    missing = saved.loc[~saved["image_id"].isin(current.index), "image_id"].tolist()
    unlisted = sorted(set(index.loc[index["mvtec_split"] == TEST_DIR, "image_id"]) - set(saved["image_id"]))
    if missing:
        warnings.warn(
            f"{len(missing)} image(s) of the run's split ('{source}') are no longer on disk and are left out: "
            f"{', '.join(missing[:10])}{' ...' if len(missing) > 10 else ''}.",
            stacklevel=2,
        )
    if unlisted:
        warnings.warn(
            f"{len(unlisted)} image(s) on disk are not in the run's split ('{source}'; added after training?) and "
            f"are not scored: {', '.join(unlisted[:10])}{' ...' if len(unlisted) > 10 else ''}.",
            stacklevel=2,
        )
    kept = saved[~saved["image_id"].isin(missing)]
    rows = current.loc[kept["image_id"]].reset_index().set_index(kept.index)
    return rows.assign(split=kept["split"].to_numpy())[[*index.columns, "split"]]
