"""Figures of results across seeds: win-rate (or any metric) bars per class, per-image distributions, training curves.

Each function takes a tidy table of the reporting step, writes one PNG and returns its path.
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
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator

from xai_lightning.metrics.names import OVERALL, metric_label
from xai_lightning.reporting.figures import common

__all__ = ["MAX_DEFAULT_CURVES", "metric_distributions", "training_curves", "win_rate_bars"]

#: Most subplots ``training_curves`` draws when it picks the keys itself.
MAX_DEFAULT_CURVES = 6
#: Colour of curves that belong to no method (loss, accuracy).
_NEUTRAL = (0.12, 0.24, 0.45)


def axis_label(metric: str) -> str:
    """A metric's display name as it starts an axis label or title: its first letter capitalised.

    >>> axis_label("win_rate"), axis_label("tko"), axis_label("pixel_auroc")
    ('Win-rate', 'TKO', 'Pixel AUROC')
    """
    label = metric_label(metric)
    return label[:1].upper() + label[1:]


def _order_methods(frame: pd.DataFrame, methods: Sequence[str] | None, where: str) -> list[str]:
    """The methods as given, or all by their overall mean descending (ties by name, so the order is stable)."""
    if methods is not None:
        return common.check_methods(methods, frame["method"].unique(), where)
    scored = frame[frame["class"] == OVERALL] if (frame["class"] == OVERALL).any() else frame
    return common.by_mean_descending(scored.groupby("method")["mean"].mean().reindex(frame["method"].unique()))


def _draw_bars(
    ax: Axes, means: pd.DataFrame, stds: pd.DataFrame | None, colors: dict[str, tuple[float, float, float]]
) -> None:
    """One group of bars per class (rows of ``means``), one bar per method (columns), error bars from ``stds``."""
    x = np.arange(len(means.index))
    width = 0.8 / len(means.columns)
    for i, method in enumerate(means.columns):
        ax.bar(
            x - 0.4 + width * (i + 0.5),
            means[method].to_numpy(dtype=float),
            width,
            yerr=None if stds is None else stds[method].to_numpy(dtype=float),
            color=colors[method],
            edgecolor="black",
            linewidth=0.3,
            error_kw={"elinewidth": 0.7, "capsize": 1.5, "capthick": 0.7},
            label=method,
        )
    ax.set_xticks(x, list(means.index))
    ax.set_xlim(-0.5, len(x) - 0.5)


def _bar_range(ax: Axes, metric: str, means: pd.DataFrame, stds: pd.DataFrame, n_competing: int) -> list[Line2D]:
    """Set the y range to the bars and their error bars; the legend entries of reference lines drawn."""
    defined = means.notna().any().any()
    top = float(np.nanmax((means + stds).to_numpy(dtype=float))) if defined else 1.0
    bottom = float(np.nanmin((means - stds).to_numpy(dtype=float))) if defined else 0.0
    if metric != "win_rate":
        ax.set_ylim(min(0.0, bottom * 1.05), top * 1.05 if top > 0 else 1.0)
        return []
    ax.set_ylim(0.0, max(1.0, top * 1.05))
    # Win-rates of the compared methods share out 1 per image: 1/M is what no preference would give.
    ax.axhline(1.0 / n_competing, color="black", linestyle="--", linewidth=0.7, zorder=0)
    return [Line2D([], [], color="black", linestyle="--", linewidth=0.7, label=f"equal share (1/{n_competing})")]


def win_rate_bars(
    across: pd.DataFrame,
    out_path: str | Path,
    split: str = "test",
    metric: str = "win_rate",
    methods: Sequence[str] | None = None,
    experiment: str | None = None,
) -> Path:
    """Grouped bars of a metric's mean over seeds per class and method, with the seeds' sample std as error bars.

    Args:
        across: the aggregated table (experiment, split, class, method, metric, mean, std, n_seeds, values).
        out_path: where the PNG goes (parent folders are created).
        split: the split to draw.
        metric: the metric to draw; the y axis runs from 0 to at least 1 for ``win_rate``.
        methods: the methods to draw, in this order; default: all, by overall mean descending.
        experiment: which experiment to draw; needed only when the table holds several.

    Returns:
        The path of the written PNG.
    """
    frame = common.select_metric(across, "across", experiment, split, metric)
    colors = common.method_colors(frame["method"].unique())
    # All methods competed for the win-rate, whether or not they are drawn.
    n_competing = max(int(frame["method"].nunique()), 1)
    methods = _order_methods(frame, methods, "across")
    frame = frame[frame["method"].isin(methods)]
    classes = common.order_classes(frame["class"].unique())

    table = frame.pivot_table(index="class", columns="method", values=["mean", "std"], aggfunc="first", dropna=False)
    means = table["mean"].reindex(index=classes, columns=methods)
    stds = table["std"].reindex(index=classes, columns=methods)
    # A single seed has no sample std (NaN): no error bars then, and the title says so.
    spread = stds.notna().any().any()
    stds = stds.fillna(0.0)
    seeds = common.seed_phrase(frame["n_seeds"])
    summary = f"mean ± std over {seeds}" if spread else f"{seeds}, no spread to show"

    with matplotlib.rc_context(common.FONT):
        fig = Figure(figsize=(common.FULL_WIDTH, 2.8), layout="constrained")
        ax = fig.add_subplot()
        _draw_bars(ax, means, stds if spread else None, colors)
        references = _bar_range(ax, metric, means, stds, n_competing)
        ax.set_ylabel(f"{axis_label(metric)} ({split})")
        ax.set_title(f"{axis_label(metric)} per class on {split}: {summary}")
        ax.grid(axis="y", linewidth=0.4, alpha=0.5)
        ax.set_axisbelow(True)
        handles = [Patch(facecolor=colors[m], edgecolor="black", linewidth=0.3, label=m) for m in methods]
        common.method_legend(fig, handles + references)
    return common.save_figure(fig, out_path)


def _draw_distributions(
    ax: Axes, values: dict[str, np.ndarray], colors: dict[str, tuple[float, float, float]]
) -> None:
    """A box per method (in the order of ``values``) with every value drawn as a jittered point."""
    methods = list(values)
    positions = np.arange(1, len(methods) + 1)
    drawn = [i for i, m in enumerate(methods) if len(values[m])]
    if drawn:
        boxes = ax.boxplot(
            [values[methods[i]] for i in drawn],
            positions=positions[drawn],
            widths=0.6,
            patch_artist=True,
            showfliers=False,  # every point is drawn below; fliers would be drawn twice
            medianprops={"color": "black", "linewidth": 1.0},
            whiskerprops={"linewidth": 0.7},
            capprops={"linewidth": 0.7},
            boxprops={"linewidth": 0.7},
        )
        for patch, i in zip(boxes["boxes"], drawn):
            patch.set_facecolor((*colors[methods[i]], 0.35))
    # Fixed seed: the same data always gives the same picture.
    rng = np.random.default_rng(0)
    for pos, m in zip(positions, methods):
        jitter = rng.uniform(-0.18, 0.18, size=len(values[m]))
        ax.scatter(pos + jitter, values[m], s=4, color=colors[m], alpha=0.6, linewidths=0, zorder=3)
    ax.set_xlim(0.4, len(methods) + 0.6)


def _count_ticks(ax: Axes, values: dict[str, np.ndarray], roomy: bool) -> None:
    """Tick labels naming each method and how many values its box holds."""
    positions = np.arange(1, len(values) + 1)
    if roomy:
        ax.set_xticks(positions, [f"{common.wrap(m)}\nn = {len(v)}" for m, v in values.items()])
        return
    ax.set_xticks(positions, [f"{m} (n = {len(v)})" for m, v in values.items()])
    # Long method names collide when boxes are narrow; a slant keeps every label readable.
    common.slant_xticks(ax, 30)


def metric_distributions(
    per_image: pd.DataFrame,
    out_path: str | Path,
    metric: str = "tko",
    split: str = "test",
    methods: Sequence[str] | None = None,
    experiment: str | None = None,
) -> Path:
    """Box plots with jittered points of a per-image metric, one box per method, pooled over seeds.

    NaN values (images where the metric is undefined, e.g. defect-free ones) are left out; the tick
    label under each box gives the number of values drawn, one per image and seed.

    Args:
        per_image: the per-image table (experiment, seed, split, image_id, class, method, metric, value).
        out_path: where the PNG goes.
        metric: the metric to draw.
        split: the split to draw.
        methods: the methods to draw, in this order; default: all, by mean descending.
        experiment: which experiment to draw; needed only when the table holds several.

    Returns:
        The path of the written PNG.
    """
    frame = common.select_metric(per_image, "per_image", experiment, split, metric)
    colors = common.method_colors(frame["method"].unique())
    if methods is None:
        # Methods without any defined value go last rather than vanishing from the figure.
        methods = common.by_mean_descending(frame.groupby("method")["value"].mean())
    else:
        methods = common.check_methods(methods, frame["method"].unique(), "per_image")
    values = {m: frame.loc[frame["method"] == m, "value"].to_numpy(dtype=float) for m in methods}
    values = {m: v[~np.isnan(v)] for m, v in values.items()}
    n_seeds = frame["seed"].nunique()

    with matplotlib.rc_context(common.FONT):
        width = min(common.FULL_WIDTH, max(common.COLUMN_WIDTH, 0.8 * len(methods) + 0.8))
        fig = Figure(figsize=(width, 2.6), layout="constrained")
        ax = fig.add_subplot()
        _draw_distributions(ax, values, colors)
        _count_ticks(ax, values, roomy=(width - 0.8) / len(methods) >= 0.65)
        ax.set_ylabel(f"{axis_label(metric)} per image")
        seeds = f"{n_seeds} seed" + ("s" if n_seeds != 1 else "")
        ax.set_title(f"{axis_label(metric)} per image on {split}, pooled over {seeds}")
        ax.set_xlabel("n = images × seeds with a defined value")
        ax.grid(axis="y", linewidth=0.4, alpha=0.5)
        ax.set_axisbelow(True)
    return common.save_figure(fig, out_path)


def _curve_keys(present: list[str], keys: Sequence[str] | None) -> list[str]:
    """The keys to draw: those asked for (each must be present), else the default ones present."""
    if keys is None:
        tko = sorted(k for k in present if k.startswith("xai/val/tko/") and k.count("/") == 3)
        keys = ([k for k in ("val/loss", "val/acc") if k in present] + tko)[:MAX_DEFAULT_CURVES]
        if not keys:
            defaults = "val/loss, val/acc, xai/val/tko/<method>"
            raise ValueError(f"curves has none of the default keys ({defaults}); it has {present}.")
        return keys
    keys = list(keys)
    missing = [k for k in keys if k not in present]
    if missing or not keys:
        raise ValueError(f"curves has no key {missing or keys}; it has {present}.")
    return keys


def training_curves(
    curves: pd.DataFrame,
    out_path: str | Path,
    keys: Sequence[str] | None = None,
    experiment: str | None = None,
) -> Path:
    """Learning curves across seeds: one subplot per key, the mean over seeds per epoch with a band.

    The band is ± the sample std over seeds when at least 3 seeds are present; with 1 or 2 seeds a
    std says little, so the band spans min–max instead (the legend says which).

    Args:
        curves: the per-epoch table (experiment, seed, epoch, key, value).
        out_path: where the PNG goes.
        keys: the keys to draw, one subplot each; default: ``val/loss``, ``val/acc`` and every
            ``xai/val/tko/<method>`` present, at most 6.
        experiment: which experiment to draw; needed only when the table holds several.

    Returns:
        The path of the written PNG.
    """
    frame = common.select_experiment(curves, experiment, "curves")
    present = list(dict.fromkeys(frame["key"]))
    keys = _curve_keys(present, keys)
    method_names = [k.rsplit("/", 1)[1] for k in present if k.startswith("xai/") and k.count("/") == 3]
    colors = common.method_colors(method_names)

    summaries = {key: common.curve_summary(frame[frame["key"] == key]) for key in keys}
    labels = {key: common.band_phrase(n) for key, (_, n) in summaries.items()}
    shared = len(set(labels.values())) == 1

    n_cols = min(3, len(keys))
    n_rows = -(-len(keys) // n_cols)
    with matplotlib.rc_context(common.FONT):
        width = common.FULL_WIDTH if n_cols > 1 else common.COLUMN_WIDTH
        fig = Figure(figsize=(width, 0.4 + 1.8 * n_rows), layout="constrained")
        axes = fig.subplots(n_rows, n_cols, squeeze=False)
        for ax in axes.flat[len(keys):]:
            ax.set_visible(False)
        for ax, key in zip(axes.flat, keys):
            stats, _ = summaries[key]
            method = key.rsplit("/", 1)[1]
            color = colors[method] if key.startswith("xai/") and method in colors else _NEUTRAL
            common.draw_band(ax, stats.index.to_numpy(), stats, color, band_alpha=0.25, marker="o", markersize=2)
            # The seed count and band sit in titles, not legends, so that nothing covers the curves.
            ax.set_title(key if shared else f"{key}\n({labels[key]})")
            ax.set_xlabel("epoch")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.grid(linewidth=0.4, alpha=0.5)
        if shared:
            fig.suptitle(f"Training curves: {next(iter(labels.values()))}", fontsize=8)
    return common.save_figure(fig, out_path)
