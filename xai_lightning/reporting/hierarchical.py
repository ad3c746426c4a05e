"""Confidence intervals with the image as a unit: a hierarchical bootstrap over seeds and images.

The per-seed tests of :mod:`.significance` see one value per seed; here seeds and images are both resampled, so a
claim also has to survive other images of the same kind (means, paired differences, "beats the best reference").
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import combinations

import numpy as np
import pandas as pd

from xai_lightning.metrics.names import DEFAULT_WIN_TIES
from xai_lightning.reporting.seeds import PER_IMAGE_COLUMNS, finite, require_columns, win_credits

__all__ = [
    "HIERARCHICAL_N_BOOT",
    "REFERENCE_METHODS",
    "beats_best_reference",
    "hierarchical_comparisons",
    "hierarchical_means",
    "image_values",
]

#: Baselines that know nothing of the model (uniform noise, a centred blob, an edge map): a method worth reporting
#: should beat the best of them. ``segmentation_head`` is deliberately absent: it is trained on the masks, a
#: supervised upper reference, not a baseline to beat. A table may hold any subset of these, or none.
REFERENCE_METHODS = ("random", "center_prior", "edge")

#: Replicates of the hierarchical bootstrap. Fewer than the per-seed bootstrap's 10 000 because every replicate also
#: resamples every image: on 10 seeds × 200 images × 12 methods × 2 splits the report's section takes about 1.5 s
#: with 2000 (about 5 s with 10 000, 2 CPU cores), and the CI ends move by less than 0.002 between generator seeds.
HIERARCHICAL_N_BOOT = 2000

#: A claim needs at least two seeds: with one, the CI cannot see how much another training run would change it.
MIN_SEEDS = 2

MEANS_COLUMNS = [
    "experiment",
    "split",
    "metric",
    "method",
    "estimate",
    "ci_low",
    "ci_high",
    "n_seeds",
    "n_images",
    "alpha",
]
PAIR_COLUMNS = [
    "experiment",
    "split",
    "metric",
    "method_a",
    "method_b",
    "mean_a",
    "mean_b",
    "mean_diff",
    "ci_low",
    "ci_high",
    "n_seeds",
    "n_images",
    "alpha",
    "holds",
]
REFERENCE_COLUMNS = [
    "experiment",
    "split",
    "metric",
    "method",
    "reference",
    "mean",
    "reference_mean",
    "mean_diff",
    "ci_low",
    "ci_high",
    "n_seeds",
    "n_images",
    "alpha",
    "beats",
]

#: One image across seeds, within an experiment and split: the same file is the same image in every seed.
_IMAGE_IDENTITY = ["class", "image_id"]
_VALUE_COLUMNS = ["experiment", "seed", "split", "class", "image_id", "method", "metric", "value"]


def image_values(
    per_image: pd.DataFrame, metric: str, methods: Sequence[str] | None = None, win_ties: str = DEFAULT_WIN_TIES
) -> pd.DataFrame:
    """One value per seed × image × method of ``metric``: what the hierarchical bootstrap resamples.

    ``win_rate`` is read as each image's win credit (:func:`.seeds.win_credits`; ``methods`` are the methods that
    compete for each image, default all of the run's); any other metric as its own rows of ``per_image``. NaN
    marks an image left out (empty mask, excluded from the win-rate, ±inf).

    Example:
        >>> per_image = pd.DataFrame({"experiment": "e", "seed": 0, "split": "test", "class": "crack",
        ...     "image_id": ["a", "a", "b", "b"], "method": ["x", "y"] * 2, "metric": "tko",
        ...     "value": [0.9, 0.1, 0.5, 0.5]})
        >>> image_values(per_image, "win_rate")[["image_id", "method", "metric", "value"]]
          image_id method    metric  value
        0        a      x  win_rate    1.0
        1        a      y  win_rate    0.0
        2        b      x  win_rate    0.5
        3        b      y  win_rate    0.5
    """
    if metric == "win_rate":
        rows = win_credits(per_image, methods=methods, ties=win_ties).assign(metric="win_rate")
    else:
        require_columns(per_image, PER_IMAGE_COLUMNS, "per_image")
        rows = per_image.loc[per_image["metric"] == metric, list(PER_IMAGE_COLUMNS)]
        rows = rows.assign(value=finite(rows["value"]))
    return rows[_VALUE_COLUMNS].reset_index(drop=True)


@dataclass(frozen=True)
class _ImageGrid:
    """The values of one experiment × split × metric as a matrix: a row per (seed, image), a column per method.

    ``seed_of`` and ``image_of`` give each row's seed and image as positions (0 … n-1). An image has the same
    position in every seed that has it, which lets one image draw serve every resampled seed.
    """

    values: pd.DataFrame
    seed_of: np.ndarray
    image_of: np.ndarray

    @property
    def n_seeds(self) -> int:
        return int(self.seed_of.max()) + 1

    @property
    def n_images(self) -> int:
        return int(self.image_of.max()) + 1


def _grid(rows: pd.DataFrame, metric: str) -> _ImageGrid:
    """The grid of one experiment's rows on one split; images without any finite value take no part."""
    key = ["seed", *_IMAGE_IDENTITY, "method"]
    duplicated = rows.duplicated(key)
    if duplicated.any():
        first = rows.loc[duplicated, key].iloc[0].to_dict()
        raise ValueError(f"{int(duplicated.sum())} duplicate {metric!r} value(s), e.g. {first}")
    wide = rows.set_index(key)["value"].astype("float64").unstack("method")
    # Drawing an image that counts for no method would only make the number of useful draws random.
    wide = wide[np.isfinite(wide.to_numpy()).any(axis=1)]
    keys = wide.index.to_frame(index=False)
    image_of = keys.groupby(_IMAGE_IDENTITY, sort=True).ngroup().to_numpy()
    seed_of = keys.groupby("seed", sort=True).ngroup().to_numpy()
    return _ImageGrid(wide.reset_index(drop=True), seed_of, image_of)


