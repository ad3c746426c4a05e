"""Normalised ranks of the methods on every quality metric at once, per experiment (backbone), and their radar areas.

:func:`rank_table` ranks the methods of each experiment on each metric (localisation, faithfulness, robustness
and the randomisation sanity check), maps rank r of n to (n − r) / (n − 1) so that 1 is the best method and 0
the worst, and sums a method up as the area of its radar polygon; :func:`radar_section` puts the table and the
figure into the report.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd

from xai_lightning.metrics.names import LOWER_IS_BETTER, OVERALL, metric_label
from xai_lightning.reporting.check_sections import (
    RANDOMIZATION_COLUMN,
    _experiment_labels,
    _randomization_after_all_layers,
)
from xai_lightning.reporting.report_sections import ReportWriter, Section
from xai_lightning.reporting.seeds import across_seeds, latest_split

#: The metric key of the randomisation check's mean |ρ| once every layer is randomised (lower is better).
RANDOMIZATION = "randomisation"
#: The radar's axes, in order (the polygon area depends on which axes are neighbours, so the order is fixed).
RADAR_METRICS = (
    "tko",
    "win_rate",
    "pointing_game",
    "relevance_mass",
    "deletion_auc",
    "insertion_auc",
    "infidelity",
    "max_sensitivity",
    RANDOMIZATION,
)
#: Fewest axes a radar polygon has an area with.
MIN_AXES = 3


def radar_label(metric: str) -> str:
    """The display name of a radar axis: the report's metric label, ``randomisation |ρ|`` for the sanity check.

    >>> radar_label("win_rate"), radar_label(RANDOMIZATION)
    ('win-rate', 'randomisation |ρ|')
    """
    return RANDOMIZATION_COLUMN if metric == RANDOMIZATION else metric_label(metric)


def lower_is_better(metric: str) -> bool:
    """Whether a lower value of ``metric`` is the better one (|ρ| after randomisation: a map that ignores the model
    keeps it high).

    >>> lower_is_better("deletion_auc"), lower_is_better(RANDOMIZATION), lower_is_better("tko")
    (True, True, False)
    """
    return metric in LOWER_IS_BETTER or metric == RANDOMIZATION


def quality_means(
    per_seed_or_across: pd.DataFrame,
    randomized: pd.DataFrame | None = None,
    metrics: Sequence[str] = RADAR_METRICS,
    split: str | None = None,
) -> pd.DataFrame:
    """(experiment, method, metric, mean): each method's overall mean over seeds on ``split`` (default: the last).

    Takes ``per_seed_summary`` output (averaged over seeds here) or ``across_seeds`` output (its ``mean`` as is),
    and adds the randomisation |ρ| after all layers from the randomisation check's table, as the report's
    "Cost and quality" table does (:func:`~xai_lightning.reporting.check_sections.cost_section`).
    """
    split = split or latest_split(per_seed_or_across)
    rows = per_seed_or_across[
        (per_seed_or_across["split"] == split)
        & (per_seed_or_across["class"] == OVERALL)
        & per_seed_or_across["metric"].isin(list(metrics))
    ]
    if "mean" not in rows.columns:  # per seed: one value per seed, averaged like every table of the report
        rows = across_seeds(rows[["experiment", "seed", "method", "metric", "value"]])
    means = [rows[["experiment", "method", "metric", "mean"]]]
    if randomized is not None and len(randomized) and RANDOMIZATION in metrics:
        sanity = _randomization_after_all_layers(randomized)
        means.append(sanity[["experiment", "method", "mean"]].assign(metric=RANDOMIZATION))
    return pd.concat(means, ignore_index=True)


def normalised_ranks(values: pd.Series, lower_better: bool) -> pd.Series:
    """Rank r of each of the n methods with a value (1 = best, ties share the better rank) as (n − r) / (n − 1).

    A method without a value stays NaN; with fewer than two values there is nothing to rank (all NaN).

    >>> normalised_ranks(pd.Series([0.9, 0.1, 0.5, float("nan")], index=list("abcd")), lower_better=False).tolist()
    [1.0, 0.0, 0.5, nan]
    >>> normalised_ranks(pd.Series([0.9, 0.1, 0.5], index=list("abc")), lower_better=True).tolist()
    [0.0, 1.0, 0.5]
    """
    n = int(values.notna().sum())
    if n < 2:
        return pd.Series(np.nan, index=values.index)
    ranks = values.rank(ascending=lower_better, method="min")
    return (n - ranks) / (n - 1)


def radar_area(radii: Sequence[float]) -> float:
    """Shoelace area of a polygon with ``radii`` on equally spaced axes, over that of the all-ones polygon.

    With m axes at angles 2πi/m the area is ½ · sin(2π/m) · Σ rᵢ rᵢ₊₁ and the unit polygon's
    ½ · sin(2π/m) · m, so the ratio is Σ rᵢ rᵢ₊₁ / m: 1 for a method best everywhere, 0 for one worst
    everywhere. NaN counts as 0.

    >>> radar_area([1, 1, 1, 1]), radar_area([1, 0, 1, 0]), radar_area([1, 1, 0, 0])
    (1.0, 0.0, 0.25)
    """
    r = np.nan_to_num(np.asarray(radii, dtype=float), nan=0.0)
    if len(r) < MIN_AXES:
        return math.nan
    return float(np.sum(r * np.roll(r, -1)) / len(r))


def rank_table(
    per_seed_or_across: pd.DataFrame,
    metrics: Sequence[str] = RADAR_METRICS,
    randomized: pd.DataFrame | None = None,
    split: str | None = None,
) -> pd.DataFrame:
    """Per experiment and method: the normalised rank on each metric (1 = best, 0 = worst) and the radar ``area``.

    ``per_seed_or_across`` is ``per_seed_summary`` or ``across_seeds`` output; ``randomized`` the randomisation
    check's table (adds ``randomisation``). A metric an experiment lacks, or that fewer than two of its methods
    have, is not an axis of that experiment (NaN in its column), and a method without a value on one of the axes
    counts as 0 there; ``attrs["note"]`` says which and ``attrs["axes"]`` lists each experiment's axes in order
    (plain values only: pandas compares attrs when it copies a frame, and a DataFrame there cannot be compared).

    Columns: ``experiment, method``, one per metric of ``metrics`` present anywhere (in that order), ``n_axes``,
    ``area`` (in [0, 1]; NaN with fewer than three axes). Rows: experiments by name, methods by area, best first.
    """
    means = quality_means(per_seed_or_across, randomized, metrics, split)
    records, axes, notes = [], {}, []
    for experiment, rows in means.groupby("experiment", sort=True):
        square = rows.pivot_table(index="method", columns="metric", values="mean", aggfunc="first")
        square = square.reindex(columns=[m for m in metrics if m in square.columns])
        kept = [m for m in square.columns if square[m].notna().sum() >= 2]
        axes[experiment] = kept
        notes += _notes(experiment, square, metrics, kept)
        scores = pd.DataFrame({m: normalised_ranks(square[m], lower_is_better(m)) for m in kept}, index=square.index)
        for method, row in scores.iterrows():
            area = radar_area(row.to_numpy()) if kept else math.nan
            records.append({"experiment": experiment, "method": method, **row.to_dict(), "n_axes": len(kept),
                            "area": area})
    columns = [m for m in metrics if any(m in kept for kept in axes.values())]
    table = pd.DataFrame.from_records(records, columns=["experiment", "method", *columns, "n_axes", "area"])
    table = table.sort_values(["experiment", "area", "method"], ascending=[True, False, True], ignore_index=True)
    table.attrs.update(axes=axes, note=" ".join(notes))
    return table


def _notes(experiment: str, square: pd.DataFrame, metrics: Sequence[str], kept: list[str]) -> list[str]:
    """The sentences saying what :func:`rank_table` left out of one experiment's radar, and why."""
    notes = []
    absent = [radar_label(m) for m in metrics if m not in kept]
    if absent:
        notes.append(f"{experiment}: {', '.join(absent)} left out of its radar (fewer than two methods have it).")
    for metric in kept:
        lacking = sorted(square.index[square[metric].isna()])
        if lacking:
            notes.append(f"{experiment}: {', '.join(lacking)} without {radar_label(metric)}, counted as 0 there.")
    if len(kept) < MIN_AXES:
        notes.append(f"{experiment}: fewer than {MIN_AXES} metrics, so no radar area.")
    return notes


