"""Aggregation of per-image attribution results: per-seed summaries, mean ± std over seeds, significance.

Follows shared/docs/metrics.md ("Win-rate", "Across seeds"); every function takes and returns tidy pandas frames.

The input is the long ``per_image`` table, one row per experiment × seed × split ×
image × method × metric (columns ``experiment, seed, split, image_id, class,
method, metric, value``). ``per_seed_summary`` reduces it to one value per
(experiment, seed, split, class, method, metric), ``across_seeds`` to mean ± std
over seeds, and ``paired_comparisons`` asks, for each pair of methods, whether a
difference holds across seeds (Wilcoxon signed-rank + bootstrap CI).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from itertools import combinations

import numpy as np
import pandas as pd
from scipy import stats

from xai_lightning.metrics.sanity import sanity_verdict

__all__ = [
    "TIE_ATOL",
    "across_seeds",
    "agreement_square",
    "agreement_summary",
    "excluded_counts",
    "mean_std_label",
    "paired_comparisons",
    "per_seed_summary",
    "randomization_summary",
    "significance_sentences",
    "stability_summary",
    "win_credits",
]

# metrics.md: methods whose TKO is within 1e-9 of the image's best all win.
TIE_ATOL = 1e-9

PER_IMAGE_COLUMNS = ("experiment", "seed", "split", "image_id", "class", "method", "metric", "value")
# One image of one run. ``class`` is part of the key because MVTec file names
# (000.png, 001.png, …) repeat across defect classes; an image has one class, so
# the extra key never splits an image whose id is already unique.
IMAGE_KEY = ["experiment", "seed", "split", "class", "image_id"]
RUN_KEY = ["experiment", "seed", "split"]
SUMMARY_COLUMNS = ["experiment", "seed", "split", "class", "method", "metric", "value", "n_images"]


def _require_columns(frame: pd.DataFrame, required: Sequence[str], what: str) -> None:
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise ValueError(f"{what} lacks column(s) {missing}; it has {list(frame.columns)}")


def _finite(values: pd.Series) -> pd.Series:
    """Float copy with ±inf turned into NaN, so that pandas' NaN-skipping reductions skip them too."""
    values = values.astype("float64")
    return values.where(np.isfinite(values))


def win_credits(
    per_image: pd.DataFrame,
    methods: Sequence[str] | None = None,
    atol: float = TIE_ATOL,
) -> pd.DataFrame:
    """Win credit of each method on each image, from the ``tko`` rows of ``per_image``.

    Per image the winners are the methods whose TKO is within ``atol`` of the
    image's best; each winner gets ``1 / #winners``, every other method 0. The
    compared methods are ``methods`` (default: every method with a TKO row in
    that experiment × seed × split). An image where any compared method's TKO is
    NaN (empty mask) or missing is excluded: its rows keep ``value`` NaN and
    ``excluded`` True, so they can be counted (``excluded_counts``) rather than
    silently dropped. Nothing depends on the order in which methods are listed.

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
    _require_columns(per_image, PER_IMAGE_COLUMNS, "per_image")
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

    tko["value"] = _finite(tko["value"])
    image = tko.groupby(IMAGE_KEY, sort=False, dropna=False)["value"]
    # An image must carry a finite TKO for every method compared in its run; a
    # missing row counts like a NaN, so a crashed method cannot win by absence.
    if methods is None:
        n_compared = tko.groupby(RUN_KEY, sort=False, dropna=False)["method"].transform("nunique")
    else:
        n_compared = len(set(methods))
    excluded = image.transform("count") < n_compared

    # Every method is compared with the image's maximum (never with a neighbour
    # in a sorted order), so the winner set does not depend on listing order.
    winner = (image.transform("max") - tko["value"]).abs() <= atol
    n_winners = winner.groupby([tko[k] for k in IMAGE_KEY], sort=False, dropna=False).transform("sum")
    credit = winner.astype("float64") / n_winners.where(n_winners > 0)

    return tko.assign(metric="win_credit", value=credit.where(~excluded), excluded=excluded.to_numpy())


def excluded_counts(
    per_image: pd.DataFrame,
    methods: Sequence[str] | None = None,
    classes_overall_name: str = "overall",
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
    credits = win_credits(per_image, methods=methods)
    images = credits.drop_duplicates(IMAGE_KEY)
    by_class = images.groupby(RUN_KEY + ["class"], sort=True, dropna=False)["excluded"].agg(
        n_images="size", n_excluded="sum"
    )
    overall = images.groupby(RUN_KEY, sort=True, dropna=False)["excluded"].agg(n_images="size", n_excluded="sum")
    overall = overall.reset_index().assign(**{"class": classes_overall_name})
    out = pd.concat([by_class.reset_index(), overall], ignore_index=True)
    out["n_excluded"] = out["n_excluded"].astype("int64")
    columns = RUN_KEY + ["class", "n_images", "n_excluded"]
    return out[columns].sort_values(RUN_KEY + ["class"], kind="stable", ignore_index=True)


def per_seed_summary(
    per_image: pd.DataFrame,
    classes_overall_name: str = "overall",
    methods: Sequence[str] | None = None,
) -> pd.DataFrame:
    """One value per experiment × seed × split × class × method × metric.

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
    _require_columns(per_image, PER_IMAGE_COLUMNS, "per_image")
    if (per_image["class"] == classes_overall_name).any():
        raise ValueError(
            f"a class is named {classes_overall_name!r}, the name reserved for the pooled value; "
            "pass another classes_overall_name"
        )
    rows = per_image.loc[per_image["metric"] != "win_credit", list(PER_IMAGE_COLUMNS)]
    rows = rows.assign(value=_finite(rows["value"]))
    credits = win_credits(per_image, methods=methods)
    if len(credits):
        rows = pd.concat([rows, credits[list(PER_IMAGE_COLUMNS)].assign(metric="win_rate")], ignore_index=True)

    keys = ["experiment", "seed", "split", "method", "metric"]
    by_class = rows.groupby(keys + ["class"], sort=False, dropna=False)["value"].agg(value="mean", n_images="count")
    overall = rows.groupby(keys, sort=False, dropna=False)["value"].agg(value="mean", n_images="count")
    overall = overall.reset_index().assign(**{"class": classes_overall_name})
    out = pd.concat([by_class.reset_index(), overall], ignore_index=True)[SUMMARY_COLUMNS]
    out["n_images"] = out["n_images"].astype("int64")
    order = ["experiment", "seed", "split", "metric", "method", "class"]
    return out.sort_values(order, kind="stable", ignore_index=True)