def _grids(
    values: pd.DataFrame, split: str, methods: Sequence[str] | None, n_boot: int, alpha: float
) -> tuple[str, list[str], dict[object, _ImageGrid]]:
    """The metric, the methods to report (checked to exist) and one grid per experiment of ``values`` on ``split``."""
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must lie in (0, 1), got {alpha}")
    if n_boot < 1:
        raise ValueError(f"n_boot must be at least 1, got {n_boot}")
    require_columns(values, _VALUE_COLUMNS, "values")
    metrics = sorted(values["metric"].unique())
    if len(metrics) != 1:
        raise ValueError(f"values must hold one metric (see image_values); they hold {metrics}")
    selected = values[values["split"] == split]
    if selected.empty:
        raise ValueError(f"no {metrics[0]!r} values on split {split!r}; the values have {sorted(set(values['split']))}")
    available = sorted(selected["method"].unique())
    methods = available if methods is None else list(dict.fromkeys(methods))
    unknown = [m for m in methods if m not in available]
    if unknown:
        raise ValueError(f"method(s) {unknown} have no {metrics[0]!r} values on {split!r}; the runs have {available}")
    grids = {}
    for experiment, rows in selected.groupby("experiment", sort=True):
        grid = _grid(rows, metrics[0])
        if len(grid.values):
            grids[experiment] = _ImageGrid(grid.values.reindex(columns=available), grid.seed_of, grid.image_of)
    return metrics[0], methods, grids


def _draw_counts(rng: np.random.Generator, n_boot: int, n: int) -> np.ndarray:
    """``n`` positions drawn with replacement per replicate, as how often each is drawn: an (n_boot, n) array."""
    positions = rng.integers(0, n, size=(n_boot, n))
    flat = (np.arange(n_boot)[:, None] * n + positions).ravel()
    return np.bincount(flat, minlength=n_boot * n).reshape(n_boot, n).astype("float64")