def radar_section(
    writer: ReportWriter,
    per_seed: pd.DataFrame,
    randomized: pd.DataFrame | None = None,
    per_image: pd.DataFrame | None = None,
    metrics: Sequence[str] = RADAR_METRICS,
) -> Section | None:
    """Section "Methods on every metric at once": the normalised-rank table (``tables/radar_ranks``) and the radar.

    ``per_image`` (optional) names each experiment's radar by its backbone where that is unambiguous. Left out
    (None) when no experiment has the three metrics a radar needs.
    """
    from xai_lightning.reporting.figures.radar import radar_figure

    table = rank_table(per_seed, metrics, randomized)
    if table.empty or not (table["n_axes"] >= MIN_AXES).any():
        return None
    labels = _experiment_labels(per_image)[0] if per_image is not None and len(per_image) else {}
    shown = table.assign(**{c: table[c].round(3) for c in table.columns if c not in ("experiment", "method", "n_axes")})
    shown = shown.rename(columns={m: radar_label(m) for m in metrics})
    split = latest_split(per_seed)
    caption = f"Normalised rank of each method on each metric on {split} (all images), 1 = best, 0 = worst"
    writer.figure("radar_ranks", radar_figure, table, labels=labels)
    lower = ", ".join(radar_label(m) for m in metrics if lower_is_better(m) and m in table.columns)
    lines = [
        (
            "Per experiment, each method's rank r among the n methods on each metric (mean over seeds) mapped to "
            f"(n − r) / (n − 1): 1 = best, 0 = worst (lower is better for {lower or 'none of these'}). "
            "*area* is the radar polygon's area over that of a method best on every metric; it depends on the "
            "order of the axes, which is fixed, and weighs every metric alike."
        ),
        "",
        *writer.table("radar_ranks", shown, caption, md_prefix=caption),
        *([table.attrs["note"], ""] if table.attrs["note"] else []),
        *writer.embed("radar_ranks"),
    ]
    return Section("Methods on every metric at once", lines)
