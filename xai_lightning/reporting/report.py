"""Turn an experiment's tidy results into the paper-style report: tables, significance, figures, report.md.

``build_report`` is what ``evaluate.py`` calls; every number in the report is computed here from
``metrics.csv`` and ``per_image.parquet``, so the report can be rebuilt from those files alone.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from scipy import stats

from xai_lightning.reporting import figures
from xai_lightning.reporting.aggregate import (
    across_seeds,
    agreement_square,
    agreement_summary,
    excluded_counts,
    mean_std_label,
    paired_comparisons,
    per_seed_summary,
    randomization_summary,
    significance_sentences,
    stability_summary,
)
from xai_lightning.reporting.tables import (
    MISSING,
    mean_std_table,
    to_markdown,
    write_table,
)

MODEL_METRICS = ["loss", "loss_ce", "loss_bce", "acc", "balanced_acc", "seg_iou"]
#: Per-image metrics of the "Cost and quality" table and their column names, in column order.
COST_COLUMNS = {
    "seconds": "ms / image",
    "tko": "TKO",
    "win_rate": "win-rate",
    "deletion_auc": "deletion AUC",
    "insertion_auc": "insertion AUC",
    "infidelity": "infidelity",
    "max_sensitivity": "max-sensitivity",
}
#: Column of the cost table read from the randomisation check rather than from ``per_image``.
RANDOMIZATION_COLUMN = "randomisation |ρ|"
#: Metrics compared across experiments (backbones): name, and whether higher is better.
ACROSS_EXPERIMENT_METRICS = {"tko": ("TKO", True), "win_rate": ("win-rate", True), "deletion_auc": ("deletion AUC", False)}
#: A method fails the randomisation check when its mean |ρ| after all layers exceeds this (Adebayo et al.).
SANITY_THRESHOLD = 0.5
#: Metrics shown elsewhere than "Other metrics": win-rate and TKO have their own sections, time the cost table.
OWN_SECTION_METRICS = ("win_rate", "tko", "seconds")


@dataclass
class Report:
    """What ``build_report`` wrote: the report itself, tables by name and figures by name."""

    path: Path
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    figures: dict[str, Path] = field(default_factory=dict)
    sentences: list[str] = field(default_factory=list)


def build_report(
    out_dir: str | Path,
    model_metrics: pd.DataFrame,
    per_image: pd.DataFrame | None = None,
    curves: pd.DataFrame | None = None,
    examples: list[dict] | None = None,
    *,
    title: str = "Experiment report",
    notes: list[str] | None = None,
    n_boot: int = 10000,
    faithfulness_curves: pd.DataFrame | None = None,
    randomization: pd.DataFrame | None = None,
    stability: pd.DataFrame | None = None,
    agreement: pd.DataFrame | None = None,
) -> Report:
    """Write tables (CSV, Markdown, LaTeX), figures (PNG) and ``report.md`` into ``out_dir``.

    Tables: model metrics per split; win-rate per split × class × method; TKO and the other
    localisation metrics per split × class × method — each mean ± std over seeds. Significance:
    paired Wilcoxon tests and bootstrap CIs of each pair's win-rate and TKO difference on each split.

    Whether the explanations tell the truth (each part left out when its frame is None or empty):
    ``faithfulness_curves`` (experiment, run, seed, split, method, curve, fraction, probability,
    n_images) gives the deletion/insertion curves; ``randomization`` (… method, step, layer,
    image_id, class, spearman) the cascading-randomisation sanity check; ``stability`` (… method,
    image_id, class, spearman, iou, runs) the run-to-run stability of stochastic methods;
    ``agreement`` (… image_id, class, method_a, method_b, iou) the cross-method agreement. A
    "Cost and quality" table joins time per image with the quality metrics when ``per_image`` holds
    more than TKO (or ``randomization`` is given), and with several experiments an
    "Across experiments" table ranks the methods per experiment (per backbone, when ``per_image``
    has a ``backbone`` column that tells them apart).
    """
    out = Path(out_dir)
    tables_dir, figures_dir = out / "tables", out / "figures"
    report = Report(path=out / "report.md")
    lines = [f"# {title}", ""] + [f"> {note}" for note in notes or []] + ([""] if notes else [])

    model = model_metrics.drop(columns=["run"], errors="ignore")
    model = model[model["metric"].isin(MODEL_METRICS)]
    model_across = across_seeds(model)
    table = mean_std_table(model_across, rows=["experiment", "split"], columns="metric", order={"metric": MODEL_METRICS})
    report.tables["model_metrics"] = table
    write_table(table, tables_dir, "model_metrics", caption="Model metrics per split")
    lines += ["## 1. Model metrics per split", "", to_markdown(table, caption=_caption("", table)), ""]

    per_seed: pd.DataFrame | None = None
    methods: list[str] | None = None
    if per_image is not None and len(per_image):
        per_seed = per_seed_summary(per_image)
        per_seed.to_csv(tables_dir / "per_seed.csv", index=False)
        across = across_seeds(per_seed)
        methods = _method_order(across)
        order = {"method": methods}
        for number, metric, name in [(2, "win_rate", "Win-rate"), (3, "tko", "Top-K overlap")]:
            subset = across[across["metric"] == metric]
            table = mean_std_table(subset, rows=["experiment", "split", "class"], columns="method", order=order)
            report.tables[metric] = table
            write_table(table, tables_dir, metric, caption=f"{name} per split and class")
            lines += [f"## {number}. {name} per split and class", "", to_markdown(table, caption=_caption("", table)), ""]
        others = [m for m in sorted(across["metric"].unique()) if m not in OWN_SECTION_METRICS]
        lines += ["## 4. Other metrics per split (overall)", ""]
        for metric in others:
            subset = across[(across["metric"] == metric) & (across["class"] == "overall")]
            table = mean_std_table(subset, rows=["experiment", "split"], columns="method", order=order)
            report.tables[metric] = table
            write_table(table, tables_dir, metric, caption=f"{metric} per split (overall)")
            lines += [f"**{metric}**", "", to_markdown(table, caption=_caption("", table)), ""]
        excluded = excluded_counts(per_image)
        excluded.to_csv(tables_dir / "excluded_images.csv", index=False)

        lines += ["## 5. Which differences hold", ""]
        comparisons = []
        for split in sorted(per_seed["split"].unique()):
            for metric in ("win_rate", "tko"):
                pairs = paired_comparisons(per_seed, metric=metric, split=split, class_="overall", methods=methods, n_boot=n_boot)
                comparisons.append(pairs)
        comparisons = pd.concat(comparisons, ignore_index=True)
        write_table(comparisons.drop(columns=["note"], errors="ignore"), tables_dir, "comparisons", caption="Paired comparisons across seeds")
        report.tables["comparisons"] = comparisons
        report.sentences = significance_sentences(comparisons)
        lines += [
            (
                "Paired over seeds: Wilcoxon signed-rank p-value and a 95 % bootstrap CI of the mean difference; "
                "a difference *holds* when the CI excludes 0 and p < 0.05."
            ),
            "",
        ]
        lines += [f"- {sentence}" for sentence in report.sentences] + [""]

        report.figures["win_rate_bars"] = _figure(
            figures.win_rate_bars, across, figures_dir / "win_rate_bars.png", split=_last_split(across), methods=methods
        )
        report.figures["tko_distributions"] = _figure(
            figures.metric_distributions, per_image, figures_dir / "tko_distributions.png", metric="tko",
            split=_last_split(across), methods=methods,
        )
    number = 6 if per_seed is not None else 2
    shown: set[str] = set()
    randomized = randomization_summary(randomization) if _given(randomization) else None
    truth = _truth_subsections(
        report, out, shown, faithfulness_curves, randomized, stability, agreement, methods, per_image
    )
    if truth:
        lines += [f"## {number}. Does the explanation tell the truth?", ""]
        for index, (heading, body) in enumerate(truth, start=1):
            lines += [f"### {number}.{index} {heading}", "", *body]
        number += 1
    if per_seed is not None:
        cost = _cost_lines(report, tables_dir, per_seed, randomized, methods)
        if cost:
            lines += [f"## {number}. Cost and quality", "", *cost]
            number += 1
        if per_seed["experiment"].nunique() >= 2:
            across_lines = _across_experiment_lines(report, tables_dir, per_image, per_seed, methods)
            lines += [f"## {number}. Across experiments", "", *across_lines]
            number += 1

    if examples:
        report.figures["heatmap_grid"] = _figure(figures.heatmap_grid, examples, figures_dir / "heatmap_grid.png")
    if curves is not None and len(curves):
        report.figures["training_curves"] = _figure(figures.training_curves, curves, figures_dir / "training_curves.png")

    lines += ["## Figures", ""]
    for name, path in report.figures.items():
        if path is not None and name not in shown:
            lines += [f"![{name}]({path.relative_to(out).as_posix()})", ""]
    lines += ["Tables as CSV, Markdown and LaTeX: `tables/`. Per-seed values: `tables/per_seed.csv`."]
    report.path.parent.mkdir(parents=True, exist_ok=True)
    report.path.write_text("\n".join(lines) + "\n")
    return report


def _caption(prefix: str, table: pd.DataFrame) -> str:
    return (prefix + table.attrs.get("seeds_note", "")).strip()


def _method_order(across: pd.DataFrame) -> list[str]:
    """Methods by overall test (else last split) win-rate, best first: the order tables and figures share."""
    split = _last_split(across)
    ranking = across[(across["metric"] == "win_rate") & (across["class"] == "overall") & (across["split"] == split)]
    ranked = ranking.groupby("method")["mean"].mean().sort_values(ascending=False).index.tolist()
    return ranked + sorted(set(across["method"]) - set(ranked))


def _last_split(across: pd.DataFrame) -> str:
    splits = set(across["split"])
    return next(s for s in ("test", "val", "train") if s in splits)


def _figure(draw, data, path: Path, **kwargs) -> Path | None:
    """Draw one figure; a figure that cannot be drawn (e.g. one experiment lacks a split) is skipped, not fatal."""
    try:
        return draw(data, path, **kwargs)
    except ValueError as error:
        print(f"[report] skipped {path.name}: {error}")
        return None


def _given(frame: pd.DataFrame | None) -> bool:
    """Whether an optional table was passed with rows: None and empty frames both leave their section out."""
    return frame is not None and len(frame) > 0


def _slug(name: object) -> str:
    """An experiment name made safe for a file name."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", str(name)).strip("_") or "experiment"


