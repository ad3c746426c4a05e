"""Turn an experiment's tidy results into the paper-style report: tables, significance, figures, report.md.

``build_report`` is what ``evaluate.py`` calls; every number in the report is computed here from
``metrics.csv`` and ``per_image.parquet``, so the report can be rebuilt from those files alone.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from xai_lightning.evaluation.layers import layer_table
from xai_lightning.metrics.names import DEFAULT_WIN_TIES
from xai_lightning.reporting import figures
from xai_lightning.reporting.analysis_sections import layer_section, tcav_section
from xai_lightning.reporting.radar import radar_section
from xai_lightning.reporting.check_sections import across_experiments_section, cost_section, truth_section
from xai_lightning.reporting.check_summaries import randomization_summary
from xai_lightning.reporting.report_sections import (
    MODEL_METRICS,
    Report,
    ReportWriter,
    given,
    model_section,
    seed_sections,
)

__all__ = ["MODEL_METRICS", "Report", "build_report"]


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
    hierarchical_n_boot: int | None = None,
    ddof: int = 1,
    win_ties: str = DEFAULT_WIN_TIES,
    layer_sensitivity: pd.DataFrame | None = None,
    tcav: pd.DataFrame | None = None,
) -> Report:
    """Write tables (CSV, Markdown, LaTeX), figures (PNG) and ``report.md`` into ``out_dir``.

    Tables: model metrics per split; win-rate per split × class × method; TKO and the other
    localisation metrics per split × class × method — each mean ± std over seeds. Significance:
    paired Wilcoxon tests and bootstrap CIs of each pair's win-rate and TKO difference on each split
    (claims resting on seeds), then a hierarchical bootstrap over seeds and images (claims resting on
    both) of each method's mean, each pair's difference and each method against the best reference
    baseline, with ``hierarchical_n_boot`` replicates (default: ``n_boot``, at most
    ``HIERARCHICAL_N_BOOT``).

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

    ``ddof`` is the std over seeds of the model, win-rate and localisation tables (1: the sample std; 0: the
    population std the poster's tables use); ``win_ties`` the win-rate's tie rule (``fair`` or ``first_listed``).
    A "Methods on every metric at once" section draws each experiment's normalised ranks as a radar with its
    area; ``layer_sensitivity`` (:func:`~xai_lightning.evaluation.layers.layer_sensitivity` rows) adds "Which
    layer to explain", and ``tcav`` (:func:`~xai_lightning.evaluation.tcav.tcav_table` rows) a TCAV section.
    """
    out = Path(out_dir)
    writer = ReportWriter(Report(path=out / "report.md"), out)
    sections = [model_section(writer, model_metrics, ddof)]
    per_seed: pd.DataFrame | None = None
    methods: list[str] | None = None
    if given(per_image):
        per_seed, methods, seed_parts = seed_sections(
            writer, per_image, n_boot, hierarchical_n_boot, ddof=ddof, win_ties=win_ties
        )
        sections += seed_parts
    randomized = randomization_summary(randomization) if given(randomization) else None
    sections.append(truth_section(writer, faithfulness_curves, randomized, stability, agreement, methods, per_image))
    if per_seed is not None:
        sections.append(cost_section(writer, per_seed, randomized, methods))
        sections.append(across_experiments_section(writer, per_image, per_seed, methods))
        sections.append(radar_section(writer, per_seed, randomized, per_image))
    if given(layer_sensitivity):
        sections.append(layer_section(writer, layer_table(layer_sensitivity, ddof=ddof)))
    if given(tcav):
        sections.append(tcav_section(writer, tcav, per_image))
    if examples:
        writer.figure("heatmap_grid", figures.heatmap_grid, examples)
    if given(curves):
        writer.figure("training_curves", figures.training_curves, curves)

    lines = [f"# {title}", ""] + [f"> {note}" for note in notes or []] + ([""] if notes else [])
    for number, section in enumerate((s for s in sections if s is not None), start=1):
        lines += section.render(number)
    lines += ["## Figures", "", *writer.remaining_figures()]
    lines += ["Tables as CSV, Markdown and LaTeX: `tables/`. Per-seed values: `tables/per_seed.csv`."]
    writer.report.path.parent.mkdir(parents=True, exist_ok=True)
    writer.report.path.write_text("\n".join(lines) + "\n")
    return writer.report