def across_seeds(per_seed: pd.DataFrame, by: Sequence[str] | None = None, value: str = "value") -> pd.DataFrame:
    """Mean ± sample std over seeds of each group, keeping the per-seed values.

    ``by`` defaults to every column except ``seed``, ``value`` and ``n_images``;
    this works for ``per_seed_summary`` output and for ``model_metrics``
    (experiment, seed, split, metric, value) alike. Columns of the result:
    ``by`` + ``mean``, ``std`` (ddof = 1; NaN with one seed), ``n_seeds`` (seeds
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
    _require_columns(per_seed, ["seed", value], "per_seed")
    if by is None:
        by = [c for c in per_seed.columns if c not in {"seed", value, "n_images"}]
    by = list(by)
    _require_columns(per_seed, by, "per_seed")
    duplicated = per_seed.duplicated(by + ["seed"])
    if duplicated.any():
        raise ValueError(
            f"{int(duplicated.sum())} row(s) repeat a seed within a group of {by}; "
            "add the column that tells them apart to `by`"
        )
    frame = per_seed[by + ["seed"]].assign(_value=_finite(per_seed[value])).sort_values("seed", kind="stable")
    grouped = frame.groupby(by, sort=True, dropna=False)
    out = grouped["_value"].agg(mean="mean", std="std", n_seeds="count")
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
        return "—"
    if std is None or not math.isfinite(float(std)):
        return f"{float(mean):.{digits}f}"
    return f"{float(mean):.{digits}f} ± {float(std):.{digits}f}"


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


def paired_comparisons(
    per_seed: pd.DataFrame,
    metric: str = "win_rate",
    split: str = "test",
    class_: str = "overall",
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
    _require_columns(per_seed, ["seed", "method", "metric", "split", "class", "value"], "per_seed")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must lie in (0, 1), got {alpha}")
    if n_boot < 1:
        raise ValueError(f"n_boot must be at least 1, got {n_boot}")
    selected = per_seed[
        (per_seed["metric"] == metric) & (per_seed["split"] == split) & (per_seed["class"] == class_)
    ]
    if selected.empty:
        raise ValueError(f"no per-seed rows for metric={metric!r}, split={split!r}, class={class_!r}")
    available = sorted(selected["method"].unique())
    if methods is None:
        methods = available
    unknown = [m for m in methods if m not in available]
    if unknown:
        raise ValueError(
            f"method(s) {unknown} have no {metric!r} values on {split}/{class_}; the runs have {available}"
        )
    if "experiment" not in selected.columns:
        selected = selected.assign(experiment="")

    lower_q, upper_q = 100 * alpha / 2, 100 * (1 - alpha / 2)
    records = []
    for experiment, rows in selected.groupby("experiment", sort=True):
        if rows.duplicated(["seed", "method"]).any():
            raise ValueError(f"experiment {experiment!r} has several {metric!r} rows per seed and method")
        wide = rows.pivot(index="seed", columns="method", values="value").astype("float64")
        for method_a, method_b in combinations(methods, 2):
            a = wide[method_a].to_numpy() if method_a in wide else np.array([])
            b = wide[method_b].to_numpy() if method_b in wide else np.array([])
            paired = np.isfinite(a) & np.isfinite(b)
            a, b = a[paired], b[paired]
            diffs = a - b
            n = diffs.size
            n_nonzero = int(np.count_nonzero(diffs))
            notes = []
            p_value = math.nan
            ci_low = ci_high = math.nan
            p_min = 2.0 / 2.0**n_nonzero if n_nonzero else math.nan
            if n < 2:
                notes.append(f"{n} paired seed(s): no test possible")
            elif n_nonzero == 0:
                p_value = 1.0
                notes.append("all differences are zero")
            else:
                p_value = _wilcoxon_p(diffs[diffs != 0], seed)
                if n_nonzero < n:
                    notes.append(f"{n - n_nonzero} zero difference(s) dropped by the Wilcoxon test")
                if p_min >= alpha:
                    notes.append(
                        f"with {n_nonzero} non-zero differences the smallest achievable p is {p_min:.3g} "
                        f"≥ alpha = {alpha:g}; run more seeds"
                    )
            if n >= 1:
                # One (n_boot, n) draw of seed indices: every resample at once.
                index = np.random.default_rng(seed).integers(0, n, size=(n_boot, n))
                boot_means = diffs[index].mean(axis=1)
                ci_low, ci_high = (float(q) for q in np.percentile(boot_means, [lower_q, upper_q]))
            holds = bool(n >= 2 and p_value < alpha and (ci_low > 0 or ci_high < 0))
            records.append(
                {
                    "experiment": experiment,
                    "split": split,
                    "class": class_,
                    "metric": metric,
                    "method_a": method_a,
                    "method_b": method_b,
                    "n_seeds": n,
                    "mean_a": float(a.mean()) if n else math.nan,
                    "mean_b": float(b.mean()) if n else math.nan,
                    "mean_diff": float(diffs.mean()) if n else math.nan,
                    "p_value": p_value,
                    "p_min": p_min,
                    "ci_low": ci_low,
                    "ci_high": ci_high,
                    "alpha": alpha,
                    "holds": holds,
                    "note": "; ".join(notes),
                }
            )
    return pd.DataFrame.from_records(records)


METRIC_LABELS = {
    "win_rate": "win-rate",
    "tko": "TKO",
    "pointing_game": "pointing game",
    "relevance_mass": "relevance mass",
    "otsu_iou": "Otsu IoU",
    "otsu_precision": "Otsu precision",
    "otsu_recall": "Otsu recall",
    "pixel_auroc": "pixel AUROC",
}


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
        >>> significance_sentences(pd.DataFrame([row]))[0]
        'input_x_gradient beats saliency on test win-rate (overall): +0.310 (95% CI 0.120 to 0.480, Wilcoxon p = 0.00195, 10 seeds).'
    """
    lines = []
    for row in comparisons.to_dict("records"):
        what = f"{row['split']} {METRIC_LABELS.get(row['metric'], row['metric'])} ({row['class']})"
        level = f"{100 * (1 - row['alpha']):g}% CI"
        a, b, diff, low, high = row["method_a"], row["method_b"], row["mean_diff"], row["ci_low"], row["ci_high"]
        n = int(row["n_seeds"])
        if row["holds"]:
            if diff < 0:
                # State the winner first so the difference reads as a gain.
                a, b, diff, low, high = b, a, -diff, -high, -low
            lines.append(
                f"{a} beats {b} on {what}: {diff:+.{digits}f} "
                f"({level} {low:.{digits}f} to {high:.{digits}f}, Wilcoxon {_p_text(row['p_value'])}, {n} seeds)."
            )
            continue
        if n < 2:
            detail = f"only {n} paired seed(s), no test possible"
        else:
            detail = (
                f"{diff:+.{digits}f} ({level} {low:.{digits}f} to {high:.{digits}f}, "
                f"Wilcoxon {_p_text(row['p_value'])}, {n} seeds)"
            )
        line = f"No reliable difference between {a} and {b} on {what}: {detail}."
        if row.get("note") and n >= 2:  # with < 2 seeds the detail already says it
            line += f" Note: {row['note']}."
        lines.append(line)
    return lines


