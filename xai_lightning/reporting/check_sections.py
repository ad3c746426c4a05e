"""The report's sections on whether explanations tell the truth, what they cost and how they compare across experiments.

Each function writes its tables and figures through a ``ReportWriter`` and returns its section (None when left out).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from pathlib import Path

import pandas as pd
from scipy import stats

from xai_lightning.metrics.names import FAITHFULNESS_METRICS, LOWER_IS_BETTER, OVERALL, metric_label
from xai_lightning.metrics.sanity import SANITY_THRESHOLD
from xai_lightning.reporting import figures
from xai_lightning.reporting.check_summaries import agreement_square, agreement_summary, stability_summary
from xai_lightning.reporting.report_sections import ReportWriter, Section, given
from xai_lightning.reporting.seeds import MISSING, across_seeds, latest_split, mean_std_label
from xai_lightning.reporting.tables import mean_std_table

#: Per-image metrics of the "Cost and quality" table, in column order (columns are named by ``metric_label``).
COST_METRICS = ("seconds", "tko", "win_rate", "deletion_auc", "insertion_auc", "infidelity", "max_sensitivity")
#: Column of the cost table read from the randomisation check rather than from ``per_image``.
RANDOMIZATION_COLUMN = "randomisation |ρ|"
#: Metrics compared across experiments (backbones), in row order.
ACROSS_EXPERIMENT_METRICS = ("tko", "win_rate", "deletion_auc")


def _slug(name: object) -> str:
    """An experiment name made safe for a file name."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", str(name)).strip("_") or "experiment"


def _per_experiment_figures(
    writer: ReportWriter, name: str, draw: Callable[..., Path], data: pd.DataFrame, **kwargs: object
) -> list[str]:
    """One figure per experiment (named ``name`` alone when there is one experiment), embedded in the text."""
    experiments = sorted(data["experiment"].unique())
    lines = []
    for experiment in experiments:
        key = name if len(experiments) == 1 else f"{name}_{_slug(experiment)}"
        writer.figure(key, draw, data, experiment=experiment, **kwargs)
        lines += writer.embed(key)
    return lines


def truth_section(
    writer: ReportWriter,
    faithfulness_curves: pd.DataFrame | None,
    randomized: pd.DataFrame | None,
    stability: pd.DataFrame | None,
    agreement: pd.DataFrame | None,
    methods: list[str] | None,
    per_image: pd.DataFrame | None,
) -> Section | None:
    """Section "Does the explanation tell the truth?", one subsection per check whose data was given."""
    parts = []
    if given(faithfulness_curves):
        parts.append(("Deletion and insertion curves", _faithfulness_lines(writer, faithfulness_curves, per_image)))
    if given(randomized):
        parts.append(("Sanity: cascading randomisation", _randomization_lines(writer, randomized, methods)))
    if given(stability):
        parts.append(("Run-to-run stability", _stability_lines(writer, stability, methods)))
    if given(agreement):
        parts.append(("Cross-method agreement", _agreement_lines(writer, agreement, methods)))
    return Section("Does the explanation tell the truth?", [], parts) if parts else None


def _faithfulness_lines(writer: ReportWriter, curves: pd.DataFrame, per_image: pd.DataFrame | None) -> list[str]:
    """What the deletion and insertion curves show, and their figure per experiment."""
    lines = [
        (
            "Target probability as the most-attributed pixels are removed (deletion: a faithful map makes it "
            "drop fast, lower is better) or inserted into the baseline (insertion: higher is better)."
        ),
        "",
    ]
    if per_image is not None and per_image["metric"].isin(FAITHFULNESS_METRICS).any():
        areas = ", ".join(FAITHFULNESS_METRICS)
        lines += [f"The areas under these curves are tabulated per split in section 4 ({areas}).", ""]
    return lines + _per_experiment_figures(
        writer, "faithfulness_curves", figures.faithfulness_curves, curves, split=latest_split(curves)
    )


