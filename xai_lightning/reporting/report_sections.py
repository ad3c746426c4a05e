"""The parts report.md is built from: the Report being written, its sections, and the sections on results over seeds.

Model metrics, win-rate and TKO tables, the other metrics and the significance tests, each one function; the checks'
sections are in :mod:`.check_sections`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from xai_lightning.metrics.names import OVERALL
from xai_lightning.reporting import figures
from xai_lightning.reporting.seeds import across_seeds, excluded_counts, latest_split, per_seed_summary
from xai_lightning.reporting.significance import paired_comparisons, significance_sentences
from xai_lightning.reporting.tables import mean_std_table, to_markdown, write_table

MODEL_METRICS = ["loss", "loss_ce", "loss_bce", "acc", "balanced_acc", "seg_iou"]
#: The metrics with a table of their own per split and class, and the words their section is titled with.
LOCALIZATION_SECTIONS = {"win_rate": "Win-rate", "tko": "Top-K overlap"}
#: Metrics shown elsewhere than "Other metrics": win-rate and TKO have their own sections, time the cost table.
OWN_SECTION_METRICS = ("win_rate", "tko", "seconds")
#: The metrics whose differences between methods are tested for significance, on every split.
COMPARED_METRICS = ("win_rate", "tko")


@dataclass
class Report:
    """What ``build_report`` wrote: the report itself, tables by name and figures by name."""

    path: Path
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    figures: dict[str, Path] = field(default_factory=dict)
    sentences: list[str] = field(default_factory=list)


@dataclass
class Section:
    """One numbered section of report.md: its heading, its lines, and the (heading, lines) of its subsections.

    Sections are numbered when the report is put together, so that a section left out renumbers those after it.
    """

    heading: str
    lines: list[str]
    subsections: list[tuple[str, list[str]]] = field(default_factory=list)

    def render(self, number: int) -> list[str]:
        """The section's Markdown lines under the heading ``## <number>. <heading>``."""
        lines = [f"## {number}. {self.heading}", "", *self.lines]
        for index, (heading, body) in enumerate(self.subsections, start=1):
            lines += [f"### {number}.{index} {heading}", "", *body]
        return lines


@dataclass
class ReportWriter:
    """Writes a report's tables and figures under ``out`` and records them in ``report``.

    ``shown`` names the figures already embedded in their section, which the closing "Figures" list leaves out.
    """

    report: Report
    out: Path
    shown: set[str] = field(default_factory=set)

    @property
    def tables_dir(self) -> Path:
        return self.out / "tables"

    @property
    def figures_dir(self) -> Path:
        return self.out / "figures"

    def table(self, name: str, table: pd.DataFrame, caption: str, md_prefix: str = "") -> list[str]:
        """Keep ``table`` as ``report.tables[name]``, write it as CSV, Markdown and LaTeX; the lines that show it.

        In report.md the caption is ``md_prefix`` followed by the table's seeds note (the files get ``caption``).
        """
        self.report.tables[name] = table
        write_table(table, self.tables_dir, name, caption=caption)
        return [to_markdown(table, caption=(md_prefix + table.attrs.get("seeds_note", "")).strip()), ""]

    def figure(self, name: str, draw: Callable[..., Path], data: object, **kwargs: object) -> Path | None:
        """Draw ``figures/<name>.png`` and keep it as ``report.figures[name]``.

        A figure that cannot be drawn (e.g. one experiment lacks a split) is skipped, not fatal: None.
        """
        path = self.figures_dir / f"{name}.png"
        try:
            drawn = draw(data, path, **kwargs)
        except ValueError as error:
            print(f"[report] skipped {path.name}: {error}")
            drawn = None
        self.report.figures[name] = drawn
        return drawn

    def embed(self, name: str) -> list[str]:
        """Markdown lines showing one written figure where it is discussed (and not again under "Figures")."""
        path = self.report.figures.get(name)
        if path is None:
            return []
        self.shown.add(name)
        return [f"![{name}]({path.relative_to(self.out).as_posix()})", ""]

    def remaining_figures(self) -> list[str]:
        """Markdown lines showing every written figure that no section has embedded."""
        lines = []
        for name, path in self.report.figures.items():
            if path is not None and name not in self.shown:
                lines += [f"![{name}]({path.relative_to(self.out).as_posix()})", ""]
        return lines


def given(frame: pd.DataFrame | None) -> bool:
    """Whether an optional table was passed with rows: None and empty frames both leave their section out."""
    return frame is not None and len(frame) > 0


