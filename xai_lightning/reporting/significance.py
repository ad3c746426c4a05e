"""Whether a difference between two attribution methods holds across seeds: paired tests and report sentences.

Each pair of methods is compared seed by seed (Wilcoxon signed-rank + bootstrap CI of the mean difference).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from itertools import combinations

import numpy as np
import pandas as pd
from scipy import stats

from xai_lightning.metrics.names import OVERALL, metric_label
from xai_lightning.reporting.seeds import require_columns

__all__ = ["paired_comparisons", "significance_sentences"]


def _wilcoxon_p(diffs: np.ndarray, seed: int) -> float:
    """Two-sided Wilcoxon signed-rank p of non-zero paired differences, deterministic.

    Exact without ties; with tied |differences| scipy's default would fall back
    to a permutation test with an unseeded generator beyond 13 seeds, so the
    permutation test gets a seeded one (it enumerates all signs up to 13 seeds).
    """
    n = diffs.size
    if n > 50:
        method: str | stats.PermutationMethod = "asymptotic"
    elif np.unique(np.abs(diffs)).size < n:
        method = stats.PermutationMethod(rng=np.random.default_rng(seed))
    else:
        method = "exact"
    return float(stats.wilcoxon(diffs, alternative="two-sided", method=method).pvalue)


def _comparison_rows(
    per_seed: pd.DataFrame, metric: str, split: str, class_: str, methods: Sequence[str] | None
) -> tuple[pd.DataFrame, list[str]]:
    """The per-seed rows of one metric, split and class, and the methods to compare (checked to exist)."""
    require_columns(per_seed, ["seed", "method", "metric", "split", "class", "value"], "per_seed")
    selected = per_seed[
        (per_seed["metric"] == metric) & (per_seed["split"] == split) & (per_seed["class"] == class_)
    ]
    if selected.empty:
        raise ValueError(f"no per-seed rows for metric={metric!r}, split={split!r}, class={class_!r}")
    available = sorted(selected["method"].unique())
    methods = available if methods is None else list(methods)
    unknown = [m for m in methods if m not in available]
    if unknown:
        raise ValueError(
            f"method(s) {unknown} have no {metric!r} values on {split}/{class_}; the runs have {available}"
        )
    if "experiment" not in selected.columns:
        selected = selected.assign(experiment="")
    return selected, methods


def _wilcoxon(diffs: np.ndarray, seed: int, alpha: float) -> tuple[float, float, list[str]]:
    """Wilcoxon p of the paired differences, the smallest p their count allows, and notes on what limits the test."""
    n = diffs.size
    n_nonzero = int(np.count_nonzero(diffs))
    p_min = 2.0 / 2.0**n_nonzero if n_nonzero else math.nan
    if n < 2:
        return math.nan, p_min, [f"{n} paired seed(s): no test possible"]
    if n_nonzero == 0:
        return 1.0, p_min, ["all differences are zero"]
    notes = []
    if n_nonzero < n:
        notes.append(f"{n - n_nonzero} zero difference(s) dropped by the Wilcoxon test")
    if p_min >= alpha:
        notes.append(
            f"with {n_nonzero} non-zero differences the smallest achievable p is {p_min:.3g} "
            f"≥ alpha = {alpha:g}; run more seeds"
        )
    return _wilcoxon_p(diffs[diffs != 0], seed), p_min, notes


def _bootstrap_ci(diffs: np.ndarray, n_boot: int, seed: int, alpha: float) -> tuple[float, float]:
    """Percentile bootstrap CI (level 1 − alpha) of the mean difference, resampling seeds; NaN without any."""
    if diffs.size < 1:
        return math.nan, math.nan
    # One (n_boot, n) draw of seed indices: every resample at once.
    index = np.random.default_rng(seed).integers(0, diffs.size, size=(n_boot, diffs.size))
    boot_means = diffs[index].mean(axis=1)
    low, high = np.percentile(boot_means, [100 * alpha / 2, 100 * (1 - alpha / 2)])
    return float(low), float(high)


def _paired_test(a: np.ndarray, b: np.ndarray, n_boot: int, seed: int, alpha: float) -> dict:
    """The comparison of two methods' per-seed values on the seeds where both are finite."""
    paired = np.isfinite(a) & np.isfinite(b)
    a, b = a[paired], b[paired]
    diffs = a - b
    n = diffs.size
    p_value, p_min, notes = _wilcoxon(diffs, seed, alpha)
    ci_low, ci_high = _bootstrap_ci(diffs, n_boot, seed, alpha)
    return {
        "n_seeds": n,
        "mean_a": float(a.mean()) if n else math.nan,
        "mean_b": float(b.mean()) if n else math.nan,
        "mean_diff": float(diffs.mean()) if n else math.nan,
        "p_value": p_value,
        "p_min": p_min,
        "ci_low": ci_low,
        "ci_high": ci_high,
        "alpha": alpha,
        "holds": bool(n >= 2 and p_value < alpha and (ci_low > 0 or ci_high < 0)),
        "note": "; ".join(notes),
    }


