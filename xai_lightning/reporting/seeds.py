"""Aggregation of per-image attribution results over seeds: win credits, per-seed summaries, mean ± std.

Follows docs/metrics.md ("Win-rate", "Across seeds"); every function takes and returns tidy pandas frames.

The input is the long ``per_image`` table, one row per experiment × seed × split ×
image × method × metric (columns ``experiment, seed, split, image_id, class,
method, metric, value``). ``per_seed_summary`` reduces it to one value per
(experiment, seed, split, class, method, metric) and ``across_seeds`` to mean ± std
over seeds; :mod:`xai_lightning.reporting.significance` asks whether a difference holds.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch

from xai_lightning.data.splits import SPLITS
from xai_lightning.metrics.names import DEFAULT_WIN_TIES, OVERALL, TIE_TOLERANCE
from xai_lightning.metrics.winrate import win_credit

__all__ = [
    "across_seeds",
    "excluded_counts",
    "latest_split",
    "mean_std_label",
    "per_seed_summary",
    "win_credits",
]

PER_IMAGE_COLUMNS = ("experiment", "seed", "split", "image_id", "class", "method", "metric", "value")
# One image of one run. ``class`` is part of the key because MVTec file names
# (000.png, 001.png, …) repeat across defect classes; an image has one class, so
# the extra key never splits an image whose id is already unique.
IMAGE_KEY = ["experiment", "seed", "split", "class", "image_id"]
RUN_KEY = ["experiment", "seed", "split"]
SUMMARY_COLUMNS = ["experiment", "seed", "split", "class", "method", "metric", "value", "n_images"]
#: What a table cell reads where there is no value.
MISSING = "—"


def require_columns(frame: pd.DataFrame, required: Sequence[str], what: str) -> None:
    """Raise a ValueError naming the columns of ``required`` that ``frame`` (called ``what``) lacks."""
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise ValueError(f"{what} lacks column(s) {missing}; it has {list(frame.columns)}")


def finite(values: pd.Series) -> pd.Series:
    """Float copy with ±inf turned into NaN, so that pandas' NaN-skipping reductions skip them too."""
    values = values.astype("float64")
    return values.where(np.isfinite(values))


def latest_split(frame: pd.DataFrame, table: str = "table") -> str:
    """The split a table or figure shows when none is asked for: test, else val, else train.

    Example:
        >>> latest_split(pd.DataFrame({"split": ["train", "val"]}))
        'val'
    """
    if "split" not in frame.columns:
        raise ValueError(f"{table} has no column 'split'; its columns are {list(frame.columns)}.")
    present = set(frame["split"])
    preferred = SPLITS[::-1]
    for split in preferred:
        if split in present:
            return split
    raise ValueError(f"{table} has none of the splits {', '.join(preferred)}; it has {sorted(map(str, present))}.")


def _tko_rows(per_image: pd.DataFrame, methods: Sequence[str] | None) -> pd.DataFrame:
    """The ``tko`` rows of the compared methods, one per image and method, with ±inf as NaN."""
    require_columns(per_image, PER_IMAGE_COLUMNS, "per_image")
    tko = per_image.loc[per_image["metric"] == "tko", list(PER_IMAGE_COLUMNS)]
    if methods is not None:
        unknown = sorted(set(methods) - set(tko["method"]))
        if unknown:
            raise ValueError(f"no TKO rows for method(s) {unknown}; the runs computed {sorted(set(tko['method']))}")
        tko = tko[tko["method"].isin(list(methods))]
    tko = tko.reset_index(drop=True)
    duplicated = tko.duplicated(IMAGE_KEY + ["method"])
    if duplicated.any():
        first = tko.loc[duplicated, IMAGE_KEY + ["method"]].iloc[0].to_dict()
        raise ValueError(f"{int(duplicated.sum())} duplicate TKO row(s) in per_image, e.g. {first}")
    return tko.assign(value=finite(tko["value"]))


def _row_credits(tko: pd.DataFrame, methods: Sequence[str] | None, atol: float, ties: str) -> np.ndarray:
    """Each row's win credit, NaN where its image is excluded, from :func:`metrics.winrate.win_credit`.

    The metric the callback logs scores an (images × methods) matrix; each run becomes one such
    matrix here, so both share one tie rule. A method without a row for an image leaves NaN in
    its cell, which excludes the image: a crashed method cannot win by absence.
    """
    credit = np.full(len(tko), np.nan)
    if tko.empty:
        return credit
    run = tko.groupby(RUN_KEY, sort=False, dropna=False).ngroup().to_numpy()
    for run_id in range(run.max() + 1):
        rows = np.flatnonzero(run == run_id)
        frame = tko.iloc[rows]
        # Without ``methods`` each run compares the methods it computed.
        names = pd.Index(list(dict.fromkeys(methods)) if methods is not None else frame["method"].unique())
        image = frame.groupby(IMAGE_KEY, sort=False, dropna=False).ngroup().to_numpy()
        column = names.get_indexer(frame["method"])
        scores = np.full((image.max() + 1, len(names)), np.nan)
        scores[image, column] = frame["value"].to_numpy(dtype="float64")
        credit[rows] = win_credit(torch.from_numpy(scores), atol=atol, ties=ties).numpy()[image, column]
    return credit