def _randomization_after_all_layers(randomized: pd.DataFrame) -> pd.DataFrame:
    """Mean ± std over seeds of each method's mean |ρ| once every layer is randomised (last split)."""
    split = latest_split(randomized)
    rows = randomized[randomized["split"] == split]
    last = rows[rows["step"] == rows.groupby(["experiment", "seed"])["step"].transform("max")]
    return across_seeds(last[["experiment", "seed", "method", "value"]])


def _verdict(mean: float) -> str:
    """Sanity verdict of a mean |ρ| over seeds."""
    if mean is None or not math.isfinite(float(mean)):
        return MISSING
    return "fails" if mean > SANITY_THRESHOLD else "passes"


def _randomization_lines(writer: ReportWriter, randomized: pd.DataFrame, methods: list[str] | None) -> list[str]:
    """Table (mean |ρ| after all layers, verdict) and figure of the cascading randomisation check."""
    across = _randomization_after_all_layers(randomized)
    column = "mean |ρ| after all layers"
    order = {"method": methods or []}
    table = mean_std_table(across.assign(column=column), rows=["experiment", "method"], columns="column", order=order)
    verdicts = {(row["experiment"], row["method"]): _verdict(row["mean"]) for row in across.to_dict("records")}
    table["verdict"] = [verdicts[key] for key in zip(table["experiment"], table["method"])]
    randomized.to_csv(writer.tables_dir / "randomization_steps.csv", index=False)
    caption = "Sanity: cascading randomisation"
    lines = [
        (
            "Layers are randomised top-down and cumulatively; each map is compared with the intact model's map by "
            "Spearman rank correlation. A map that still correlates after every layer is randomised explains the "
            f"input, not the model: mean |ρ| > {SANITY_THRESHOLD:g} fails. Images whose intact map is constant are "
            "left out; a randomised map that became constant counts as 0."
        ),
        "",
        *writer.table("randomization", table, caption, md_prefix=f"{caption}, "),
    ]
    return lines + _per_experiment_figures(
        writer, "randomization_curves", figures.randomization_curves, randomized,
        methods=[m for m in methods or [] if m in set(randomized["method"])] or None,
        split=latest_split(randomized), threshold=SANITY_THRESHOLD,
    )


def _stability_lines(writer: ReportWriter, stability: pd.DataFrame, methods: list[str] | None) -> list[str]:
    """Table of run-to-run stability: Spearman and top-10 % IoU between runs, mean ± std over seeds."""
    summary = stability_summary(stability)
    summary = summary[summary["split"] == latest_split(summary)]
    across = across_seeds(summary.drop(columns=["split"]))
    table = mean_std_table(
        across, rows=["experiment", "method"], columns="metric",
        order={"metric": ["spearman", "iou"], "method": methods or []},
    )
    table = table.rename(columns={"spearman": "Spearman", "iou": "top-10 % IoU"})
    caption = "Run-to-run stability"
    return [
        (
            "The same images explained several times with different seeds; per image the mean pairwise Spearman "
            "correlation and top-10 % IoU between runs, averaged over images. Deterministic methods give the same "
            "map every time and score exactly 1 on both, so only the stochastic methods are listed."
        ),
        "",
        *writer.table("stability", table, caption, md_prefix=f"{caption}, "),
    ]