def paired_comparisons(
    per_seed: pd.DataFrame,
    metric: str = "win_rate",
    split: str = "test",
    class_: str = OVERALL,
    methods: Sequence[str] | None = None,
    n_boot: int = 10_000,
    seed: int = 0,
    alpha: float = 0.05,
) -> pd.DataFrame:
    """For each pair of methods, whether one beats the other on ``metric`` across seeds.

    The comparison is paired by seed: only seeds where both methods have a
    finite value count, and ``mean_a``/``mean_b`` are over those seeds, so
    ``mean_diff = mean_a - mean_b``. Two checks must agree for ``holds``:

    - Wilcoxon signed-rank test (two-sided) of the per-seed differences; zero
      differences are dropped (Wilcoxon's rule), all-zero differences give
      p = 1. With few seeds the test cannot reach small p: with n non-zero
      differences the smallest achievable p is 2 / 2^n (0.0625 for 5 seeds,
      0.0078 for 8, 0.002 for 10), reported in ``p_min``; when it is not below
      ``alpha``, ``note`` says so — run more seeds.
    - Percentile bootstrap CI (level 1 − alpha) of the mean difference,
      resampling seeds with replacement; each pair draws from a fresh
      ``numpy.random.default_rng(seed)``, so adding a method does not change the
      CI of another pair.

    ``holds`` is True when n_seeds ≥ 2, p < alpha and the CI excludes 0. Pairs
    are (methods[i], methods[j]) for i < j, ``methods`` defaulting to the sorted
    method names; with several experiments in ``per_seed`` each is compared
    within itself.

    Example:
        >>> per_seed = pd.DataFrame({"experiment": "e", "split": "test", "class": "overall", "metric": "win_rate",
        ...     "seed": list(range(8)) * 2, "method": ["a"] * 8 + ["b"] * 8,
        ...     "value": [0.6, 0.7, 0.65, 0.8, 0.75, 0.62, 0.71, 0.69] + [0.4, 0.3, 0.35, 0.2, 0.25, 0.38, 0.29, 0.31]})
        >>> c = paired_comparisons(per_seed)
        >>> c[["method_a", "method_b", "n_seeds", "p_value", "holds"]]
          method_a method_b  n_seeds   p_value  holds
        0        a        b        8  0.007812   True
    """
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must lie in (0, 1), got {alpha}")
    if n_boot < 1:
        raise ValueError(f"n_boot must be at least 1, got {n_boot}")
    selected, methods = _comparison_rows(per_seed, metric, split, class_, methods)
    records = []
    for experiment, rows in selected.groupby("experiment", sort=True):
        if rows.duplicated(["seed", "method"]).any():
            raise ValueError(f"experiment {experiment!r} has several {metric!r} rows per seed and method")
        wide = rows.pivot(index="seed", columns="method", values="value").astype("float64")
        for method_a, method_b in combinations(methods, 2):
            a = wide[method_a].to_numpy() if method_a in wide else np.array([])
            b = wide[method_b].to_numpy() if method_b in wide else np.array([])
            pair = {"experiment": experiment, "split": split, "class": class_, "metric": metric,
                    "method_a": method_a, "method_b": method_b}
            records.append({**pair, **_paired_test(a, b, n_boot, seed, alpha)})
    return pd.DataFrame.from_records(records)


def _p_text(p: float) -> str:
    return "p < 0.001" if p < 0.001 else f"p = {p:.3g}"


def significance_sentences(comparisons: pd.DataFrame, digits: int = 3) -> list[str]:
    """One plain-English line per compared pair, for report.md.

    A pair that holds is stated with the winner first and a positive
    difference; any other pair reads "No reliable difference", with the numbers
    that say why.

    Example:
        >>> row = {"experiment": "e", "split": "test", "class": "overall", "metric": "win_rate",
        ...     "method_a": "saliency", "method_b": "input_x_gradient", "n_seeds": 10, "mean_diff": -0.31,
        ...     "p_value": 0.001953125, "ci_low": -0.48, "ci_high": -0.12, "alpha": 0.05, "holds": True, "note": ""}
        >>> claim, numbers = significance_sentences(pd.DataFrame([row]))[0].split(": ")
        >>> claim
        'input_x_gradient beats saliency on test win-rate (overall)'
        >>> numbers
        '+0.310 (95% CI 0.120 to 0.480, Wilcoxon p = 0.00195, 10 seeds).'
    """
    lines = []
    for row in comparisons.to_dict("records"):
        what = f"{row['split']} {metric_label(row['metric'])} ({row['class']})"
        level = f"{100 * (1 - row['alpha']):g}% CI"
        a, b, diff, low, high = row["method_a"], row["method_b"], row["mean_diff"], row["ci_low"], row["ci_high"]
        n = int(row["n_seeds"])
        if row["holds"] and diff < 0:
            # State the winner first so the difference reads as a gain.
            a, b, diff, low, high = b, a, -diff, -high, -low
        numbers = f"({level} {low:.{digits}f} to {high:.{digits}f}, Wilcoxon {_p_text(row['p_value'])}, {n} seeds)"
        if row["holds"]:
            lines.append(f"{a} beats {b} on {what}: {diff:+.{digits}f} {numbers}.")
            continue
        detail = f"only {n} paired seed(s), no test possible" if n < 2 else f"{diff:+.{digits}f} {numbers}"
        line = f"No reliable difference between {a} and {b} on {what}: {detail}."
        if row.get("note") and n >= 2:  # with < 2 seeds the detail already says it
            line += f" Note: {row['note']}."
        lines.append(line)
    return lines