def _embed(report: Report, out: Path, shown: set[str], name: str) -> list[str]:
    """Markdown lines showing one written figure where it is discussed (and not again under "Figures")."""
    path = report.figures.get(name)
    if path is None:
        return []
    shown.add(name)
    return [f"![{name}]({path.relative_to(out).as_posix()})", ""]


def _per_experiment_figures(
    report: Report, out: Path, shown: set[str], name: str, draw, data: pd.DataFrame, **kwargs
) -> list[str]:
    """One figure per experiment (named ``name`` alone when there is one experiment), embedded in the text."""
    experiments = sorted(data["experiment"].unique())
    lines = []
    for experiment in experiments:
        key = name if len(experiments) == 1 else f"{name}_{_slug(experiment)}"
        path = out / "figures" / f"{key}.png"
        report.figures[key] = _figure(draw, data, path, experiment=experiment, **kwargs)
        lines += _embed(report, out, shown, key)
    return lines


def _truth_subsections(
    report: Report,
    out: Path,
    shown: set[str],
    faithfulness_curves: pd.DataFrame | None,
    randomized: pd.DataFrame | None,
    stability: pd.DataFrame | None,
    agreement: pd.DataFrame | None,
    methods: list[str] | None,
    per_image: pd.DataFrame | None,
) -> list[tuple[str, list[str]]]:
    """The parts of "Does the explanation tell the truth?" whose data was given, as (heading, lines)."""
    tables_dir = out / "tables"
    parts = []
    if _given(faithfulness_curves):
        lines = [
            (
                "Target probability as the most-attributed pixels are removed (deletion: a faithful map makes it "
                "drop fast, lower is better) or inserted into the baseline (insertion: higher is better)."
            ),
            "",
        ]
        if per_image is not None and per_image["metric"].isin(["deletion_auc", "insertion_auc"]).any():
            lines += ["The areas under these curves are tabulated per split in section 4 (deletion_auc, insertion_auc).", ""]
        lines += _per_experiment_figures(
            report, out, shown, "faithfulness_curves", figures.faithfulness_curves, faithfulness_curves,
            split=_last_split(faithfulness_curves),
        )
        parts.append(("Deletion and insertion curves", lines))
    if randomized is not None and len(randomized):
        parts.append(("Sanity: cascading randomisation", _randomization_lines(report, out, shown, randomized, methods)))
    if _given(stability):
        parts.append(("Run-to-run stability", _stability_lines(report, tables_dir, stability, methods)))
    if _given(agreement):
        parts.append(("Cross-method agreement", _agreement_lines(report, out, shown, agreement, methods)))
    return parts