def _drawn_images(counts: np.ndarray, present: np.ndarray) -> np.ndarray:
    """Per replicate and column, how many drawn images have a value: ``counts @ present``, computed cheaply.

    Most columns have a value for every image of a seed; they share one row sum instead of a product each.
    """
    complete = present.all(axis=0)
    drawn = np.empty((counts.shape[0], present.shape[1]))
    drawn[:, complete] = counts.sum(axis=1, keepdims=True)
    drawn[:, ~complete] = counts @ present[:, ~complete].astype("float64")
    return drawn


def _weighted_means(
    columns: np.ndarray, grid: _ImageGrid, image_counts: np.ndarray, seed_counts: np.ndarray
) -> np.ndarray:
    """Mean over seeds of each seed's mean over its images, images and seeds weighted by how often they are drawn.

    ``columns`` (rows of ``grid`` × k) may hold NaN: each column averages the images where it is finite, and a seed
    none of whose images is drawn (or finite) is left out of that replicate's mean over seeds (NaN when no seed is
    left). Counts of all ones give the point estimate. Returns an (n_replicates, k) array.
    """
    n_rep, k = image_counts.shape[0], columns.shape[1]
    total, weight = np.zeros((n_rep, k)), np.zeros((n_rep, k))
    for s in range(grid.n_seeds):
        rows = np.flatnonzero(grid.seed_of == s)
        counts = image_counts[:, grid.image_of[rows]]
        present = np.isfinite(columns[rows])
        numerator = counts @ np.where(present, columns[rows], 0.0)
        denominator = _drawn_images(counts, present)
        drawn = denominator > 0
        seed_mean = np.divide(numerator, denominator, out=np.zeros_like(numerator), where=drawn)
        total += seed_counts[:, [s]] * seed_mean
        weight += seed_counts[:, [s]] * drawn
    return np.divide(total, weight, out=np.full_like(total, np.nan), where=weight > 0)


def _point(columns: np.ndarray, grid: _ImageGrid) -> np.ndarray:
    """The columns' point estimates: every seed and image counted once."""
    return _weighted_means(columns, grid, np.ones((1, grid.n_images)), np.ones((1, grid.n_seeds)))[0]


def _distinct(positions: np.ndarray, n: int, present: np.ndarray) -> np.ndarray:
    """Per column of ``present``, how many of the ``n`` positions have at least one finite row."""
    hit = np.zeros((n, present.shape[1]), dtype=bool)
    np.logical_or.at(hit, positions, present)
    return hit.sum(axis=0)


@dataclass(frozen=True)
class _Estimates:
    """Per column: point estimate, percentile CI and the seeds and images behind it."""

    point: np.ndarray
    low: np.ndarray
    high: np.ndarray
    n_seeds: np.ndarray
    n_images: np.ndarray

    def fields(self, j: int) -> dict:
        """Column ``j``'s CI and counts as a table row's fields."""
        return {
            "ci_low": float(self.low[j]),
            "ci_high": float(self.high[j]),
            "n_seeds": int(self.n_seeds[j]),
            "n_images": int(self.n_images[j]),
        }

    def excludes_zero(self, j: int) -> bool:
        """Whether column ``j``'s CI excludes 0 with at least ``MIN_SEEDS`` seeds behind it."""
        return bool(self.n_seeds[j] >= MIN_SEEDS and (self.low[j] > 0 or self.high[j] < 0))


def _replicates(columns: np.ndarray, grid: _ImageGrid, n_boot: int, seed: int) -> np.ndarray:
    """(n_boot, k) bootstrap replicates of the columns' means, every column seeing the same seeds and images."""
    rng = np.random.default_rng(seed)
    # Images are drawn first, so adding seeds that hold the same images leaves the image draw as it was.
    image_counts = _draw_counts(rng, n_boot, grid.n_images)
    seed_counts = _draw_counts(rng, n_boot, grid.n_seeds)
    return _weighted_means(columns, grid, image_counts, seed_counts)


def _percentiles(replicates: np.ndarray, alpha: float) -> tuple[np.ndarray, np.ndarray]:
    """The (1 − alpha) percentile interval of each column of ``replicates`` (NaN for a column of NaN only)."""
    with warnings.catch_warnings():
        # A column without any finite value has only NaN replicates: its CI is NaN, and n_images = 0 says why.
        warnings.simplefilter("ignore", RuntimeWarning)
        low, high = np.nanpercentile(replicates, [100 * alpha / 2, 100 * (1 - alpha / 2)], axis=0)
    return low, high


