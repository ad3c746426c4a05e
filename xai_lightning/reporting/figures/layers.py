"""Layer sensitivity figure: how TKO, the pointing game and deletion AUC change with the encoder stage a CAM hooks."""

from __future__ import annotations

from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from xai_lightning.metrics.names import LOWER_IS_BETTER, metric_label
from xai_lightning.reporting.figures import common
from xai_lightning.reporting.figures.common import FULL_WIDTH, order_classes, select, select_experiment
from xai_lightning.reporting.seeds import latest_split

#: The panels, left to right.
LAYER_CURVE_METRICS = ("tko", "pointing_game", "deletion_auc")


def layer_curves(
    table: pd.DataFrame,
    path: str | Path,
    experiment: str | None = None,
    split: str | None = None,
    metrics: tuple[str, ...] = LAYER_CURVE_METRICS,
) -> Path:
    """One panel per metric against the stage (encoder order), one line per class, a band of ± std over seeds.

    ``table`` is :func:`~xai_lightning.evaluation.layers.layer_table` output; ``experiment`` may be left out when
    it holds one, ``split`` defaults to the last split present. A metric the table lacks is left out; none at all
    is a ValueError (the report then skips the figure).
    """
    rows = select_experiment(table, experiment, "layer table")
    rows = select(rows, "split", split or latest_split(rows, "layer table"), "layer table")
    panels = [m for m in metrics if (rows["metric"] == m).any()]
    if not panels:
        raise ValueError(f"layer table has none of the metrics {list(metrics)}; it has {sorted(set(rows['metric']))}")
    stages = rows.drop_duplicates("stage_index").sort_values("stage_index")
    classes = order_classes(rows["class"].unique())
    colors = common.method_colors(classes)
    with matplotlib.rc_context(common.FONT):
        fig = Figure(figsize=(FULL_WIDTH, 2.4), layout="constrained")
        axes = fig.subplots(1, len(panels), squeeze=False)[0]
        for ax, metric in zip(axes, panels):
            _panel(ax, rows[rows["metric"] == metric], stages, classes, colors)
            better = "lower" if metric in LOWER_IS_BETTER else "higher"
            ax.set_title(f"{metric_label(metric)} ({better} is better)")
        handles = [Line2D([], [], color=colors[c], linewidth=2.0 if c == "overall" else 1.2, label=c) for c in classes]
        fig.legend(handles=handles, loc="outside right upper", frameon=False, title="class")
        n_seeds = int(rows["n_seeds"].max())
        fig.suptitle(f"{rows.attrs.get('method', 'layer CAM')} by encoder stage, line: mean of {n_seeds} seed(s), "
                     "band: ± std")
        return common.save_figure(fig, path)


def _panel(ax, rows: pd.DataFrame, stages: pd.DataFrame, classes: list[str], colors: dict) -> None:
    """One metric's lines, a class each, over the stages; a stage a class has no value at is a gap, not a zero."""
    x = np.arange(len(stages))
    for name in classes:
        values = rows[rows["class"] == name].set_index("stage_index").reindex(stages["stage_index"])
        mean, std = values["mean"].to_numpy(float), values["std"].fillna(0.0).to_numpy(float)
        overall = name == "overall"
        ax.plot(x, mean, color=colors[name], marker="o", markersize=3, linewidth=2.0 if overall else 1.2)
        ax.fill_between(x, mean - std, mean + std, color=colors[name], alpha=0.15, linewidth=0)
    ax.set_xticks(x, stages["stage"].tolist())
    ax.set_xlabel("encoder stage (input → output)")
    ax.grid(alpha=0.3, linewidth=0.5)