def _randomization_after_all_layers(randomized: pd.DataFrame) -> pd.DataFrame:
    """Mean ± std over seeds of each method's mean |ρ| once every layer is randomised (last split)."""
    split = _last_split(randomized)
    rows = randomized[randomized["split"] == split]
    last = rows[rows["step"] == rows.groupby(["experiment", "seed"])["step"].transform("max")]
    return across_seeds(last[["experiment", "seed", "method", "value"]])


def _randomization_lines(
    report: Report, out: Path, shown: set[str], randomized: pd.DataFrame, methods: list[str] | None
) -> list[str]:
    """Table (mean |ρ| after all layers, verdict) and figure of the cascading randomisation check."""
    across = _randomization_after_all_layers(randomized)
    column = "mean |ρ| after all layers"
    table = mean_std_table(
        across.assign(column=column), rows=["experiment", "method"], columns="column", order={"method": methods or []}
    )
    verdicts = {
        (row["experiment"], row["method"]): _verdict(row["mean"]) for row in across.to_dict("records")
    }
    table["verdict"] = [verdicts[key] for key in zip(table["experiment"], table["method"])]
    report.tables["randomization"] = table
    randomized.to_csv(out / "tables" / "randomization_steps.csv", index=False)
    caption = "Sanity: cascading randomisation"
    write_table(table, out / "tables", "randomization", caption=caption)
    lines = [
        (
            "Layers are randomised top-down and cumulatively; each map is compared with the intact model's map by "
            "Spearman rank correlation. A map that still correlates after every layer is randomised explains the "
            f"input, not the model: mean |ρ| > {SANITY_THRESHOLD:g} fails. Images whose intact map is constant are "
            "left out; a randomised map that became constant counts as 0."
        ),
        "",
        to_markdown(table, caption=_caption(f"{caption}, ", table)),
        "",
    ]
    return lines + _per_experiment_figures(
        report, out, shown, "randomization_curves", figures.randomization_curves, randomized,
        methods=[m for m in methods or [] if m in set(randomized["method"])] or None,
        split=_last_split(randomized), threshold=SANITY_THRESHOLD,
    )