# --- "does the explanation tell the truth": sanity, stability, agreement -----------------------

RANDOMIZATION_COLUMNS = ("experiment", "seed", "split", "method", "step", "layer", "image_id", "class", "spearman")
RANDOMIZATION_SUMMARY_COLUMNS = ["experiment", "split", "seed", "method", "step", "layer", "value", "n_images"]
STABILITY_COLUMNS = ("experiment", "seed", "split", "method", "image_id", "class", "spearman", "iou")
AGREEMENT_COLUMNS = ("experiment", "seed", "split", "image_id", "class", "method_a", "method_b", "iou")
AGREEMENT_SUMMARY_COLUMNS = ["experiment", "split", "class", "method_a", "method_b", "iou", "std", "n_seeds"]


def randomization_summary(randomization: pd.DataFrame, threshold: float = 0.5) -> pd.DataFrame:
    """Mean |Spearman| per experiment × split × seed × method × randomisation step.

    The input is ``cascading_randomization``'s tidy output with the run's ids (columns
    ``experiment, seed, split, method, step, layer, image_id, class, spearman``). Each step is read
    exactly as :func:`xai_lightning.metrics.sanity.sanity_verdict` reads the last one (it is called
    on steps 0 and s of each seed): images whose intact map is constant (NaN at step 0) are left
    out, and a randomised map that became constant counts as 0. ``value`` is that mean, NaN for a
    method without a single informative image; ``n_images`` the images behind it.

    Example:
        >>> raw = pd.DataFrame({"experiment": "e", "seed": 0, "split": "test", "method": "m", "class": "crack",
        ...     "step": [0, 0, 1, 1], "layer": ["original"] * 2 + ["classifier"] * 2,
        ...     "image_id": ["a", "b", "a", "b"], "spearman": [1.0, float("nan"), float("nan"), 0.9]})
        >>> randomization_summary(raw)[["step", "layer", "value", "n_images"]]
           step     layer  value  n_images
        0     0  original    1.0         1
        1     1  classifier    0.0         1
    """
    _require_columns(randomization, RANDOMIZATION_COLUMNS, "randomization")
    frame = randomization.assign(spearman=_finite(randomization["spearman"]))
    # sanity_verdict keys an image by one column; an image is (class, image_id), since ids repeat across classes.
    frame["image"] = frame.groupby(["class", "image_id"], sort=False, dropna=False).ngroup()
    records = []
    for (experiment, split, seed), run in frame.groupby(["experiment", "split", "seed"], sort=True, dropna=False):
        layers = run.groupby("step", sort=True)["layer"].first()
        for step, layer in layers.items():
            verdict = sanity_verdict(run[run["step"].isin([0, step])], threshold=threshold)
            for method, row in verdict.iterrows():
                records.append(
                    {
                        "experiment": experiment,
                        "split": split,
                        "seed": seed,
                        "method": method,
                        "step": int(step),
                        "layer": layer,
                        "value": float(row["spearman"]),
                        "n_images": int(row["n_images"]),
                    }
                )
    out = pd.DataFrame.from_records(records, columns=RANDOMIZATION_SUMMARY_COLUMNS)
    return out.sort_values(["experiment", "split", "seed", "method", "step"], kind="stable", ignore_index=True)