def _agreement_lines(writer: ReportWriter, agreement: pd.DataFrame, methods: list[str] | None) -> list[str]:
    """The overall agreement matrix of each experiment (last split), the per-class matrices as CSV, the heatmap."""
    summary = agreement_summary(agreement)
    writer.tables_dir.mkdir(parents=True, exist_ok=True)
    summary.to_csv(writer.tables_dir / "agreement_per_class.csv", index=False)
    writer.report.tables["agreement_per_class"] = summary
    split = latest_split(summary)
    squares = []
    for experiment in sorted(summary["experiment"].unique()):
        square = agreement_square(summary, experiment, split, methods=methods).reset_index()
        squares.append(square.assign(experiment=experiment)[["experiment", *square.columns]])
    n_seeds = summary.loc[summary["split"] == split, "n_seeds"]
    caption = f"Cross-method agreement (top-10 % IoU) on {split}, all images, mean over {int(n_seeds.max())} seed(s)"
    lines = [
        (
            "IoU of the top-10 % pixels of each pair of methods, averaged over images per seed, then over seeds. "
            "Per-class matrices: `tables/agreement_per_class.csv`."
        ),
        "",
        *writer.table("agreement", pd.concat(squares, ignore_index=True), caption, md_prefix=caption),
    ]
    writer.figure("agreement_heatmap", figures.agreement_heatmap, summary, split=split, methods=methods)
    return lines + writer.embed("agreement_heatmap")


def cost_section(
    writer: ReportWriter, per_seed: pd.DataFrame, randomized: pd.DataFrame | None, methods: list[str]
) -> Section | None:
    """Section "Cost and quality": time per image next to the quality metrics, last split, all images.

    Left out (None) when there is neither cost nor faithfulness data: sections 2 and 3 already show TKO and win-rate.
    """
    split = latest_split(per_seed)
    chosen = (per_seed["split"] == split) & (per_seed["class"] == OVERALL) & per_seed["metric"].isin(COST_METRICS)
    rows = per_seed[chosen]
    present = set(rows["metric"])
    if not (present - {"tko", "win_rate"}) and randomized is None:
        return None
    # Seconds per image become milliseconds per seed first, so that the std over seeds is in ms too.
    value = rows["value"].where(rows["metric"] != "seconds", rows["value"] * 1000.0)
    across = across_seeds(rows.assign(value=value)[["experiment", "seed", "method", "metric", "value"]])
    across = across.assign(column=across["metric"].map(metric_label)).drop(columns=["metric"])
    columns = [metric_label(m) for m in COST_METRICS if m in present]
    if randomized is not None:
        sanity = _randomization_after_all_layers(randomized).assign(column=RANDOMIZATION_COLUMN)
        across = pd.concat([across, sanity], ignore_index=True)
        columns.append(RANDOMIZATION_COLUMN)
    order = {"column": columns, "method": methods}
    table = mean_std_table(across, rows=["experiment", "method"], columns="column", order=order)
    caption = f"Cost and quality on {split} (all images)"
    lines = [
        (
            "What each method costs (wall time per image) next to how well it localises (TKO, win-rate) and how "
            "faithful it is (deletion AUC: lower is better; insertion AUC: higher; infidelity and max-sensitivity: "
            f"lower; randomisation |ρ|: lower, > {SANITY_THRESHOLD:g} fails the sanity check)."
        ),
        "",
        *writer.table("cost_quality", table, caption, md_prefix=f"{caption}, "),
    ]
    return Section("Cost and quality", lines)


def _experiment_labels(per_image: pd.DataFrame) -> tuple[dict[str, str], str]:
    """Column name of each experiment, and what the names are: ``backbone`` or ``experiment``.

    The backbone names the column when every experiment has exactly one and no two share it, so
    that a column is readable as "this backbone"; otherwise the experiment's own name does.
    """
    experiments = sorted(per_image["experiment"].unique())
    names = {e: str(e) for e in experiments}
    if "backbone" not in per_image.columns:
        return names, "experiment"
    backbones = per_image.dropna(subset=["backbone"]).groupby("experiment")["backbone"].unique()
    if any(len(backbones.get(e, ())) != 1 for e in experiments):
        return names, "experiment"
    labels = {e: str(backbones[e][0]) for e in experiments}
    if len(set(labels.values())) < len(labels):
        return names, "experiment"
    return labels, "backbone"


