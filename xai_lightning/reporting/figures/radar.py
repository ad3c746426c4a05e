"""Radar of normalised ranks: one polar panel per experiment side by side, one polygon per method."""

from __future__ import annotations

from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from xai_lightning.reporting.figures import common
from xai_lightning.reporting.figures.common import COLUMN_WIDTH, FULL_WIDTH, wrap
from xai_lightning.reporting.radar import radar_label

#: Fewest axes a polygon can be drawn on.
MIN_AXES = 3


def radar_figure(rank_table: pd.DataFrame, path: str | Path, labels: dict[str, str] | None = None) -> Path:
    """Draw :func:`~xai_lightning.reporting.radar.rank_table` output: a polar panel per experiment, a polygon per
    method over that experiment's axes (``attrs["axes"]``, else every metric column it has a value in).

    ``labels`` titles the panels (e.g. by backbone; default the experiment's name). An experiment with fewer than
    three axes has no polygon and is left out; none left is a ValueError (the report then skips the figure).
    """
    axes_of = {e: a for e, a in _axes(rank_table).items() if len(a) >= MIN_AXES}
    if not axes_of:
        raise ValueError("rank table has no experiment with three or more metrics: no radar to draw")
    colors = common.method_colors(rank_table["method"].unique())
    width = min(FULL_WIDTH, COLUMN_WIDTH * len(axes_of))
    with matplotlib.rc_context(common.FONT):
        fig = Figure(figsize=(width + 1.2, COLUMN_WIDTH * 0.95), layout="constrained")
        panels = fig.subplots(1, len(axes_of), subplot_kw={"projection": "polar"}, squeeze=False)[0]
        for ax, (experiment, metrics) in zip(panels, axes_of.items()):
            rows = rank_table[rank_table["experiment"] == experiment]
            _panel(ax, rows, metrics, colors)
            ax.set_title((labels or {}).get(experiment, str(experiment)), pad=14)
        handles = [Line2D([], [], color=c, linewidth=1.4, label=m) for m, c in colors.items()]
        fig.legend(handles=handles, loc="outside right upper", frameon=False, title="method")
        return common.save_figure(fig, path)


def _axes(rank_table: pd.DataFrame) -> dict[str, list[str]]:
    """Each experiment's axes: as ``rank_table`` recorded them, else the metric columns with a value."""
    recorded = rank_table.attrs.get("axes")
    if recorded:
        return {e: list(a) for e, a in recorded.items() if (rank_table["experiment"] == e).any()}
    metrics = [c for c in rank_table.columns if c not in ("experiment", "method", "n_axes", "area")]
    return {
        e: [m for m in metrics if rows[m].notna().any()] for e, rows in rank_table.groupby("experiment", sort=True)
    }


def _panel(ax, rows: pd.DataFrame, metrics: list[str], colors: dict) -> None:
    """One experiment's polygons, closed back to the first axis; a missing value is drawn at 0, as it is scored."""
    angles = np.linspace(0, 2 * np.pi, len(metrics), endpoint=False)
    closed = np.append(angles, angles[0])
    for row in rows.to_dict("records"):
        radii = np.nan_to_num(np.array([row[m] for m in metrics], dtype=float), nan=0.0)
        radii = np.append(radii, radii[0])
        ax.plot(closed, radii, color=colors[row["method"]], linewidth=1.2, label=f"{row['method']}")
        ax.fill(closed, radii, color=colors[row["method"]], alpha=0.08)
    ax.set_xticks(angles, [wrap(radar_label(m)) for m in metrics])
    ax.set_ylim(0, 1.05)
    ax.set_yticks([0.25, 0.5, 0.75, 1.0], ["", "0.5", "", "1"])
    ax.grid(alpha=0.4, linewidth=0.5)
    # Areas per method in the panel's corner: the one number the radar sums a method up with.
    areas = ", ".join(f"{r['method']} {r['area']:.2f}" for r in rows.to_dict("records") if np.isfinite(r["area"]))
    ax.text(0.5, -0.16, f"area: {areas}", transform=ax.transAxes, ha="center", va="top", fontsize=6, wrap=True)
