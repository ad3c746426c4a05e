"""Figures of the checks on explanations: deletion/insertion curves, cascading randomisation, cross-method agreement.

Each function takes a check's tidy table (or its summary), writes one PNG and returns its path.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from xai_lightning.metrics.names import OVERALL
from xai_lightning.metrics.sanity import SANITY_THRESHOLD
from xai_lightning.reporting.check_summaries import agreement_square, randomization_summary
from xai_lightning.reporting.figures import common
from xai_lightning.reporting.seeds import latest_split

__all__ = ["FAITHFULNESS_CURVES", "agreement_heatmap", "faithfulness_curves", "randomization_curves"]

#: The two faithfulness curves, in the order their panels are drawn.
FAITHFULNESS_CURVES = {"deletion": "removed", "insertion": "inserted"}
#: What each faithfulness curve rewards, for the panel titles.
_FAITHFULNESS_GOAL = {"deletion": "lower is better", "insertion": "higher is better"}


def faithfulness_curves(
    curves: pd.DataFrame,
    out_path: str | Path,
    split: str | None = None,
    experiment: str | None = None,
    methods: Sequence[str] | None = None,
) -> Path:
    """Deletion and insertion curves side by side: target probability against the share of pixels changed.

    Per method a line is the mean over seeds of each run's image-averaged probability, with a band
    over seeds (± std with 3 seeds or more, min–max with fewer, as in ``training_curves``).

    Args:
        curves: the curve table (experiment, seed, split, method, curve, fraction, probability).
        out_path: where the PNG goes.
        split: the split to draw; default: test, else val, else train.
        experiment: which experiment to draw; needed only when the table holds several.
        methods: the methods to draw, in this order; default: all, by name.

    Returns:
        The path of the written PNG.
    """
    frame = common.select_experiment(curves, experiment, "faithfulness curves")
    split = latest_split(frame, "faithfulness curves") if split is None else split
    frame = common.select(frame, "split", split, "faithfulness curves")
    kinds = [kind for kind in FAITHFULNESS_CURVES if (frame["curve"] == kind).any()]
    if not kinds:
        found = sorted(map(str, frame["curve"].unique()))
        raise ValueError(f"faithfulness curves has no curve {list(FAITHFULNESS_CURVES)}; it has {found}.")
    colors = common.method_colors(frame["method"].unique())
    available = sorted(frame["method"].unique())
    methods = available if methods is None else common.check_methods(methods, available, "faithfulness curves")

    phrases = set()
    with matplotlib.rc_context(common.FONT):
        fig = Figure(figsize=(common.FULL_WIDTH, 2.6), layout="constrained")
        axes = fig.subplots(1, len(kinds), squeeze=False, sharey=True)[0]
        for ax, kind in zip(axes, kinds):
            for method in methods:
                rows = frame[(frame["curve"] == kind) & (frame["method"] == method)]
                if rows.empty:
                    continue
                stats, n_seeds = common.curve_summary(rows, x="fraction", value="probability")
                phrases.add(common.band_phrase(n_seeds))
                common.draw_band(ax, stats.index.to_numpy(dtype=float), stats, colors[method], label=method)
            ax.set_title(f"{kind.capitalize()} ({_FAITHFULNESS_GOAL[kind]})")
            ax.set_xlabel(f"fraction of pixels {FAITHFULNESS_CURVES[kind]}")
            ax.set_xlim(0.0, 1.0)
            ax.set_ylim(0.0, 1.02)
            ax.grid(linewidth=0.4, alpha=0.5)
        axes[0].set_ylabel("target probability")
        fig.suptitle(f"Faithfulness curves on {split} ({common.shared_band_phrase(phrases)})", fontsize=8)
        common.method_legend(fig, [Line2D([], [], color=colors[m], linewidth=1.2, label=m) for m in methods])
    return common.save_figure(fig, out_path)


def randomization_curves(
    summary_or_raw: pd.DataFrame,
    out_path: str | Path,
    experiment: str | None = None,
    methods: Sequence[str] | None = None,
    split: str | None = None,
    threshold: float = SANITY_THRESHOLD,
) -> Path:
    """Cascading randomisation: mean |Spearman| between intact and randomised maps as layers are destroyed.

    The x axis lists the layers in randomisation order (``original`` first); per method a line is
    the mean over seeds with a band over seeds. A method whose line stays above the dashed
    ``threshold`` once every layer is randomised fails the sanity check.

    Args:
        summary_or_raw: ``aggregate.randomization_summary`` output (… seed, method, step, layer,
            value), or the raw per-image frame it is computed from (with ``spearman``).
        out_path: where the PNG goes.
        experiment: which experiment to draw; needed only when the table holds several.
        methods: the methods to draw, in this order; default: all, by name.
        split: the split to draw when the table holds several; default: test, else val, else train.
        threshold: the sanity-check threshold drawn as a dashed line.

    Returns:
        The path of the written PNG.
    """
    frame = randomization_summary(summary_or_raw) if "spearman" in summary_or_raw.columns else summary_or_raw
    frame = common.select_experiment(frame, experiment, "randomization")
    if "split" in frame.columns and frame["split"].nunique() > 1:
        frame = common.select(frame, "split", split or latest_split(frame, "randomization"), "randomization")
    colors = common.method_colors(frame["method"].unique())
    available = sorted(frame["method"].unique())
    methods = available if methods is None else common.check_methods(methods, available, "randomization")
    layers = frame.groupby("step")["layer"].first().sort_index()
    steps = layers.index.to_numpy(dtype=float)
    dots = {"marker": "o", "markersize": 2.5}

    phrases = set()
    with matplotlib.rc_context(common.FONT):
        width = min(common.FULL_WIDTH, max(common.COLUMN_WIDTH + 1.2, 0.55 * len(layers) + 1.8))
        fig = Figure(figsize=(width, 2.6), layout="constrained")
        ax = fig.add_subplot()
        for method in methods:
            stats, n_seeds = common.curve_summary(frame[frame["method"] == method], x="step")
            phrases.add(common.band_phrase(n_seeds))
            common.draw_band(ax, steps, stats.reindex(layers.index), colors[method], **dots)
        ax.axhline(threshold, color="black", linestyle="--", linewidth=0.7, zorder=0)
        ax.set_xticks(steps, list(layers))
        common.slant_xticks(ax, 30)
        ax.set_xlabel("layers randomised, top-down (cumulative)")
        ax.set_ylabel("mean |Spearman ρ| with intact map")
        ax.set_ylim(0.0, 1.05)
        ax.grid(linewidth=0.4, alpha=0.5)
        ax.set_title(f"Cascading randomisation ({common.shared_band_phrase(phrases)})")
        handles = [Line2D([], [], color=colors[m], linewidth=1.2, label=m, **dots) for m in methods]
        handles.append(Line2D([], [], color="black", linestyle="--", linewidth=0.7, label=f"fails above {threshold:g}"))
        common.method_legend(fig, handles)
    return common.save_figure(fig, out_path)


def _annotate_square(ax: Axes, square: pd.DataFrame) -> None:
    """One agreement matrix as an image with its value written in every cell and the methods on both axes."""
    values = square.to_numpy(dtype=float)
    names = list(square.index)
    for i in range(len(names)):
        for j in range(len(names)):
            value = values[i, j]
            text = "—" if np.isnan(value) else f"{value:.2f}"
            # viridis is dark at the bottom: white text there, black on the light end.
            color = "white" if np.isnan(value) or value < 0.6 else "black"
            ax.text(j, i, text, ha="center", va="center", fontsize=6, color=color)
    ax.set_xticks(range(len(names)), names)
    ax.set_yticks(range(len(names)), names)
    common.slant_xticks(ax, 45)


def agreement_heatmap(
    matrix_frame: pd.DataFrame,
    out_path: str | Path,
    title: str | None = None,
    split: str | None = None,
    class_: str = OVERALL,
    methods: Sequence[str] | None = None,
) -> Path:
    """Annotated heatmap of the cross-method agreement matrix (top-10 % IoU), one panel per experiment.

    Args:
        matrix_frame: ``aggregate.agreement_summary`` output (experiment, split, class, method_a,
            method_b, iou, …): every matrix in long form.
        out_path: where the PNG goes.
        title: the figure's title; default names the split, class and number of seeds.
        split: the split to draw; default: test, else val, else train.
        class_: the class whose matrix is drawn; default all images together.
        methods: the order of rows and columns; default: sorted names.

    Returns:
        The path of the written PNG.
    """
    if matrix_frame.empty:
        raise ValueError("the agreement matrix is empty: nothing to draw.")
    split = latest_split(matrix_frame, "agreement") if split is None else split
    frame = common.select(matrix_frame, "split", split, "agreement")
    frame = common.select(frame, "class", class_, "agreement", context=f"split '{split}'")
    experiments = sorted(frame["experiment"].unique())
    squares = [agreement_square(frame, e, split, class_, methods=methods) for e in experiments]
    n_methods = max(len(square) for square in squares)
    n_cols = min(2, len(squares))
    n_rows = -(-len(squares) // n_cols)
    # Cells big enough for a value with two decimals; the extra inches hold the method names. Several
    # experiments make the figure wider than a page rather than shrinking the cells until unreadable.
    panel = max(2.2, 0.4 * n_methods + 1.6)

    with matplotlib.rc_context(common.FONT):
        fig = Figure(figsize=(n_cols * panel + 0.8, n_rows * panel + 0.4), layout="constrained")
        axes = fig.subplots(n_rows, n_cols, squeeze=False)
        for ax in axes.flat[len(squares):]:
            ax.set_visible(False)
        image = None
        for ax, experiment, square in zip(axes.flat, experiments, squares):
            image = ax.imshow(square.to_numpy(dtype=float), vmin=0.0, vmax=1.0, cmap="viridis")
            _annotate_square(ax, square)
            if len(squares) > 1:
                ax.set_title(str(experiment))
        fig.colorbar(image, ax=axes, shrink=0.8, label="top-10 % IoU")
        seeds = common.seed_phrase(frame["n_seeds"]) if "n_seeds" in frame.columns else "seeds"
        default = f"Cross-method agreement on {split} ({class_}),\nmean over {seeds}"
        fig.suptitle(title or default, fontsize=8)
    return common.save_figure(fig, out_path)