def _bootstrap(columns: np.ndarray, grid: _ImageGrid, n_boot: int, seed: int, alpha: float) -> _Estimates:
    """Hierarchical bootstrap of the columns' means, every column seeing the same resampled seeds and images."""
    low, high = _percentiles(_replicates(columns, grid, n_boot, seed), alpha)
    present = np.isfinite(columns)
    return _Estimates(
        point=_point(columns, grid),
        low=low,
        high=high,
        n_seeds=_distinct(grid.seed_of, grid.n_seeds, present),
        n_images=_distinct(grid.image_of, grid.n_images, present),
    )


def _paired(wide: pd.DataFrame, pairs: Sequence[tuple[str, str]]) -> tuple[np.ndarray, np.ndarray]:
    """Per pair (a, b): the per-image differences a − b, and a's and b's values on the images both have.

    Returns the differences (rows × pairs) and the two methods' paired values (rows × 2·pairs: a, b, a, b, …).
    """
    a = wide[[p[0] for p in pairs]].to_numpy()
    b = wide[[p[1] for p in pairs]].to_numpy()
    differences = a - b
    both = np.isfinite(differences)
    paired = np.stack([np.where(both, a, np.nan), np.where(both, b, np.nan)], axis=2).reshape(len(wide), -1)
    return differences, paired


def hierarchical_means(
    values: pd.DataFrame,
    split: str = "test",
    methods: Sequence[str] | None = None,
    n_boot: int = HIERARCHICAL_N_BOOT,
    seed: int = 0,
    alpha: float = 0.05,
) -> pd.DataFrame:
    """Each method's mean of one metric with a hierarchical-bootstrap CI: how sure the report's mean is.

    ``values`` comes from :func:`image_values`. The point estimate is the mean over seeds of each seed's mean over
    its images (the report's mean over seeds). Each replicate resamples the seeds with replacement and the images
    with replacement. Seeds re-use the same test images, so one image draw serves every resampled seed (an image
    drawn twice counts twice in each seed that has it): an image seen by ten seeds is still one image, not ten
    pieces of independent evidence. A seed without some image, or a NaN value, leaves that image out of that seed's
    mean, so seeds may hold different numbers of images. Percentile CI of level 1 − alpha, from a fresh
    ``numpy.random.default_rng(seed)`` per experiment: the same inputs always give the same CI.

    Columns: ``experiment, split, metric, method, estimate, ci_low, ci_high, n_seeds, n_images, alpha``, where
    ``n_images`` counts the distinct images (over all seeds) with a value.

    Example:
        >>> values = pd.DataFrame({"experiment": "e", "seed": 0, "split": "test", "class": "crack",
        ...     "image_id": ["a", "b", "c"], "method": "x", "metric": "tko", "value": 0.5})
        >>> hierarchical_means(values, n_boot=100)[["method", "estimate", "ci_low", "ci_high", "n_images"]]
          method  estimate  ci_low  ci_high  n_images
        0      x       0.5     0.5      0.5         3
    """
    metric, methods, grids = _grids(values, split, methods, n_boot, alpha)
    records = []
    for experiment, grid in grids.items():
        estimates = _bootstrap(grid.values[methods].to_numpy(), grid, n_boot, seed, alpha)
        for j, method in enumerate(methods):
            records.append(
                {
                    "experiment": experiment,
                    "split": split,
                    "metric": metric,
                    "method": method,
                    "estimate": float(estimates.point[j]),
                    **estimates.fields(j),
                    "alpha": alpha,
                }
            )
    return pd.DataFrame.from_records(records, columns=MEANS_COLUMNS)


