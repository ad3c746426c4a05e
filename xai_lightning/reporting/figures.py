"""Paper figures of an experiment across seeds: win-rate bars, metric distributions, heatmap grids, training curves.

Each function takes the tidy tables of the reporting step (or example maps), writes one PNG at 200 dpi and returns its path.
Figures are bare ``matplotlib.figure.Figure`` objects rendered by Agg: no pyplot state, no display, no global backend switch.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator

from xai_lightning.reporting.aggregate import agreement_square, randomization_summary
from xai_lightning.reporting.heatmaps import overlay

__all__ = [
    "DPI",
    "agreement_heatmap",
    "faithfulness_curves",
    "heatmap_grid",
    "method_colors",
    "metric_distributions",
    "randomization_curves",
    "training_curves",
    "win_rate_bars",
]

#: Resolution of every written PNG: sharp when printed at column width.
DPI = 200
#: Width of a figure spanning both columns of a two-column paper (inches, IEEE/ACM text width).
FULL_WIDTH = 7.0
#: Width of a figure that fits one column.
COLUMN_WIDTH = 3.4
#: The class that summarises all defect classes; drawn first wherever classes are grouped.
OVERALL = "overall"
#: Colour of the uninformative reference map, so that every figure reads it as a baseline.
BASELINE_METHODS = {"random": (0.55, 0.55, 0.55)}
#: Most subplots ``training_curves`` draws when it picks the keys itself.
MAX_DEFAULT_CURVES = 6

# Figures are small; paper-sized fonts keep labels legible once the PNG is scaled to the column.
_FONT = {
    "font.size": 8,
    "axes.titlesize": 8,
    "axes.labelsize": 8,
    "xtick.labelsize": 7,
    "ytick.labelsize": 7,
    "legend.fontsize": 7,
}


def method_colors(methods: Iterable[str]) -> dict[str, tuple[float, float, float]]:
    """One RGB colour per method from a qualitative colormap, independent of the order the methods come in.

    Colours follow the sorted method names, so every figure that receives the same set of methods (in
    whatever order it draws them) paints each method alike. The ``random`` baseline is always grey.

    >>> colors = method_colors(["saliency", "gradcam"])
    >>> colors == method_colors(["gradcam", "saliency"])
    True
    >>> colors["gradcam"] != colors["saliency"]
    True
    """
    names = sorted(set(methods))
    others = [name for name in names if name not in BASELINE_METHODS]
    # Greys are left out of the palette so that no method is mistaken for the baseline.
    if len(others) <= 9:
        palette = [c for i, c in enumerate(colormaps["tab10"].colors) if i != 7]
    else:
        palette = [c for i, c in enumerate(colormaps["tab20"].colors) if i not in (14, 15)]
    colors = {name: tuple(float(v) for v in BASELINE_METHODS[name]) for name in names if name in BASELINE_METHODS}
    for i, name in enumerate(others):
        colors[name] = tuple(float(v) for v in palette[i % len(palette)][:3])
    return colors


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
    frame = _select_experiment(across, experiment, "across")
    frame = _select(frame, "split", split, "across")
    frame = _select(frame, "metric", metric, "across", context=f"split '{split}'")
    colors = method_colors(frame["method"].unique())
    # All methods competed for the win-rate, whether or not they are drawn.
    n_competing = max(int(frame["method"].nunique()), 1)
    methods = _order_methods(frame, methods, "across")
    frame = frame[frame["method"].isin(methods)]
    classes = _order_classes(frame["class"].unique())

    table = frame.pivot_table(index="class", columns="method", values=["mean", "std"], aggfunc="first", dropna=False)
    means = table["mean"].reindex(index=classes, columns=methods)
    stds = table["std"].reindex(index=classes, columns=methods)
    # A single seed has no sample std (NaN): no error bars then, and the title says so.
    spread = stds.notna().any().any()
    stds = stds.fillna(0.0)
    seeds = _seed_phrase(frame["n_seeds"])
    summary = f"mean ± std over {seeds}" if spread else f"{seeds}, no spread to show"

    with matplotlib.rc_context(_FONT):
        fig = Figure(figsize=(FULL_WIDTH, 2.8), layout="constrained")
        ax = fig.add_subplot()
        x = np.arange(len(classes))
        width = 0.8 / len(methods)
        for i, method in enumerate(methods):
            offsets = x - 0.4 + width * (i + 0.5)
            ax.bar(
                offsets,
                means[method].to_numpy(dtype=float),
                width,
                yerr=stds[method].to_numpy(dtype=float) if spread else None,
                color=colors[method],
                edgecolor="black",
                linewidth=0.3,
                error_kw={"elinewidth": 0.7, "capsize": 1.5, "capthick": 0.7},
                label=method,
            )
        top = float(np.nanmax((means + stds).to_numpy(dtype=float))) if means.notna().any().any() else 1.0
        bottom = float(np.nanmin((means - stds).to_numpy(dtype=float))) if means.notna().any().any() else 0.0
        if metric == "win_rate":
            ax.set_ylim(0.0, max(1.0, top * 1.05))
            # Win-rates of the compared methods share out 1 per image: 1/M is what no preference would give.
            ax.axhline(1.0 / n_competing, color="black", linestyle="--", linewidth=0.7, zorder=0)
        else:
            ax.set_ylim(min(0.0, bottom * 1.05), top * 1.05 if top > 0 else 1.0)
        ax.set_xticks(x, classes)
        ax.set_xlim(-0.5, len(classes) - 0.5)
        ax.set_ylabel(f"{_pretty(metric)} ({split})")
        ax.set_title(f"{_pretty(metric)} per class on {split}: {summary}")
        ax.grid(axis="y", linewidth=0.4, alpha=0.5)
        ax.set_axisbelow(True)
        # The legend sits outside the axes so that it never hides a bar.
        handles = [Patch(facecolor=colors[m], edgecolor="black", linewidth=0.3, label=m) for m in methods]
        if metric == "win_rate":
            share = Line2D([], [], color="black", linestyle="--", linewidth=0.7, label=f"equal share (1/{n_competing})")
            handles.append(share)
        fig.legend(
            handles=handles,
            loc="outside right upper",
            frameon=False,
            title="method",
        )
    return _save(fig, out_path)


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
    frame = _select_experiment(per_image, experiment, "per_image")
    frame = _select(frame, "split", split, "per_image")
    frame = _select(frame, "metric", metric, "per_image", context=f"split '{split}'")
    colors = method_colors(frame["method"].unique())
    if methods is None:
        means = frame.groupby("method")["value"].mean()
        # Methods without any defined value go last rather than vanishing from the figure.
        methods = sorted(means.index, key=lambda m: (np.isnan(means[m]), -np.nan_to_num(means[m]), m))
    else:
        methods = _check_methods(methods, frame["method"].unique(), "per_image")
    values = {m: frame.loc[frame["method"] == m, "value"].to_numpy(dtype=float) for m in methods}
    values = {m: v[~np.isnan(v)] for m, v in values.items()}
    n_seeds = frame["seed"].nunique()
    # Fixed seed: the same data always gives the same picture.
    rng = np.random.default_rng(0)

    with matplotlib.rc_context(_FONT):
        width = min(FULL_WIDTH, max(COLUMN_WIDTH, 0.8 * len(methods) + 0.8))
        fig = Figure(figsize=(width, 2.6), layout="constrained")
        ax = fig.add_subplot()
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
        for pos, m in zip(positions, methods):
            v = values[m]
            jitter = rng.uniform(-0.18, 0.18, size=len(v))
            ax.scatter(pos + jitter, v, s=4, color=colors[m], alpha=0.6, linewidths=0, zorder=3)
        ax.set_xlim(0.4, len(methods) + 0.6)
        if (width - 0.8) / len(methods) >= 0.65:
            ax.set_xticks(positions, [f"{_wrap(m)}\nn = {len(values[m])}" for m in methods])
        else:
            ax.set_xticks(positions, [f"{m} (n = {len(values[m])})" for m in methods])
            # Long method names collide when boxes are narrow; a slant keeps every label readable.
            ax.tick_params(axis="x", labelrotation=30)
            for label in ax.get_xticklabels():
                label.set_horizontalalignment("right")
                label.set_rotation_mode("anchor")
        ax.set_ylabel(f"{_pretty(metric)} per image")
        seeds = f"{n_seeds} seed" + ("s" if n_seeds != 1 else "")
        ax.set_title(f"{_pretty(metric)} per image on {split}, pooled over {seeds}")
        ax.set_xlabel("n = images × seeds with a defined value")
        ax.grid(axis="y", linewidth=0.4, alpha=0.5)
        ax.set_axisbelow(True)
    return _save(fig, out_path)


def heatmap_grid(
    examples: Sequence[Mapping],
    out_path: str | Path,
    methods: Sequence[str] | None = None,
    max_rows: int = 8,
) -> Path:
    """A grid of attribution overlays: one row per example image, the image then one column per method.

    Rows are grouped by class and labelled with class and image id; the ground-truth mask is outlined
    in white on every cell. With more examples than ``max_rows``, classes take turns so each is shown.

    Args:
        examples: dicts with ``image`` (H, W, 3) floats in [0, 1], ``mask`` (H, W) bool, ``class``,
            ``image_id`` and ``maps`` ({method: (H, W) array}).
        out_path: where the PNG goes.
        methods: the methods to show, in this order; default: those of the first example, as given.
        max_rows: the most example rows drawn.

    Returns:
        The path of the written PNG.
    """
    if not examples:
        raise ValueError("heatmap_grid needs at least one example; got none.")
    if max_rows < 1:
        raise ValueError(f"max_rows must be at least 1; got {max_rows}.")
    available = list(examples[0]["maps"])
    methods = list(available) if methods is None else _check_methods(methods, available, "the first example's maps")
    if not methods:
        raise ValueError("heatmap_grid has no method to draw: the examples carry no maps.")
    rows = _pick_rows(examples, max_rows)
    for example in rows:
        _check_example(example, methods)
    colors = method_colors(available)

    n_cols = 1 + len(methods)
    with matplotlib.rc_context(_FONT):
        # Cells shrink to fit the page width; the margins hold row labels, column titles and the colour bar.
        left, right, top, bottom = 0.35, 0.05, 0.32, 0.42
        cell = min(1.1, (FULL_WIDTH - left - right) / n_cols)
        fig_w = left + right + cell * n_cols
        fig_h = top + bottom + cell * len(rows)
        fig = Figure(figsize=(fig_w, fig_h))
        fig.subplots_adjust(
            left=left / fig_w, right=1 - right / fig_w, top=1 - top / fig_h, bottom=bottom / fig_h, wspace=0.04, hspace=0.04
        )
        axes = fig.subplots(len(rows), n_cols, squeeze=False)
        for r, example in enumerate(rows):
            image = np.asarray(example["image"], dtype=np.float32)
            mask = np.asarray(example["mask"], dtype=bool)
            cells = [(255 * image).clip(0, 255).astype(np.uint8)]
            cells += [overlay(image, np.asarray(example["maps"][m], dtype=np.float32)) for m in methods]
            for c, picture in enumerate(cells):
                ax = axes[r, c]
                ax.imshow(picture, interpolation="nearest")
                if mask.any():  # contour of an empty mask draws nothing and warns
                    ax.contour(mask.astype(np.float32), levels=[0.5], colors="white", linewidths=0.8)
                ax.set_xticks([])
                ax.set_yticks([])
                for spine in ax.spines.values():
                    spine.set_linewidth(0.4)
                if r == 0:
                    title = "image" if c == 0 else methods[c - 1]
                    color = "black" if c == 0 else _darker(colors[methods[c - 1]])
                    ax.set_title(_wrap(title), fontsize=7, color=color, pad=3)
            axes[r, 0].set_ylabel(f"{example['class']}\n{example['image_id']}", fontsize=6, labelpad=2)
        # One shared colour bar: every map is min–max scaled per image, so 0 and 1 mean the same everywhere.
        bar_w = min(2.4, 0.6 * (fig_w - left - right))
        bar_ax = fig.add_axes(((fig_w - bar_w) / 2 / fig_w, 0.12 / fig_h, bar_w / fig_w, 0.06 / fig_h), label="colorbar")
        bar = fig.colorbar(ScalarMappable(norm=Normalize(0.0, 1.0), cmap="jet"), cax=bar_ax, orientation="horizontal")
        bar.set_ticks([0.0, 1.0])
        bar.ax.tick_params(labelsize=6, length=2, pad=1)
        bar.ax.xaxis.set_label_position("top")
        bar.set_label("attribution (min–max per map); white line: defect mask", fontsize=6, labelpad=2)
    return _save(fig, out_path)


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
    frame = _select_experiment(curves, experiment, "curves")
    present = list(dict.fromkeys(frame["key"]))
    if keys is None:
        tko = sorted(k for k in present if k.startswith("xai/val/tko/") and k.count("/") == 3)
        keys = [k for k in ("val/loss", "val/acc") if k in present] + tko
        keys = keys[:MAX_DEFAULT_CURVES]
        if not keys:
            defaults = "val/loss, val/acc, xai/val/tko/<method>"
            raise ValueError(f"curves has none of the default keys ({defaults}); it has {present}.")
    else:
        keys = list(keys)
        missing = [k for k in keys if k not in present]
        if missing or not keys:
            raise ValueError(f"curves has no key {missing or keys}; it has {present}.")
    method_names = [k.rsplit("/", 1)[1] for k in present if k.startswith("xai/") and k.count("/") == 3]
    colors = method_colors(method_names)

    summaries = {key: _curve_summary(frame[frame["key"] == key]) for key in keys}
    labels = {key: _band_phrase(n) for key, (_, n) in summaries.items()}
    shared = len(set(labels.values())) == 1

    n_cols = min(3, len(keys))
    n_rows = -(-len(keys) // n_cols)
    with matplotlib.rc_context(_FONT):
        fig = Figure(figsize=(FULL_WIDTH if n_cols > 1 else COLUMN_WIDTH, 0.4 + 1.8 * n_rows), layout="constrained")
        axes = fig.subplots(n_rows, n_cols, squeeze=False)
        for ax in axes.flat[len(keys):]:
            ax.set_visible(False)
        for ax, key in zip(axes.flat, keys):
            stats, _ = summaries[key]
            method = key.rsplit("/", 1)[1]
            color = colors[method] if key.startswith("xai/") and method in colors else _NEUTRAL
            epochs = stats.index.to_numpy()
            ax.plot(epochs, stats["mean"], color=color, linewidth=1.2, marker="o", markersize=2)
            ax.fill_between(epochs, stats["low"], stats["high"], color=color, alpha=0.25, linewidth=0)
            # The seed count and band sit in titles, not legends, so that nothing covers the curves.
            ax.set_title(key if shared else f"{key}\n({labels[key]})")
            ax.set_xlabel("epoch")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.grid(linewidth=0.4, alpha=0.5)
        if shared:
            fig.suptitle(f"Training curves: {next(iter(labels.values()))}", fontsize=8)
    return _save(fig, out_path)


#: Colour of curves that belong to no method (loss, accuracy).
_NEUTRAL = (0.12, 0.24, 0.45)


def _curve_summary(rows: pd.DataFrame, x: str = "epoch", value: str = "value") -> tuple[pd.DataFrame, int]:
    """Mean over seeds at each ``x`` with the band's edges (``low``, ``high``), and the number of seeds.

    The band is ± the sample std with 3 seeds or more, and min–max with fewer, where a std rests on
    one or two values. NaN values are skipped.
    """
    # A value logged twice at one x (e.g. an epoch around a resume) must not weigh as two seeds.
    per_seed = rows.groupby(["seed", x])[value].mean().reset_index()
    stats = per_seed.groupby(x)[value].agg(["mean", "std", "min", "max"])
    n_seeds = int(per_seed["seed"].nunique())
    if n_seeds >= 3:
        spread = stats["std"].fillna(0.0)  # an x only one seed reached has no spread to show
        stats["low"], stats["high"] = stats["mean"] - spread, stats["mean"] + spread
    else:
        stats["low"], stats["high"] = stats["min"], stats["max"]
    return stats, n_seeds


def _band_phrase(n_seeds: int) -> str:
    """What a curve and its band show, e.g. ``line: mean of 5 seeds, band: ± std``."""
    band = "± std" if n_seeds >= 3 else "min–max"
    return f"line: mean of {n_seeds} seed{'s' if n_seeds != 1 else ''}, band: {band}"


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
    frame = _select_experiment(curves, experiment, "faithfulness curves")
    split = _default_split(frame, "faithfulness curves") if split is None else split
    frame = _select(frame, "split", split, "faithfulness curves")
    kinds = [kind for kind in FAITHFULNESS_CURVES if (frame["curve"] == kind).any()]
    if not kinds:
        found = sorted(map(str, frame["curve"].unique()))
        raise ValueError(f"faithfulness curves has no curve {list(FAITHFULNESS_CURVES)}; it has {found}.")
    colors = method_colors(frame["method"].unique())
    available = sorted(frame["method"].unique())
    methods = available if methods is None else _check_methods(methods, available, "faithfulness curves")

    phrases = set()
    with matplotlib.rc_context(_FONT):
        fig = Figure(figsize=(FULL_WIDTH, 2.6), layout="constrained")
        axes = fig.subplots(1, len(kinds), squeeze=False, sharey=True)[0]
        for ax, kind in zip(axes, kinds):
            for method in methods:
                rows = frame[(frame["curve"] == kind) & (frame["method"] == method)]
                if rows.empty:
                    continue
                stats, n_seeds = _curve_summary(rows, x="fraction", value="probability")
                phrases.add(_band_phrase(n_seeds))
                x = stats.index.to_numpy(dtype=float)
                ax.plot(x, stats["mean"], color=colors[method], linewidth=1.2, label=method)
                ax.fill_between(x, stats["low"], stats["high"], color=colors[method], alpha=0.2, linewidth=0)
            ax.set_title(f"{kind.capitalize()} ({_FAITHFULNESS_GOAL[kind]})")
            ax.set_xlabel(f"fraction of pixels {FAITHFULNESS_CURVES[kind]}")
            ax.set_xlim(0.0, 1.0)
            ax.set_ylim(0.0, 1.02)
            ax.grid(linewidth=0.4, alpha=0.5)
        axes[0].set_ylabel("target probability")
        band = next(iter(phrases)) if len(phrases) == 1 else "line: mean over seeds, band: ± std or min–max"
        fig.suptitle(f"Faithfulness curves on {split} ({band})", fontsize=8)
        handles = [Line2D([], [], color=colors[m], linewidth=1.2, label=m) for m in methods]
        fig.legend(handles=handles, loc="outside right upper", frameon=False, title="method")
    return _save(fig, out_path)


def randomization_curves(
    summary_or_raw: pd.DataFrame,
    out_path: str | Path,
    experiment: str | None = None,
    methods: Sequence[str] | None = None,
    split: str | None = None,
    threshold: float = 0.5,
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
    frame = _select_experiment(frame, experiment, "randomization")
    if "split" in frame.columns and frame["split"].nunique() > 1:
        frame = _select(frame, "split", split or _default_split(frame, "randomization"), "randomization")
    colors = method_colors(frame["method"].unique())
    available = sorted(frame["method"].unique())
    methods = available if methods is None else _check_methods(methods, available, "randomization")
    layers = frame.groupby("step")["layer"].first().sort_index()
    steps = layers.index.to_numpy(dtype=float)

    phrases = set()
    with matplotlib.rc_context(_FONT):
        width = min(FULL_WIDTH, max(COLUMN_WIDTH + 1.2, 0.55 * len(layers) + 1.8))
        fig = Figure(figsize=(width, 2.6), layout="constrained")
        ax = fig.add_subplot()
        for method in methods:
            stats, n_seeds = _curve_summary(frame[frame["method"] == method], x="step")
            phrases.add(_band_phrase(n_seeds))
            stats = stats.reindex(layers.index)
            ax.plot(steps, stats["mean"], color=colors[method], linewidth=1.2, marker="o", markersize=2.5)
            ax.fill_between(steps, stats["low"], stats["high"], color=colors[method], alpha=0.2, linewidth=0)
        ax.axhline(threshold, color="black", linestyle="--", linewidth=0.7, zorder=0)
        ax.set_xticks(steps, list(layers))
        ax.tick_params(axis="x", labelrotation=30)
        for label in ax.get_xticklabels():
            label.set_horizontalalignment("right")
            label.set_rotation_mode("anchor")
        ax.set_xlabel("layers randomised, top-down (cumulative)")
        ax.set_ylabel("mean |Spearman ρ| with intact map")
        ax.set_ylim(0.0, 1.05)
        ax.grid(linewidth=0.4, alpha=0.5)
        band = next(iter(phrases)) if len(phrases) == 1 else "line: mean over seeds, band: ± std or min–max"
        ax.set_title(f"Cascading randomisation ({band})")
        handles = [Line2D([], [], color=colors[m], linewidth=1.2, marker="o", markersize=2.5, label=m) for m in methods]
        handles.append(
            Line2D([], [], color="black", linestyle="--", linewidth=0.7, label=f"fails above {threshold:g}")
        )
        fig.legend(handles=handles, loc="outside right upper", frameon=False, title="method")
    return _save(fig, out_path)


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
    split = _default_split(matrix_frame, "agreement") if split is None else split
    frame = _select(matrix_frame, "split", split, "agreement")
    frame = _select(frame, "class", class_, "agreement", context=f"split '{split}'")
    experiments = sorted(frame["experiment"].unique())
    squares = [agreement_square(frame, e, split, class_, methods=methods) for e in experiments]
    n_methods = max(len(square) for square in squares)
    n_cols = min(2, len(squares))
    n_rows = -(-len(squares) // n_cols)
    # Cells big enough for a value with two decimals; the extra inches hold the method names. Several
    # experiments make the figure wider than a page rather than shrinking the cells until unreadable.
    panel = max(2.2, 0.4 * n_methods + 1.6)

    with matplotlib.rc_context(_FONT):
        fig = Figure(figsize=(n_cols * panel + 0.8, n_rows * panel + 0.4), layout="constrained")
        axes = fig.subplots(n_rows, n_cols, squeeze=False)
        for ax in axes.flat[len(squares):]:
            ax.set_visible(False)
        image = None
        for ax, experiment, square in zip(axes.flat, experiments, squares):
            values = square.to_numpy(dtype=float)
            image = ax.imshow(values, vmin=0.0, vmax=1.0, cmap="viridis")
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
            ax.tick_params(axis="x", labelrotation=45)
            for label in ax.get_xticklabels():
                label.set_horizontalalignment("right")
                label.set_rotation_mode("anchor")
            if len(squares) > 1:
                ax.set_title(str(experiment))
        fig.colorbar(image, ax=axes, shrink=0.8, label="top-10 % IoU")
        seeds = _seed_phrase(frame["n_seeds"]) if "n_seeds" in frame.columns else "seeds"
        default = f"Cross-method agreement on {split} ({class_}),\nmean over {seeds}"
        fig.suptitle(title or default, fontsize=8)
    return _save(fig, out_path)


# --- helpers -------------------------------------------------------------------------------------


def _default_split(frame: pd.DataFrame, table: str) -> str:
    """The split a figure shows when none is asked for: test, else val, else train."""
    if "split" not in frame.columns:
        raise ValueError(f"{table} has no column 'split'; its columns are {list(frame.columns)}.")
    present = set(frame["split"])
    for split in ("test", "val", "train"):
        if split in present:
            return split
    raise ValueError(f"{table} has none of the splits test, val, train; it has {sorted(map(str, present))}.")


def _save(fig: Figure, out_path: str | Path) -> Path:
    """Write the figure as PNG and release it: Figure objects are not tracked by pyplot, so nothing leaks."""
    path = Path(out_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fig.savefig(path, dpi=DPI, format="png", facecolor="white")
    finally:
        fig.clear()
    return path


def _select(frame: pd.DataFrame, column: str, value: str, table: str, context: str | None = None) -> pd.DataFrame:
    """Rows with ``column == value``; a ValueError naming the value and those that exist otherwise."""
    if column not in frame.columns:
        raise ValueError(f"{table} has no column '{column}'; its columns are {list(frame.columns)}.")
    chosen = frame[frame[column] == value]
    if chosen.empty:
        where = f" for {context}" if context else ""
        raise ValueError(f"{table} has no {column} '{value}'{where}; it has {sorted(map(str, frame[column].unique()))}.")
    return chosen


def _select_experiment(frame: pd.DataFrame, experiment: str | None, table: str) -> pd.DataFrame:
    """The rows of one experiment: the one asked for, or the only one present."""
    if frame.empty:
        raise ValueError(f"{table} is empty: nothing to draw.")
    if "experiment" not in frame.columns:
        return frame
    if experiment is not None:
        return _select(frame, "experiment", experiment, table)
    names = sorted(map(str, frame["experiment"].unique()))
    if len(names) > 1:
        # Pooling experiments would mix runs that differ in more than their seed.
        raise ValueError(f"{table} holds several experiments {names}; pass experiment= to choose one.")
    return frame


def _check_methods(methods: Sequence[str], available: Iterable[str], where: str) -> list[str]:
    """The requested methods, after checking that each one exists."""
    available = list(dict.fromkeys(available))
    missing = [m for m in methods if m not in available]
    if missing:
        raise ValueError(f"{where} has no method {missing}; it has {sorted(available)}.")
    return list(methods)


def _order_methods(frame: pd.DataFrame, methods: Sequence[str] | None, where: str) -> list[str]:
    """The methods as given, or all by their overall mean descending (ties by name, so the order is stable)."""
    if methods is not None:
        return _check_methods(methods, frame["method"].unique(), where)
    scored = frame[frame["class"] == OVERALL] if (frame["class"] == OVERALL).any() else frame
    means = scored.groupby("method")["mean"].mean().reindex(frame["method"].unique())
    return sorted(means.index, key=lambda m: (np.isnan(means[m]), -np.nan_to_num(means[m]), m))


def _order_classes(classes: Iterable[str]) -> list[str]:
    """``overall`` first, then the defect classes by name."""
    classes = list(classes)
    return ([OVERALL] if OVERALL in classes else []) + sorted(c for c in classes if c != OVERALL)


def _seed_phrase(n_seeds: pd.Series) -> str:
    """``3 seeds``, or ``2–3 seeds`` where some groups lost a seed."""
    low, high = int(n_seeds.min()), int(n_seeds.max())
    count = str(low) if low == high else f"{low}–{high}"
    return f"{count} seed" + ("s" if high != 1 else "")


def _pretty(metric: str) -> str:
    """A metric name as an axis label: acronyms upper-case, words spaced."""
    return {"tko": "TKO", "win_rate": "Win-rate", "pixel_auroc": "Pixel AUROC"}.get(metric, metric.replace("_", " "))


def _wrap(name: str) -> str:
    """A method name broken at its underscores so that long names fit a narrow column."""
    return name.replace("_", "\n") if len(name) > 10 else name


def _darker(color: tuple[float, float, float], factor: float = 0.75) -> tuple[float, float, float]:
    """A darker shade of a colour, readable as text on white."""
    return tuple(factor * c for c in color)


def _pick_rows(examples: Sequence[Mapping], max_rows: int) -> list[Mapping]:
    """At most ``max_rows`` examples grouped by class, classes taking turns so each is represented."""
    by_class: dict[str, list[Mapping]] = {}
    for example in examples:
        by_class.setdefault(str(example["class"]), []).append(example)
    classes = _order_classes(by_class)
    taken = {c: 0 for c in classes}
    n = min(max_rows, len(examples))
    while sum(taken.values()) < n:
        for c in classes:
            if taken[c] < len(by_class[c]) and sum(taken.values()) < n:
                taken[c] += 1
    return [example for c in classes for example in by_class[c][: taken[c]]]


def _check_example(example: Mapping, methods: Sequence[str]) -> None:
    """Reject an example whose maps are missing or whose arrays do not match the image."""
    image = np.asarray(example["image"])
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"example '{example.get('image_id')}': image must be (H, W, 3); got {image.shape}.")
    size = image.shape[:2]
    mask = np.asarray(example["mask"])
    if mask.shape != size:
        raise ValueError(f"example '{example.get('image_id')}': mask {mask.shape} does not match image {size}.")
    missing = [m for m in methods if m not in example["maps"]]
    if missing:
        raise ValueError(f"example '{example.get('image_id')}' has no map for {missing}; it has {sorted(example['maps'])}.")
    for m in methods:
        shape = np.asarray(example["maps"][m]).shape
        if shape != size:
            raise ValueError(f"example '{example.get('image_id')}': map '{m}' {shape} does not match image {size}.")