def _ranked_rows(rows: pd.DataFrame, metric: str, labels: dict[str, str], methods: list[str]) -> tuple[list[dict], str]:
    """The across-experiments rows of one metric (mean ± std and rank per column), and the remark on its ranking."""
    name, higher_better = metric_label(metric), metric not in LOWER_IS_BETTER
    across = across_seeds(rows[["experiment", "seed", "method", "value"]])
    means = across.pivot(index="method", columns="experiment", values="mean").rename(columns=labels)
    spread = across.pivot(index="method", columns="experiment", values="std").rename(columns=labels)
    ranks = means.rank(ascending=not higher_better, method="min")
    ordered = [m for m in methods if m in means.index] + sorted(set(means.index) - set(methods))
    records = []
    for method in ordered:
        record = {"metric": name, "method": method}
        for column in means.columns:
            cell = mean_std_label(means.loc[method, column], spread.loc[method, column])
            rank = ranks.loc[method, column]
            record[column] = cell if math.isnan(rank) else f"{cell} ({int(rank)})"
        records.append(record)
    return records, _ranking_remark(name, means, higher_better)


def across_experiments_section(
    writer: ReportWriter, per_image: pd.DataFrame, per_seed: pd.DataFrame, methods: list[str]
) -> Section | None:
    """Section "Across experiments" (with two or more): metric × method rows, one column per experiment (backbone)."""
    if per_seed["experiment"].nunique() < 2:
        return None
    labels, kind = _experiment_labels(per_image)
    split = latest_split(per_seed)
    rows = per_seed[(per_seed["split"] == split) & (per_seed["class"] == OVERALL)]
    records, remarks = [], []
    for metric in ACROSS_EXPERIMENT_METRICS:
        if (rows["metric"] == metric).any():
            metric_records, remark = _ranked_rows(rows[rows["metric"] == metric], metric, labels, methods)
            records += metric_records
            remarks.append(remark)
    if not records:
        names = [metric_label(m) for m in ACROSS_EXPERIMENT_METRICS]
        missing = f"No {', '.join(names[:-1])} or {names[-1]} to compare across experiments."
        return Section("Across experiments", [missing, ""])
    table = pd.DataFrame.from_records(records)
    table.attrs["seeds_note"] = "mean ± std over seeds (rank within the column, 1 = best)"
    caption = f"Methods across experiments on {split} (all images), one column per {kind}"
    lower = "; ".join(f"{metric_label(m)}: lower is better" for m in ACROSS_EXPERIMENT_METRICS if m in LOWER_IS_BETTER)
    lines = [
        f"Each method's score in each {kind}, with its rank among the methods of that column ({lower}).",
        "",
        *writer.table("across_experiments", table, caption, md_prefix=f"{caption}; "),
        *[f"- {remark}" for remark in remarks],
        "",
    ]
    return Section("Across experiments", lines)


def _ranking_remark(name: str, means: pd.DataFrame, higher_better: bool) -> str:
    """Whether the ranking of methods on one metric changes across columns: the top method and Kendall τ."""
    tops = {}
    for column in means.columns:
        values = means[column].dropna()
        if len(values):
            tops[column] = values.idxmax() if higher_better else values.idxmin()
    if not tops:
        return f"{name}: no values to rank."
    if len(set(tops.values())) == 1:
        text = f"{name}: {next(iter(tops.values()))} ranks first in every column"
    else:
        text = f"{name}: the top method differs ({', '.join(f'{c}: {m}' for c, m in tops.items())})"
    first = means.columns[0]
    taus = []
    for column in means.columns[1:]:
        both = means[[first, column]].dropna()
        if len(both) >= 2:
            tau = stats.kendalltau(both[first], both[column]).statistic
            taus.append(f"{column} {tau:.2f}" if math.isfinite(tau) else f"{column} —")
    if taus:
        text += f"; Kendall τ of the ranking against {first}: {', '.join(taus)}"
    return text + "."