def hierarchical_comparisons(
    values: pd.DataFrame,
    split: str = "test",
    methods: Sequence[str] | None = None,
    n_boot: int = HIERARCHICAL_N_BOOT,
    seed: int = 0,
    alpha: float = 0.05,
) -> pd.DataFrame:
    """For each pair of methods, whether one beats the other over seeds and images alike.

    The bootstrap of :func:`hierarchical_means` applied to the per-image difference a − b: paired, since both
    methods see the same resampled seeds and images, and only images where both have a value count. ``mean_diff``
    is the point estimate of that difference, ``mean_a`` and ``mean_b`` the two means over the same images.
    ``holds`` is True when the CI excludes 0 with at least ``MIN_SEEDS`` seeds behind it. Pairs are
    (methods[i], methods[j]) for i < j, ``methods`` defaulting to the sorted names, as in
    :func:`.significance.paired_comparisons`, so that the two tables can be joined pair by pair.

    Columns: ``experiment, split, metric, method_a, method_b, mean_a, mean_b, mean_diff, ci_low, ci_high, n_seeds,
    n_images, alpha, holds``.

    Example:
        >>> values = pd.DataFrame({"experiment": "e", "seed": [0] * 4 + [1] * 4, "split": "test", "class": "crack",
        ...     "image_id": ["a", "a", "b", "b"] * 2, "method": ["x", "y"] * 4, "metric": "tko",
        ...     "value": [0.9, 0.2, 0.7, 0.3, 0.8, 0.1, 0.6, 0.5]})
        >>> c = hierarchical_comparisons(values, n_boot=200)
        >>> c[["method_a", "method_b", "mean_diff", "n_seeds", "n_images", "holds"]]
          method_a method_b  mean_diff  n_seeds  n_images  holds
        0        x        y      0.475        2         2   True
    """
    metric, methods, grids = _grids(values, split, methods, n_boot, alpha)
    pairs = list(combinations(methods, 2))
    if not pairs:
        return pd.DataFrame(columns=PAIR_COLUMNS)
    records = []
    for experiment, grid in grids.items():
        differences, paired = _paired(grid.values, pairs)
        estimates = _bootstrap(differences, grid, n_boot, seed, alpha)
        means = _point(paired, grid).reshape(-1, 2)
        for j, (a, b) in enumerate(pairs):
            records.append(
                {
                    "experiment": experiment,
                    "split": split,
                    "metric": metric,
                    "method_a": a,
                    "method_b": b,
                    "mean_a": float(means[j, 0]),
                    "mean_b": float(means[j, 1]),
                    "mean_diff": float(estimates.point[j]),
                    **estimates.fields(j),
                    "alpha": alpha,
                    "holds": estimates.excludes_zero(j),
                }
            )
    return pd.DataFrame.from_records(records, columns=PAIR_COLUMNS)


def _best_reference(grid: _ImageGrid, references: Sequence[str]) -> str | None:
    """The reference with the highest point-estimate mean in ``grid``; None when no reference has a value.

    Ties go to the reference listed first in ``references``, so the choice never depends on column order.
    """
    present = [r for r in references if r in grid.values.columns]
    points = _point(grid.values[present].to_numpy(), grid) if present else np.array([])
    if not np.isfinite(points).any():
        return None
    return present[int(np.nanargmax(points))]


