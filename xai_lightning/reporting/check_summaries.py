"""Summaries of the report's checks on explanations: cascading randomisation, run-to-run stability, agreement.

Each reduces the per-image table of one check (as ``evaluate.py`` writes it) to per-seed values or matrices.
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from xai_lightning.metrics.names import OVERALL
from xai_lightning.metrics.sanity import SANITY_THRESHOLD, sanity_verdict
from xai_lightning.reporting.seeds import across_seeds, finite, per_class_and_overall, require_columns

__all__ = ["agreement_square", "agreement_summary", "randomization_summary", "stability_summary"]

RANDOMIZATION_COLUMNS = ("experiment", "seed", "split", "method", "step", "layer", "image_id", "class", "spearman")
RANDOMIZATION_SUMMARY_COLUMNS = ["experiment", "split", "seed", "method", "step", "layer", "value", "n_images"]
STABILITY_COLUMNS = ("experiment", "seed", "split", "method", "image_id", "class", "spearman", "iou")
AGREEMENT_COLUMNS = ("experiment", "seed", "split", "image_id", "class", "method_a", "method_b", "iou")
AGREEMENT_SUMMARY_COLUMNS = ["experiment", "split", "class", "method_a", "method_b", "iou", "std", "n_seeds"]


def randomization_summary(randomization: pd.DataFrame, threshold: float = SANITY_THRESHOLD) -> pd.DataFrame:
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
           step       layer  value  n_images
        0     0    original    1.0         1
        1     1  classifier    0.0         1
    """
    require_columns(randomization, RANDOMIZATION_COLUMNS, "randomization")
    frame = randomization.assign(spearman=finite(randomization["spearman"]))
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
    require_columns(stability, STABILITY_COLUMNS, "stability")
    long = stability.melt(
        id_vars=["experiment", "seed", "split", "method"], value_vars=["spearman", "iou"], var_name="metric"
    )
    long = long.assign(value=finite(long["value"]))
    keys = ["experiment", "seed", "split", "method", "metric"]
    out = long.groupby(keys, sort=True, dropna=False)["value"].agg(value="mean", n_images="count").reset_index()
    out["n_images"] = out["n_images"].astype("int64")
    return out


def agreement_summary(agreement: pd.DataFrame, classes_overall_name: str = OVERALL) -> pd.DataFrame:
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
    require_columns(agreement, AGREEMENT_COLUMNS, "agreement")
    if (agreement["class"] == classes_overall_name).any():
        raise ValueError(f"a class is named {classes_overall_name!r}, the name reserved for all images together")
    frame = agreement.assign(iou=finite(agreement["iou"]))
    # One name order per pair, so that a pair listed as (a, b) by one seed and (b, a) by another is one pair.
    first = frame[["method_a", "method_b"]].min(axis=1)
    second = frame[["method_a", "method_b"]].max(axis=1)
    frame = frame.assign(method_a=first, method_b=second)
    pair = ["method_a", "method_b"]
    keys = ["experiment", "split", "seed", *pair]
    per_seed = per_class_and_overall(frame, keys, "iou", classes_overall_name, iou="mean")
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
    class_: str = OVERALL,
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