def win_credits(
    per_image: pd.DataFrame,
    methods: Sequence[str] | None = None,
    atol: float = TIE_TOLERANCE,
    ties: str = DEFAULT_WIN_TIES,
) -> pd.DataFrame:
    """Win credit of each method on each image, from the ``tko`` rows of ``per_image``.

    ``ties="first_listed"`` hands a tie to the first of ``methods`` (or of each run's method order)
    instead of sharing it (see :data:`~xai_lightning.metrics.names.WIN_TIES`).

    Per image the winners are the methods whose TKO is within ``atol`` of the
    image's best; each winner gets ``1 / #winners``, every other method 0. The
    compared methods are ``methods`` (default: every method with a TKO row in
    that experiment × seed × split). An image where any compared method's TKO is
    NaN (empty mask) or missing is excluded: its rows keep ``value`` NaN and
    ``excluded`` True, so they can be counted (``excluded_counts``) rather than
    silently dropped. Under the fair rule nothing depends on the order in which methods are listed.

    Returns:
        The tko rows of the compared methods with ``metric = "win_credit"``, the
        credit in ``value`` and a boolean ``excluded`` column.

    Example:
        >>> tko = pd.DataFrame({"experiment": "e", "seed": 0, "split": "test", "class": "crack",
        ...     "image_id": ["a", "a", "a", "b", "b", "b"], "method": ["x", "y", "z"] * 2,
        ...     "metric": "tko", "value": [0.5, 0.5, 0.5, 0.9, float("nan"), 0.1]})
        >>> win_credits(tko)[["image_id", "method", "value", "excluded"]].round(3)
          image_id method  value  excluded
        0        a      x  0.333     False
        1        a      y  0.333     False
        2        a      z  0.333     False
        3        b      x    NaN      True
        4        b      y    NaN      True
        5        b      z    NaN      True
    """
    tko = _tko_rows(per_image, methods)
    credit = _row_credits(tko, methods, atol, ties)
    return tko.assign(metric="win_credit", value=credit, excluded=np.isnan(credit))


def per_class_and_overall(
    rows: pd.DataFrame, keys: list[str], column: str, overall_name: str, **agg: str
) -> pd.DataFrame:
    """``rows[column]`` aggregated per ``keys`` × class, and per ``keys`` alone as the class ``overall_name``.

    The overall value pools the rows of every class (so a class with more images weighs more);
    it is not the mean of the class values.
    """
    by_class = rows.groupby(keys + ["class"], sort=False, dropna=False)[column].agg(**agg).reset_index()
    overall = rows.groupby(keys, sort=False, dropna=False)[column].agg(**agg).reset_index()
    return pd.concat([by_class, overall.assign(**{"class": overall_name})], ignore_index=True)


def excluded_counts(
    per_image: pd.DataFrame,
    methods: Sequence[str] | None = None,
    classes_overall_name: str = OVERALL,
) -> pd.DataFrame:
    """Images left out of the win-rate, per experiment × seed × split × class and overall.

    Columns: ``experiment, seed, split, class, n_images, n_excluded``, where
    ``n_images`` counts the images with TKO rows and ``n_excluded`` those among
    them without a finite TKO for every compared method (``good`` images, whose
    mask is empty, are all excluded by design).

    Example:
        >>> tko = pd.DataFrame({"experiment": "e", "seed": 0, "split": "test", "class": ["crack"] * 2 + ["good"] * 2,
        ...     "image_id": ["a", "a", "g", "g"], "method": ["x", "y"] * 2,
        ...     "metric": "tko", "value": [0.5, 0.2, float("nan"), float("nan")]})
        >>> excluded_counts(tko)
          experiment  seed split    class  n_images  n_excluded
        0          e     0  test    crack         1           0
        1          e     0  test     good         1           1
        2          e     0  test  overall         2           1
    """
    images = win_credits(per_image, methods=methods).drop_duplicates(IMAGE_KEY)
    out = per_class_and_overall(images, RUN_KEY, "excluded", classes_overall_name, n_images="size", n_excluded="sum")
    out["n_excluded"] = out["n_excluded"].astype("int64")
    columns = RUN_KEY + ["class", "n_images", "n_excluded"]
    return out[columns].sort_values(RUN_KEY + ["class"], kind="stable", ignore_index=True)