def model_section(writer: ReportWriter, model_metrics: pd.DataFrame) -> Section:
    """Section "Model metrics per split": loss, accuracy and segmentation IoU, mean ± std over seeds."""
    model = model_metrics.drop(columns=["run"], errors="ignore")
    model = model[model["metric"].isin(MODEL_METRICS)]
    order = {"metric": MODEL_METRICS}
    table = mean_std_table(across_seeds(model), rows=["experiment", "split"], columns="metric", order=order)
    return Section("Model metrics per split", writer.table("model_metrics", table, "Model metrics per split"))


def method_order(across: pd.DataFrame) -> list[str]:
    """Methods by overall test (else last split) win-rate, best first: the order tables and figures share."""
    split = latest_split(across)
    ranking = across[(across["metric"] == "win_rate") & (across["class"] == OVERALL) & (across["split"] == split)]
    ranked = ranking.groupby("method")["mean"].mean().sort_values(ascending=False).index.tolist()
    return ranked + sorted(set(across["method"]) - set(ranked))


def localization_sections(writer: ReportWriter, across: pd.DataFrame, methods: list[str]) -> list[Section]:
    """One section per metric of ``LOCALIZATION_SECTIONS``: a table per split × class × method."""
    sections = []
    for metric, name in LOCALIZATION_SECTIONS.items():
        subset = across[across["metric"] == metric]
        order = {"method": methods}
        table = mean_std_table(subset, rows=["experiment", "split", "class"], columns="method", order=order)
        title = f"{name} per split and class"
        sections.append(Section(title, writer.table(metric, table, title)))
    return sections


def other_metrics_section(writer: ReportWriter, across: pd.DataFrame, methods: list[str]) -> Section:
    """Section "Other metrics per split (overall)": one table per metric without a section of its own."""
    lines = []
    for metric in sorted(set(across["metric"]) - set(OWN_SECTION_METRICS)):
        subset = across[(across["metric"] == metric) & (across["class"] == OVERALL)]
        table = mean_std_table(subset, rows=["experiment", "split"], columns="method", order={"method": methods})
        lines += [f"**{metric}**", "", *writer.table(metric, table, f"{metric} per split (overall)")]
    return Section("Other metrics per split (overall)", lines)


def significance_section(writer: ReportWriter, per_seed: pd.DataFrame, methods: list[str], n_boot: int) -> Section:
    """Section "Which differences hold": paired tests of every pair's win-rate and TKO on every split."""
    comparisons = pd.concat(
        [
            paired_comparisons(per_seed, metric=metric, split=split, class_=OVERALL, methods=methods, n_boot=n_boot)
            for split in sorted(per_seed["split"].unique())
            for metric in COMPARED_METRICS
        ],
        ignore_index=True,
    )
    caption = "Paired comparisons across seeds"
    write_table(comparisons.drop(columns=["note"], errors="ignore"), writer.tables_dir, "comparisons", caption=caption)
    writer.report.tables["comparisons"] = comparisons
    writer.report.sentences = significance_sentences(comparisons)
    explanation = (
        "Paired over seeds: Wilcoxon signed-rank p-value and a 95 % bootstrap CI of the mean difference; "
        "a difference *holds* when the CI excludes 0 and p < 0.05."
    )
    return Section("Which differences hold", [explanation, "", *[f"- {s}" for s in writer.report.sentences], ""])


def seed_sections(
    writer: ReportWriter, per_image: pd.DataFrame, n_boot: int
) -> tuple[pd.DataFrame, list[str], list[Section]]:
    """The sections on localisation over seeds, their figures and side tables.

    Returns:
        The per-seed summary, the methods in report order and the sections (win-rate, TKO, other
        metrics, significance).
    """
    per_seed = per_seed_summary(per_image)
    per_seed.to_csv(writer.tables_dir / "per_seed.csv", index=False)
    across = across_seeds(per_seed)
    methods = method_order(across)
    sections = [*localization_sections(writer, across, methods), other_metrics_section(writer, across, methods)]
    excluded_counts(per_image).to_csv(writer.tables_dir / "excluded_images.csv", index=False)
    sections.append(significance_section(writer, per_seed, methods, n_boot))
    split = latest_split(across)
    writer.figure("win_rate_bars", figures.win_rate_bars, across, split=split, methods=methods)
    writer.figure(
        "tko_distributions", figures.metric_distributions, per_image, metric="tko", split=split, methods=methods
    )
    return per_seed, methods, sections
