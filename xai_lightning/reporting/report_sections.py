"""The parts report.md is built from: the Report being written, its sections, and the sections on results over seeds.

Model metrics, win-rate and TKO tables, the other metrics, the significance tests and the hierarchical bootstrap, each
one function; the checks' sections are in :mod:`.check_sections`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from xai_lightning.data.splits import SPLITS
from xai_lightning.metrics.names import DEFAULT_WIN_TIES, OVERALL, metric_label
from xai_lightning.reporting import figures
from xai_lightning.reporting.hierarchical import (
    HIERARCHICAL_N_BOOT,
    REFERENCE_METHODS,
    beats_best_reference,
    hierarchical_comparisons,
    hierarchical_means,
    image_values,
)
from xai_lightning.reporting.seeds import across_seeds, excluded_counts, latest_split, per_seed_summary
from xai_lightning.reporting.significance import paired_comparisons, significance_sentences
from xai_lightning.reporting.tables import mean_std_table, to_markdown, write_table

#: The report note of results on the generated data, which must never pass for MVTec AD's.
SYNTHETIC_DATA_NOTE = "Data: SYNTHETIC hazelnut-like images (xai_lightning.data.synthetic), not MVTec AD."
MODEL_METRICS = ["loss", "loss_ce", "loss_bce", "acc", "balanced_acc", "seg_iou"]
#: The metrics with a table of their own per split and class, and the words their section is titled with.
LOCALIZATION_SECTIONS = {"win_rate": "Win-rate", "tko": "Top-K overlap"}
#: Metrics shown elsewhere than "Other metrics": win-rate and TKO have their own sections, time the cost table.
OWN_SECTION_METRICS = ("win_rate", "tko", "seconds")
#: The metrics whose differences between methods are tested for significance, on every split.
COMPARED_METRICS = ("win_rate", "tko")
#: Below this many seeds the report warns that the hierarchical CIs see little of the seed-to-seed variation
#: (also the fewest seeds with which the per-seed Wilcoxon test can reach p < 0.05).
FEW_SEEDS = 6


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


def model_section(writer: ReportWriter, model_metrics: pd.DataFrame, ddof: int = 1) -> Section:
    """Section "Model metrics per split": loss, accuracy and segmentation IoU, mean ± std (``ddof``) over seeds."""
    model = model_metrics.drop(columns=["run"], errors="ignore")
    model = model[model["metric"].isin(MODEL_METRICS)]
    order = {"metric": MODEL_METRICS}
    table = mean_std_table(across_seeds(model, ddof=ddof), rows=["experiment", "split"], columns="metric", order=order)
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
        "a difference *holds* when the CI excludes 0 and p < 0.05. These claims rest on seeds: "
        "n = the number of seeds, each seed one value (its mean over the images)."
    )
    return Section("Which differences hold", [explanation, "", *[f"- {s}" for s in writer.report.sentences], ""])


def _levels_paragraph(means: pd.DataFrame) -> str:
    """The paragraph that says which level (seeds, or seeds and images) each claim of the section rests on."""
    seeds = int(means["n_seeds"].max())
    low, high = int(means["n_images"].min()), int(means["n_images"].max())
    images = f"{high}" if low == high else f"{low}–{high}"
    few_seeds = (
        f" With {seeds} seeds, resampling seeds sees little of how much training runs differ, so these CIs can be "
        "too narrow across seeds."
        if seeds < FEW_SEEDS
        else ""
    )
    return (
        f"**Which level each claim rests on.** The per-seed comparisons above (Wilcoxon and bootstrap) rest on seeds "
        f"alone (n = {seeds} seeds): they ask whether another training seed would change the result on these same "
        f"test images. The claims below rest on seeds and images (hierarchical bootstrap, n = {seeds} seeds × "
        f"{images} images): every replicate resamples the seeds and the images, one image draw shared by all seeds "
        "since they re-use the same test images, so a difference carried by a few images does not hold. "
        "Paired: both methods of a difference see the same resampled seeds and images." + few_seeds
    )


def _ci_text(row: dict, digits: int = 3) -> str:
    return f"{row['mean_diff']:+.{digits}f} ({row['ci_low']:.{digits}f} to {row['ci_high']:.{digits}f})"


def _pair_sentences(pairs: pd.DataFrame, per_seed: pd.DataFrame | None, prefix: dict) -> list[str]:
    """Per experiment × split × metric: how many pairs hold at each level, and the per-seed claims images undo."""
    key = ["experiment", "split", "metric", "method_a", "method_b"]
    if per_seed is not None and len(per_seed):
        pairs = pairs.merge(per_seed[key + ["holds"]].rename(columns={"holds": "holds_per_seed"}), on=key, how="left")
    lines = []
    for (experiment, split, metric), rows in pairs.groupby(["experiment", "split", "metric"], sort=False):
        what = f"{prefix[experiment]}{split} {metric_label(metric)}"
        line = f"{what}: {int(rows['holds'].sum())} of {len(rows)} pairs hold"
        if "holds_per_seed" not in rows:
            lines.append(line + " over seeds and images.")
            continue
        # eq() reads a pair without a per-seed verdict (NaN) as not holding.
        per_seed_holds = rows["holds_per_seed"].eq(True)
        undone = rows[per_seed_holds & ~rows["holds"]]
        names = ", ".join(f"{a} vs {b}" for a, b in zip(undone["method_a"], undone["method_b"])) or "none"
        lines.append(
            f"{line} over seeds and images, {int(per_seed_holds.sum())} per seed. "
            f"Held per seed but not over images: {names}."
        )
    return lines


def _reference_sentences(beats: pd.DataFrame, means: pd.DataFrame, prefix: dict, level: str) -> list[str]:
    """Per experiment × split × metric: the best reference, the methods that beat it and the CI of each difference."""
    lines = []
    for (experiment, split, metric), rows in means.groupby(["experiment", "split", "metric"], sort=False):
        what = f"{prefix[experiment]}{split} {metric_label(metric)}"
        compared = beats[(beats["experiment"] == experiment) & (beats["split"] == split) & (beats["metric"] == metric)]
        if compared.empty:
            run = set(rows["method"]) & set(REFERENCE_METHODS)
            names = ", ".join(REFERENCE_METHODS)
            reason = "only references were run" if run else f"no reference ({names}) was run"
            lines.append(f"{what}: {reason}; the comparison with the best reference is skipped.")
            continue
        first = compared.iloc[0]
        winners = [f"{r['method']} {_ci_text(r)}" for r in compared[compared["beats"]].to_dict("records")]
        others = [f"{r['method']} {_ci_text(r)}" for r in compared[~compared["beats"]].to_dict("records")]
        lines.append(
            f"{what}: best reference {first['reference']} ({first['reference_mean']:.3f}); "
            f"{len(winners)} of {len(compared)} methods beat it ({level} of the difference above 0): "
            f"{', '.join(winners) or 'none'}. Not shown to beat it: {', '.join(others) or 'none'}."
        )
    return lines


def _stack(frames: list[pd.DataFrame]) -> pd.DataFrame:
    """The frames one below the other; empty ones (a split without any reference) left out, their columns kept."""
    full = [f for f in frames if len(f)]
    return pd.concat(full, ignore_index=True) if full else frames[0]


def _split_order(per_image: pd.DataFrame) -> list[str]:
    present = set(per_image["split"].unique())
    return [s for s in SPLITS if s in present] + sorted(present - set(SPLITS))


def hierarchical_subsections(
    writer: ReportWriter,
    per_image: pd.DataFrame,
    methods: list[str],
    n_boot: int = HIERARCHICAL_N_BOOT,
    per_seed_comparisons: pd.DataFrame | None = None,
    win_ties: str = DEFAULT_WIN_TIES,
) -> list[tuple[str, list[str]]]:
    """Subsections "Seeds and images" and "Beating the best reference" of "Which differences hold" (none without TKO).

    The hierarchical bootstrap of :mod:`.hierarchical` for every metric of ``COMPARED_METRICS`` on every split:
    each method's mean with its CI (``tables/hierarchical``), every pair's paired difference
    (``tables/hierarchical_pairs``, summarised in sentences next to ``per_seed_comparisons``, the per-seed verdicts)
    and each method against the best reference (``tables/beats_reference``).
    """
    means, pairs, beats = [], [], []
    for metric in COMPARED_METRICS:
        values = image_values(per_image, metric, win_ties=win_ties)
        for split in _split_order(per_image):
            # A method that has no value of this metric on this split has nothing to resample.
            run = set(values.loc[values["split"] == split, "method"].unique())
            present = [m for m in methods if m in run]
            if not present:
                continue
            means.append(hierarchical_means(values, split, present, n_boot=n_boot))
            pairs.append(hierarchical_comparisons(values, split, present, n_boot=n_boot))
            beats.append(beats_best_reference(values, split, present, n_boot=n_boot))
    if not means:
        return []
    means, pairs, beats = _stack(means), _stack(pairs), _stack(beats)
    experiments = means["experiment"].unique()
    prefix = {e: (f"{e}, " if len(experiments) > 1 else "") for e in experiments}
    level = f"{100 * (1 - float(means['alpha'].iloc[0])):g} % CI"

    write_table(
        pairs.drop(columns=["alpha"]),
        writer.tables_dir,
        "hierarchical_pairs",
        caption=f"Paired differences over seeds and images (hierarchical bootstrap, {level})",
    )
    writer.report.tables["hierarchical_pairs"] = pairs
    caption = f"Mean per method over seeds and images, hierarchical bootstrap {level}"
    means_lines = writer.table("hierarchical", means.drop(columns=["alpha"]), caption, md_prefix=caption)
    seeds_and_images = [_levels_paragraph(means), "", *means_lines]
    seeds_and_images += [*[f"- {s}" for s in _pair_sentences(pairs, per_seed_comparisons, prefix)], ""]

    references = (
        f"References: {', '.join(REFERENCE_METHODS)} (segmentation_head is trained on the masks, an upper reference, "
        "not one to beat). Per split and metric the best reference is the one with the highest mean; a method "
        f"*beats* it when the {level} of the paired difference lies above 0 (seeds and images)."
    )
    reference_lines = [references, ""]
    if len(beats):
        caption = f"Each method against the best reference, hierarchical bootstrap {level}"
        reference_lines += writer.table("beats_reference", beats.drop(columns=["alpha"]), caption, md_prefix=caption)
    reference_lines += [*[f"- {s}" for s in _reference_sentences(beats, means, prefix, level)], ""]
    return [
        ("Seeds and images: hierarchical bootstrap", seeds_and_images),
        ("Beating the best reference", reference_lines),
    ]


def seed_sections(
    writer: ReportWriter,
    per_image: pd.DataFrame,
    n_boot: int,
    hierarchical_n_boot: int | None = None,
    *,
    ddof: int = 1,
    win_ties: str = DEFAULT_WIN_TIES,
) -> tuple[pd.DataFrame, list[str], list[Section]]:
    """The sections on localisation over seeds (std with ``ddof``; ties by ``win_ties``), figures and side tables.

    ``hierarchical_n_boot`` is the hierarchical bootstrap's number of replicates, by default ``n_boot`` up to
    ``HIERARCHICAL_N_BOOT`` (each of its replicates resamples every image, so it costs far more than one per seed).

    Returns:
        The per-seed summary, the methods in report order and the sections (win-rate, TKO, other
        metrics, significance with the hierarchical bootstrap as its subsections).
    """
    per_seed = per_seed_summary(per_image, win_ties=win_ties)
    per_seed.to_csv(writer.tables_dir / "per_seed.csv", index=False)
    across = across_seeds(per_seed, ddof=ddof)
    methods = method_order(across)
    sections = [*localization_sections(writer, across, methods), other_metrics_section(writer, across, methods)]
    excluded_counts(per_image).to_csv(writer.tables_dir / "excluded_images.csv", index=False)
    significance = significance_section(writer, per_seed, methods, n_boot)
    if hierarchical_n_boot is None:
        hierarchical_n_boot = min(n_boot, HIERARCHICAL_N_BOOT)
    comparisons = writer.report.tables["comparisons"]
    significance.subsections += hierarchical_subsections(
        writer, per_image, methods, hierarchical_n_boot, comparisons, win_ties=win_ties
    )
    sections.append(significance)
    split = latest_split(across)
    writer.figure("win_rate_bars", figures.win_rate_bars, across, split=split, methods=methods)
    writer.figure(
        "tko_distributions", figures.metric_distributions, per_image, metric="tko", split=split, methods=methods
    )
    return per_seed, methods, sections