def beats_best_reference(
    values: pd.DataFrame,
    split: str = "test",
    methods: Sequence[str] | None = None,
    references: Sequence[str] = REFERENCE_METHODS,
    n_boot: int = HIERARCHICAL_N_BOOT,
    seed: int = 0,
    alpha: float = 0.05,
) -> pd.DataFrame:
    """Per method, whether it beats the strongest reference baseline, with a hierarchical-bootstrap CI.

    Per experiment the best reference is the one of ``references`` present in ``values`` with the highest
    point-estimate mean; every method of ``methods`` (default: all) that is not a reference is compared with it
    through the paired difference method − reference of :func:`hierarchical_comparisons`. ``beats`` is True when
    the CI's lower bound is above 0 with at least ``MIN_SEEDS`` seeds behind it. ``mean`` and ``reference_mean``
    are the two means over the images both have. An experiment without any reference gives no rows, so the frame
    is empty when no reference was run.

    Columns: ``experiment, split, metric, method, reference, mean, reference_mean, mean_diff, ci_low, ci_high,
    n_seeds, n_images, alpha, beats``.

    Example:
        >>> values = pd.DataFrame({"experiment": "e", "seed": [0] * 6 + [1] * 6, "split": "test", "class": "crack",
        ...     "image_id": ["a"] * 3 + ["b"] * 3 + ["a"] * 3 + ["b"] * 3, "metric": "tko",
        ...     "method": ["gradcam", "random", "center_prior"] * 4,
        ...     "value": [0.8, 0.1, 0.3, 0.7, 0.0, 0.2, 0.9, 0.1, 0.4, 0.6, 0.1, 0.3]})
        >>> beats_best_reference(values, n_boot=200)[["method", "reference", "mean_diff", "beats"]].round(3)
            method     reference  mean_diff  beats
        0  gradcam  center_prior       0.45   True
    """
    metric, methods, grids = _grids(values, split, methods, n_boot, alpha)
    candidates = [m for m in methods if m not in set(references)]
    records = []
    for experiment, grid in grids.items():
        reference = _best_reference(grid, references)
        if reference is None or not candidates:
            continue
        differences, paired = _paired(grid.values, [(m, reference) for m in candidates])
        estimates = _bootstrap(differences, grid, n_boot, seed, alpha)
        means = _point(paired, grid).reshape(-1, 2)
        for j, method in enumerate(candidates):
            records.append(
                {
                    "experiment": experiment,
                    "split": split,
                    "metric": metric,
                    "method": method,
                    "reference": reference,
                    "mean": float(means[j, 0]),
                    "reference_mean": float(means[j, 1]),
                    "mean_diff": float(estimates.point[j]),
                    **estimates.fields(j),
                    "alpha": alpha,
                    "beats": bool(estimates.n_seeds[j] >= MIN_SEEDS and estimates.low[j] > 0),
                }
            )
    return pd.DataFrame.from_records(records, columns=REFERENCE_COLUMNS)


def hierarchical_change(
    values: pd.DataFrame,
    before: str,
    after: str,
    split: str = "test",
    n_boot: int = HIERARCHICAL_N_BOOT,
    seed: int = 0,
    alpha: float = 0.05,
) -> dict:
    """How the mean of ``after`` differs from that of ``before``, each over the images it has, with a CI.

    Unlike :func:`hierarchical_comparisons`, which pairs two methods image by image (only images both have
    count), this compares the two *reported means*: when ``after`` scores another set of images (an arm that
    classifies other images correctly, all images instead of the correct ones) that is what changed. Both means
    are taken from the same replicates (the same resampled seeds and images), so what they share cancels.
    Returns ``{"change", "ci_low", "ci_high", "holds"}`` (NaN and False when a side has no value).

    Example:
        >>> values = pd.DataFrame({"experiment": "e", "seed": [0, 0, 1, 1], "split": "test", "class": "crack",
        ...     "image_id": ["a", "a", "a", "a"], "method": ["x", "y"] * 2, "metric": "tko",
        ...     "value": [0.2, 0.6, 0.3, 0.7]})
        >>> change = hierarchical_change(values, "x", "y", n_boot=200)
        >>> round(change["change"], 3), round(change["ci_low"], 3), round(change["ci_high"], 3), change["holds"]
        (0.4, 0.4, 0.4, True)
    """
    _, _, grids = _grids(values, split, [before, after], n_boot, alpha)
    if len(grids) != 1:
        raise ValueError(f"values must hold one experiment, they hold {len(grids)}")
    (grid,) = grids.values()
    columns = grid.values[[before, after]].to_numpy()
    replicates = _replicates(columns, grid, n_boot, seed)
    point = _point(columns, grid)
    low, high = _percentiles(replicates[:, 1] - replicates[:, 0], alpha)
    n_seeds = _distinct(grid.seed_of, grid.n_seeds, np.isfinite(columns)).min()
    holds = bool(n_seeds >= MIN_SEEDS and (low > 0 or high < 0))
    return {"change": float(point[1] - point[0]), "ci_low": float(low), "ci_high": float(high), "holds": holds}
