"""Turn an experiment's tidy results into the paper-style report: tables, significance, figures, report.md.

``build_report`` is what ``evaluate.py`` calls; every number in the report is computed here from
``metrics.csv`` and ``per_image.parquet``, so the report can be rebuilt from those files alone.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from xai_lightning.reporting import figures
from xai_lightning.reporting.aggregate import (
    across_seeds,
    excluded_counts,
    paired_comparisons,
    per_seed_summary,
    significance_sentences,
)
from xai_lightning.reporting.tables import mean_std_table, to_markdown, write_table

MODEL_METRICS = ["loss", "loss_ce", "loss_bce", "acc", "balanced_acc", "seg_iou"]


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
) -> Report:
    """Write tables (CSV, Markdown, LaTeX), figures (PNG) and ``report.md`` into ``out_dir``.

    Tables: model metrics per split; win-rate per split × class × method; TKO and the other
    localisation metrics per split × class × method — each mean ± std over seeds. Significance:
    paired Wilcoxon tests and bootstrap CIs of each pair's win-rate and TKO difference on each split.
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
        others = [m for m in sorted(across["metric"].unique()) if m not in ("win_rate", "tko")]
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
            "Paired over seeds: Wilcoxon signed-rank p-value and a 95 % bootstrap CI of the mean difference; "
            "a difference *holds* when the CI excludes 0 and p < 0.05.",
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
    if examples:
        report.figures["heatmap_grid"] = _figure(figures.heatmap_grid, examples, figures_dir / "heatmap_grid.png")
    if curves is not None and len(curves):
        report.figures["training_curves"] = _figure(figures.training_curves, curves, figures_dir / "training_curves.png")

    lines += ["## Figures", ""]
    for name, path in report.figures.items():
        if path is not None:
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