def stability_summary(stability: pd.DataFrame) -> pd.DataFrame:
    """Run-to-run stability per experiment × split × seed × method: the image mean of Spearman and top-10 % IoU.

    Long form like ``per_seed_summary`` (``metric`` is ``spearman`` or ``iou``), ready for
    ``across_seeds``. NaN values (constant maps have no ranking) are skipped; ``n_images`` counts
    the images behind each mean.
    """
    _require_columns(stability, STABILITY_COLUMNS, "stability")
    long = stability.melt(
        id_vars=["experiment", "seed", "split", "method"], value_vars=["spearman", "iou"], var_name="metric"
    )
    long = long.assign(value=_finite(long["value"]))
    keys = ["experiment", "seed", "split", "method", "metric"]
    out = long.groupby(keys, sort=True, dropna=False)["value"].agg(value="mean", n_images="count").reset_index()
    out["n_images"] = out["n_images"].astype("int64")
    return out


def agreement_summary(agreement: pd.DataFrame, classes_overall_name: str = "overall") -> pd.DataFrame:
    """Cross-method agreement matrices: mean top-10 % IoU of each method pair, per experiment × split × class.

    Per seed the IoU is averaged over the images of a class (and over all images, as
    ``classes_overall_name``), then mean ± std over seeds. The input holds each unordered pair once;
    the result holds both orders and the diagonal (a method agrees with itself: 1), so that every
    experiment × split × class is a full symmetric matrix in long form, columns
    ``experiment, split, class, method_a, method_b, iou, std, n_seeds``.

    Example:
        >>> pairs = pd.DataFrame({"experiment": "e", "seed": [0, 0, 1], "split": "test", "class": "crack",
        ...     "image_id": ["a", "b", "a"], "method_a": "x", "method_b": "y", "iou": [0.2, 0.4, 0.5]})
        >>> s = agreement_summary(pairs)
        >>> s[s["class"] == "overall"][["method_a", "method_b", "iou", "n_seeds"]].reset_index(drop=True)
          method_a method_b  iou  n_seeds
        0        x        x  1.0        2
        1        x        y  0.4        2
        2        y        x  0.4        2
        3        y        y  1.0        2
    """
    _require_columns(agreement, AGREEMENT_COLUMNS, "agreement")
    if (agreement["class"] == classes_overall_name).any():
        raise ValueError(f"a class is named {classes_overall_name!r}, the name reserved for all images together")
    frame = agreement.assign(iou=_finite(agreement["iou"]))
    # One name order per pair, so that a pair listed as (a, b) by one seed and (b, a) by another is one pair.
    first = frame[["method_a", "method_b"]].min(axis=1)
    second = frame[["method_a", "method_b"]].max(axis=1)
    frame = frame.assign(method_a=first, method_b=second)
    pair = ["method_a", "method_b"]
    by_class = frame.groupby(["experiment", "split", "class", "seed", *pair], sort=False)["iou"].mean().reset_index()
    overall = frame.groupby(["experiment", "split", "seed", *pair], sort=False)["iou"].mean().reset_index()
    per_seed = pd.concat([by_class, overall.assign(**{"class": classes_overall_name})], ignore_index=True)
    across = across_seeds(per_seed, by=["experiment", "split", "class", *pair], value="iou")
    across = across.rename(columns={"mean": "iou"})[AGREEMENT_SUMMARY_COLUMNS]

    mirrored = across.rename(columns={"method_a": "method_b", "method_b": "method_a"})
    diagonal = []
    for (experiment, split, class_), group in across.groupby(["experiment", "split", "class"], sort=False):
        n_seeds = int(group["n_seeds"].max())
        for method in sorted(set(group["method_a"]) | set(group["method_b"])):
            diagonal.append((experiment, split, class_, method, method, 1.0, 0.0, n_seeds))
    diagonal = pd.DataFrame(diagonal, columns=AGREEMENT_SUMMARY_COLUMNS)
    out = pd.concat([across, mirrored[AGREEMENT_SUMMARY_COLUMNS], diagonal], ignore_index=True)
    return out.sort_values(["experiment", "split", "class", *pair], kind="stable", ignore_index=True)


def agreement_square(
    summary: pd.DataFrame,
    experiment: str,
    split: str,
    class_: str = "overall",
    methods: Sequence[str] | None = None,
) -> pd.DataFrame:
    """One agreement matrix of :func:`agreement_summary` as a square frame: methods × methods, mean IoU.

    ``methods`` fixes the order of rows and columns (others follow, sorted); a pair without data is NaN.
    """
    chosen = summary[
        (summary["experiment"] == experiment) & (summary["split"] == split) & (summary["class"] == class_)
    ]
    if chosen.empty:
        raise ValueError(f"no agreement values for experiment={experiment!r}, split={split!r}, class={class_!r}")
    present = set(chosen["method_a"])
    # Methods missing from ``methods`` still get a row and a column, after the listed ones.
    listed = [m for m in methods or () if m in present]
    names = listed + sorted(present - set(listed))
    square = chosen.pivot(index="method_a", columns="method_b", values="iou").reindex(index=names, columns=names)
    square.index.name, square.columns.name = "method", None
    return square