def _verdict(mean: float) -> str:
    """Sanity verdict of a mean |ρ| over seeds."""
    if mean is None or not math.isfinite(float(mean)):
        return MISSING
    return "fails" if mean > SANITY_THRESHOLD else "passes"


def _stability_lines(report: Report, tables_dir: Path, stability: pd.DataFrame, methods: list[str] | None) -> list[str]:
    """Table of run-to-run stability: Spearman and top-10 % IoU between runs, mean ± std over seeds."""
    summary = stability_summary(stability)
    summary = summary[summary["split"] == _last_split(summary)]
    across = across_seeds(summary.drop(columns=["split"]))
    table = mean_std_table(
        across, rows=["experiment", "method"], columns="metric",
        order={"metric": ["spearman", "iou"], "method": methods or []},
    )
    table = table.rename(columns={"spearman": "Spearman", "iou": "top-10 % IoU"})
    report.tables["stability"] = table
    caption = "Run-to-run stability"
    write_table(table, tables_dir, "stability", caption=caption)
    return [
        (
            "The same images explained several times with different seeds; per image the mean pairwise Spearman "
            "correlation and top-10 % IoU between runs, averaged over images. Deterministic methods give the same "
            "map every time and score exactly 1 on both, so only the stochastic methods are listed."
        ),
        "",
        to_markdown(table, caption=_caption(f"{caption}, ", table)),
        "",
    ]


def _agreement_lines(
    report: Report, out: Path, shown: set[str], agreement: pd.DataFrame, methods: list[str] | None
) -> list[str]:
    """The overall agreement matrix of each experiment (last split), the per-class matrices as CSV, the heatmap."""
    summary = agreement_summary(agreement)
    (out / "tables").mkdir(parents=True, exist_ok=True)
    summary.to_csv(out / "tables" / "agreement_per_class.csv", index=False)
    report.tables["agreement_per_class"] = summary
    split = _last_split(summary)
    squares = []
    for experiment in sorted(summary["experiment"].unique()):
        square = agreement_square(summary, experiment, split, methods=methods).reset_index()
        squares.append(square.assign(experiment=experiment)[["experiment", *square.columns]])
    table = pd.concat(squares, ignore_index=True)
    report.tables["agreement"] = table
    n_seeds = summary.loc[summary["split"] == split, "n_seeds"]
    caption = f"Cross-method agreement (top-10 % IoU) on {split}, all images, mean over {int(n_seeds.max())} seed(s)"
    write_table(table, out / "tables", "agreement", caption=caption)
    lines = [
        (
            "IoU of the top-10 % pixels of each pair of methods, averaged over images per seed, then over seeds. "
            "Per-class matrices: `tables/agreement_per_class.csv`."
        ),
        "",
        to_markdown(table, caption=caption),
        "",
    ]
    report.figures["agreement_heatmap"] = _figure(
        figures.agreement_heatmap, summary, out / "figures" / "agreement_heatmap.png", split=split, methods=methods
    )
    return lines + _embed(report, out, shown, "agreement_heatmap")


