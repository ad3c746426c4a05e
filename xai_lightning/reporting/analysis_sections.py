"""Report sections of the optional analyses of ``evaluate.py``: which layer to explain, and TCAV.

The tables they show are computed in :mod:`xai_lightning.evaluation.layers` and :mod:`xai_lightning.evaluation.tcav`;
here they are only laid out as markdown, LaTeX, CSV and figures, like every other section of ``report.md``.
"""

from __future__ import annotations

import pandas as pd

from xai_lightning.evaluation.layers import LAYER_METRICS
from xai_lightning.evaluation.tcav import SIGNIFICANCE_LEVEL, concept_matches, maps_where_concepts_drive
from xai_lightning.metrics.names import LOWER_IS_BETTER, OVERALL, metric_label
from xai_lightning.reporting.check_sections import _slug
from xai_lightning.reporting.figures.layers import layer_curves
from xai_lightning.reporting.report_sections import ReportWriter, Section
from xai_lightning.reporting.tables import mean_std_table

__all__ = ["layer_section", "tcav_section"]


def layer_section(writer: ReportWriter, table: pd.DataFrame) -> Section | None:
    """Section "Which layer to explain": the overall mean ± std per stage and metric, and the figure per experiment.

    ``table`` is :func:`~xai_lightning.evaluation.layers.layer_table` output (the per-class values go to ``tables/layer_sensitivity_per_class.csv``).
    Left out (None) when ``table`` has no rows.
    """
    if table is None or table.empty:
        return None
    writer.tables_dir.mkdir(parents=True, exist_ok=True)
    table.to_csv(writer.tables_dir / "layer_sensitivity_per_class.csv", index=False)
    overall = table[table["class"] == OVERALL].assign(column=lambda t: t["metric"].map(metric_label))
    stages = overall.sort_values("stage_index")["stage"].drop_duplicates().tolist()
    order = {"column": [metric_label(m) for m in LAYER_METRICS], "stage": stages}
    shown = mean_std_table(overall, rows=["experiment", "split", "stage"], columns="column", order=order)
    caption = f"{table.attrs.get('method', 'layer CAM')} hooked at each encoder stage (all images)"
    lower = ", ".join(metric_label(m) for m in LAYER_METRICS if m in LOWER_IS_BETTER)
    lines = [
        (
            "The same layer CAM hooked at each encoder stage that outputs a feature map, from the input side "
            f"(stem) to the deepest stage: localisation (TKO, pointing game) and faithfulness ({lower}: lower is "
            "better). Mean over the images of each seed, then mean ± std over seeds."
        ),
        "",
        *writer.table("layer_sensitivity", shown, caption, md_prefix=f"{caption}, "),
    ]
    experiments = sorted(table["experiment"].unique())
    for experiment in experiments:
        name = "layer_curves" if len(experiments) == 1 else f"layer_curves_{_slug(experiment)}"
        writer.figure(name, layer_curves, table, experiment=experiment)
        lines += writer.embed(name)
    return Section("Which layer to explain", lines)


def tcav_section(writer: ReportWriter, table: pd.DataFrame, per_image: pd.DataFrame | None = None) -> Section:
    """Section "TCAV: do the defect concepts drive their classes?": the per-class matches, the maps' TKO on those
    classes (``per_image``: the evaluation's per-image scores) and the full table."""

    matches = concept_matches(table)
    related = maps_where_concepts_drive(matches, per_image)
    lines = [
        (
            "Concepts are patches cut inside each defect class's masks, pasted on a neutral image; CAVs are trained "
            f"against {int(table['random_runs'].max())} random sets of `good` patches, and a concept is significant "
            f"for a class when a two-sided t-test of its TCAV scores against random-vs-random scores gives "
            f"p < {SIGNIFICANCE_LEVEL}. *drives*: significant and above chance. *transplant_effect*: the median change "
            "of the class's log-probability when the concept's own pixels (inside its masks) are pasted onto good "
            "images, the size of the effect that TCAV only gives the direction of. TCAV is a local, gradient-based "
            "test: a model also responds to a pattern it never learnt, when the pattern looks unlike a good nut."
        ),
        "",
        *writer.table("tcav_matches", matches, "TCAV: own concept of each defect class", "Own concept per class"),
        *(
            writer.table(
                "tcav_maps",
                related,
                "Mean TKO per method on each class, by whether its concept drives it",
                "The maps on the same classes: mean TKO per method",
            )  # fmt: skip
            if len(related)
            else []
        ),
        *writer.table("tcav", table, "TCAV scores per class and concept", "All classes and concepts"),
    ]
    return Section("TCAV: do the defect concepts drive their classes?", lines)