def per_seed_summary(
    per_image: pd.DataFrame,
    classes_overall_name: str = OVERALL,
    methods: Sequence[str] | None = None,
    win_ties: str = DEFAULT_WIN_TIES,
) -> pd.DataFrame:
    """One value per experiment × seed × split × class × method × metric (``win_ties``: the win-rate's tie rule).

    For every metric of ``per_image``: the mean over the images with a finite
    value, per class and for ``classes_overall_name``. The overall value pools
    all images of the split (so a class with more images weighs more); it is not
    the mean of the class means. The metric ``win_rate`` is added: the mean win
    credit over the included images (see ``win_credits``; ``methods`` restricts
    the methods it compares). ``n_images`` is the number of images behind each
    value; a group without any finite value keeps its row with NaN and 0 rather
    than vanishing. Rows with metric ``win_credit`` in the input are ignored and
    recomputed.

    Example:
        >>> per_image = pd.DataFrame({"experiment": "e", "seed": 0, "split": "test",
        ...     "image_id": ["a", "a", "b", "b", "c", "c"], "class": ["crack"] * 4 + ["cut"] * 2,
        ...     "method": ["x", "y"] * 3, "metric": "tko", "value": [0.9, 0.1, 0.7, 0.2, 0.0, 0.6]})
        >>> s = per_seed_summary(per_image)
        >>> s[(s["metric"] == "win_rate") & (s["method"] == "x")][["class", "value", "n_images"]].reset_index(drop=True)
             class     value  n_images
        0    crack  1.000000         2
        1      cut  0.000000         1
        2  overall  0.666667         3
    """
    require_columns(per_image, PER_IMAGE_COLUMNS, "per_image")
    if (per_image["class"] == classes_overall_name).any():
        raise ValueError(
            f"a class is named {classes_overall_name!r}, the name reserved for the pooled value; "
            "pass another classes_overall_name"
        )
    rows = per_image.loc[per_image["metric"] != "win_credit", list(PER_IMAGE_COLUMNS)]
    rows = rows.assign(value=finite(rows["value"]))
    credits = win_credits(per_image, methods=methods, ties=win_ties)
    if len(credits):
        rows = pd.concat([rows, credits[list(PER_IMAGE_COLUMNS)].assign(metric="win_rate")], ignore_index=True)

    keys = ["experiment", "seed", "split", "method", "metric"]
    out = per_class_and_overall(rows, keys, "value", classes_overall_name, value="mean", n_images="count")
    out = out[SUMMARY_COLUMNS]
    out["n_images"] = out["n_images"].astype("int64")
    order = ["experiment", "seed", "split", "metric", "method", "class"]
    return out.sort_values(order, kind="stable", ignore_index=True)


def across_seeds(
    per_seed: pd.DataFrame, by: Sequence[str] | None = None, value: str = "value", ddof: int = 1
) -> pd.DataFrame:
    """Mean ± std over seeds of each group (``ddof`` 1: the sample std; 0: the poster's population std),
    keeping the per-seed values.

    ``by`` defaults to every column except ``seed``, ``value`` and ``n_images``;
    this works for ``per_seed_summary`` output and for ``model_metrics``
    (experiment, seed, split, metric, value) alike. Columns of the result:
    ``by`` + ``mean``, ``std`` (with ``ddof``; NaN with one seed at ddof 1), ``n_seeds`` (seeds
    with a finite value, the ones mean and std use), ``seeds`` and ``values``
    (every seed's value, NaN included, in seed order), so that any other
    aggregate can be recomputed.

    Example:
        >>> per_seed = pd.DataFrame({"split": "test", "metric": "acc", "seed": [2, 0, 1], "value": [0.7, 0.5, 0.6]})
        >>> r = across_seeds(per_seed)
        >>> r[["split", "metric", "mean", "n_seeds"]]
          split metric  mean  n_seeds
        0  test    acc   0.6        3
        >>> round(float(r["std"].iloc[0]), 6), r["values"].iloc[0]
        (0.1, [0.5, 0.6, 0.7])
    """
    require_columns(per_seed, ["seed", value], "per_seed")
    if by is None:
        by = [c for c in per_seed.columns if c not in {"seed", value, "n_images"}]
    by = list(by)
    require_columns(per_seed, by, "per_seed")
    duplicated = per_seed.duplicated(by + ["seed"])
    if duplicated.any():
        raise ValueError(
            f"{int(duplicated.sum())} row(s) repeat a seed within a group of {by}; "
            "add the column that tells them apart to `by`"
        )
    frame = per_seed[by + ["seed"]].assign(_value=finite(per_seed[value])).sort_values("seed", kind="stable")
    grouped = frame.groupby(by, sort=True, dropna=False)
    out = grouped["_value"].agg(mean="mean", std=lambda v: v.std(ddof=ddof), n_seeds="count")
    out["seeds"] = grouped["seed"].agg(lambda s: [int(x) for x in s])
    out["values"] = grouped["_value"].agg(list)
    out = out.reset_index()
    out["n_seeds"] = out["n_seeds"].astype("int64")
    return out


def mean_std_label(mean: float, std: float, digits: int = 3) -> str:
    """Table cell text for a mean and its std over seeds.

    Example:
        >>> mean_std_label(0.51234, 0.0337)
        '0.512 ± 0.034'
        >>> mean_std_label(0.51234, float("nan")), mean_std_label(float("nan"), 0.1)
        ('0.512', '—')
    """
    if mean is None or not math.isfinite(float(mean)):
        return MISSING
    if std is None or not math.isfinite(float(std)):
        return f"{float(mean):.{digits}f}"
    return f"{float(mean):.{digits}f} ± {float(std):.{digits}f}"