def _cost_lines(
    report: Report, tables_dir: Path, per_seed: pd.DataFrame, randomized: pd.DataFrame | None, methods: list[str]
) -> list[str]:
    """Time per image next to the quality metrics, last split, all images; empty when there is no cost or faithfulness data."""
    split = _last_split(per_seed)
    rows = per_seed[(per_seed["split"] == split) & (per_seed["class"] == "overall") & per_seed["metric"].isin(COST_COLUMNS)]
    present = set(rows["metric"])
    if not (present - {"tko", "win_rate"}) and randomized is None:
        return []  # nothing that sections 2 and 3 do not already show
    # Seconds per image become milliseconds per seed first, so that the std over seeds is in ms too.
    value = rows["value"].where(rows["metric"] != "seconds", rows["value"] * 1000.0)
    across = across_seeds(rows.assign(value=value)[["experiment", "seed", "method", "metric", "value"]])
    across = across.assign(column=across["metric"].map(COST_COLUMNS)).drop(columns=["metric"])
    order = [COST_COLUMNS[m] for m in COST_COLUMNS if m in present]
    if randomized is not None:
        sanity = _randomization_after_all_layers(randomized).assign(column=RANDOMIZATION_COLUMN)
        across = pd.concat([across, sanity], ignore_index=True)
        order.append(RANDOMIZATION_COLUMN)
    table = mean_std_table(across, rows=["experiment", "method"], columns="column", order={"column": order, "method": methods})
    report.tables["cost_quality"] = table
    caption = f"Cost and quality on {split} (all images)"
    write_table(table, tables_dir, "cost_quality", caption=caption)
    return [
        (
            "What each method costs (wall time per image) next to how well it localises (TKO, win-rate) and how "
            "faithful it is (deletion AUC: lower is better; insertion AUC: higher; infidelity and max-sensitivity: "
            f"lower; randomisation |ρ|: lower, > {SANITY_THRESHOLD:g} fails the sanity check)."
        ),
        "",
        to_markdown(table, caption=_caption(f"{caption}, ", table)),
        "",
    ]


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


def _across_experiment_lines(
    report: Report, tables_dir: Path, per_image: pd.DataFrame, per_seed: pd.DataFrame, methods: list[str]
) -> list[str]:
    """One table, metric × method rows and one column per experiment (backbone): mean ± std and rank in the column."""
    labels, kind = _experiment_labels(per_image)
    split = _last_split(per_seed)
    rows = per_seed[(per_seed["split"] == split) & (per_seed["class"] == "overall")]
    records, remarks = [], []
    for metric, (name, higher_better) in ACROSS_EXPERIMENT_METRICS.items():
        subset = rows[rows["metric"] == metric]
        if subset.empty:
            continue
        across = across_seeds(subset[["experiment", "seed", "method", "value"]])
        means = across.pivot(index="method", columns="experiment", values="mean").rename(columns=labels)
        spread = across.pivot(index="method", columns="experiment", values="std").rename(columns=labels)
        ranks = means.rank(ascending=not higher_better, method="min")
        ordered = [m for m in methods if m in means.index] + sorted(set(means.index) - set(methods))
        for method in ordered:
            record = {"metric": name, "method": method}
            for column in means.columns:
                cell = mean_std_label(means.loc[method, column], spread.loc[method, column])
                rank = ranks.loc[method, column]
                record[column] = cell if math.isnan(rank) else f"{cell} ({int(rank)})"
            records.append(record)
        remarks.append(_ranking_remark(name, means, higher_better))
    if not records:
        return ["No TKO, win-rate or deletion AUC to compare across experiments.", ""]
    table = pd.DataFrame.from_records(records)
    table.attrs["seeds_note"] = "mean ± std over seeds (rank within the column, 1 = best)"
    report.tables["across_experiments"] = table
    caption = f"Methods across experiments on {split} (all images), one column per {kind}"
    write_table(table, tables_dir, "across_experiments", caption=caption)
    return [
        (
            f"Each method's score in each {kind}, with its rank among the methods of that column "
            "(deletion AUC: lower is better)."
        ),
        "",
        to_markdown(table, caption=_caption(f"{caption}; ", table)),
        "",
        *[f"- {remark}" for remark in remarks],
        "",
    ]


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
