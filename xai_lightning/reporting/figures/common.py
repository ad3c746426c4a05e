"""What every report figure shares: page sizes and fonts, method colours, the save step, choosing the rows to draw.

Figures are bare ``matplotlib.figure.Figure`` objects rendered by Agg: no pyplot state, no display, no backend switch.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from xai_lightning.metrics.names import OVERALL

#: Resolution of every written PNG: sharp when printed at column width.
DPI = 200
#: Width of a figure spanning both columns of a two-column paper (inches, IEEE/ACM text width).
FULL_WIDTH = 7.0
#: Width of a figure that fits one column.
COLUMN_WIDTH = 3.4
#: Colour of the uninformative reference map, so that every figure reads it as a baseline.
BASELINE_METHODS = {"random": (0.55, 0.55, 0.55)}

#: Figures are small; paper-sized fonts keep labels legible once the PNG is scaled to the column.
FONT = {
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


def save_figure(fig: Figure, out_path: str | Path) -> Path:
    """Write the figure as PNG and release it: Figure objects are not tracked by pyplot, so nothing leaks.

    The figure modules call it as ``common.save_figure`` (looked up at call time), so that a test can
    replace it and read every figure just before it is written.
    """
    path = Path(out_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fig.savefig(path, dpi=DPI, format="png", facecolor="white")
    finally:
        fig.clear()
    return path


def method_legend(fig: Figure, handles: Sequence[Line2D | Patch]) -> None:
    """The method legend, outside the axes so that it never hides a bar or a curve."""
    fig.legend(handles=handles, loc="outside right upper", frameon=False, title="method")


def slant_xticks(ax: Axes, degrees: float) -> None:
    """Tilt the x tick labels, anchored at their right end: long names stay readable and under their tick."""
    ax.tick_params(axis="x", labelrotation=degrees)
    for label in ax.get_xticklabels():
        label.set_horizontalalignment("right")
        label.set_rotation_mode("anchor")


# --- choosing what to draw -------------------------------------------------------------------------


def select(frame: pd.DataFrame, column: str, value: str, table: str, context: str | None = None) -> pd.DataFrame:
    """Rows with ``column == value``; a ValueError naming the value and those that exist otherwise."""
    if column not in frame.columns:
        raise ValueError(f"{table} has no column '{column}'; its columns are {list(frame.columns)}.")
    chosen = frame[frame[column] == value]
    if chosen.empty:
        where = f" for {context}" if context else ""
        present = sorted(map(str, frame[column].unique()))
        raise ValueError(f"{table} has no {column} '{value}'{where}; it has {present}.")
    return chosen


def select_experiment(frame: pd.DataFrame, experiment: str | None, table: str) -> pd.DataFrame:
    """The rows of one experiment: the one asked for, or the only one present."""
    if frame.empty:
        raise ValueError(f"{table} is empty: nothing to draw.")
    if "experiment" not in frame.columns:
        return frame
    if experiment is not None:
        return select(frame, "experiment", experiment, table)
    names = sorted(map(str, frame["experiment"].unique()))
    if len(names) > 1:
        # Pooling experiments would mix runs that differ in more than their seed.
        raise ValueError(f"{table} holds several experiments {names}; pass experiment= to choose one.")
    return frame


def select_metric(frame: pd.DataFrame, table: str, experiment: str | None, split: str, metric: str) -> pd.DataFrame:
    """The rows of one experiment, split and metric, each step failing with what the table does hold."""
    frame = select_experiment(frame, experiment, table)
    frame = select(frame, "split", split, table)
    return select(frame, "metric", metric, table, context=f"split '{split}'")


def check_methods(methods: Sequence[str], available: Iterable[str], where: str) -> list[str]:
    """The requested methods, after checking that each one exists."""
    available = list(dict.fromkeys(available))
    missing = [m for m in methods if m not in available]
    if missing:
        raise ValueError(f"{where} has no method {missing}; it has {sorted(available)}.")
    return list(methods)


def by_mean_descending(means: pd.Series) -> list[str]:
    """The index of ``means`` by value, best first; NaN last rather than vanishing, ties by name (a stable order)."""
    return sorted(means.index, key=lambda m: (np.isnan(means[m]), -np.nan_to_num(means[m]), m))


def order_classes(classes: Iterable[str]) -> list[str]:
    """``overall`` first, then the defect classes by name."""
    classes = list(classes)
    return ([OVERALL] if OVERALL in classes else []) + sorted(c for c in classes if c != OVERALL)


# --- words on the figures ---------------------------------------------------------------------------


def seed_phrase(n_seeds: pd.Series) -> str:
    """``3 seeds``, or ``2–3 seeds`` where some groups lost a seed."""
    low, high = int(n_seeds.min()), int(n_seeds.max())
    count = str(low) if low == high else f"{low}–{high}"
    return f"{count} seed" + ("s" if high != 1 else "")


def wrap(name: str) -> str:
    """A method name broken at its underscores so that long names fit a narrow column."""
    return name.replace("_", "\n") if len(name) > 10 else name


# --- curves over seeds --------------------------------------------------------------------------------


def curve_summary(rows: pd.DataFrame, x: str = "epoch", value: str = "value") -> tuple[pd.DataFrame, int]:
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


def band_phrase(n_seeds: int) -> str:
    """What a curve and its band show, e.g. ``line: mean of 5 seeds, band: ± std``."""
    band = "± std" if n_seeds >= 3 else "min–max"
    return f"line: mean of {n_seeds} seed{'s' if n_seeds != 1 else ''}, band: {band}"


def shared_band_phrase(phrases: set[str]) -> str:
    """The band phrase of curves drawn together: theirs when they agree, a general one when seed counts differ."""
    return next(iter(phrases)) if len(phrases) == 1 else "line: mean over seeds, band: ± std or min–max"


def draw_band(
    ax: Axes, x: np.ndarray, stats: pd.DataFrame, color: tuple[float, float, float], band_alpha: float = 0.2, **line
) -> None:
    """A mean curve (``line`` styles it) and its band, from ``curve_summary`` output, in one colour."""
    ax.plot(x, stats["mean"], color=color, linewidth=1.2, **line)
    ax.fill_between(x, stats["low"], stats["high"], color=color, alpha=band_alpha, linewidth=0)
