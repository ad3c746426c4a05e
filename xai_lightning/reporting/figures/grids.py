"""Grids of attribution heatmaps: example images in rows, one overlay per method in columns, the mask outlined.

What a reader looks at first: where each method points on the same defects, next to the ground truth.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib
import numpy as np
from matplotlib.axes import Axes
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure

from xai_lightning.reporting.figures import common
from xai_lightning.reporting.heatmaps import overlay

__all__ = ["heatmap_grid"]


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
    where = "the first example's maps"
    methods = list(available) if methods is None else common.check_methods(methods, available, where)
    if not methods:
        raise ValueError("heatmap_grid has no method to draw: the examples carry no maps.")
    rows = _pick_rows(examples, max_rows)
    for example in rows:
        _check_example(example, methods)
    colors = common.method_colors(available)

    n_cols = 1 + len(methods)
    with matplotlib.rc_context(common.FONT):
        # Cells shrink to fit the page width; the margins hold row labels, column titles and the colour bar.
        left, right, top, bottom = 0.35, 0.05, 0.32, 0.42
        cell = min(1.1, (common.FULL_WIDTH - left - right) / n_cols)
        fig_w = left + right + cell * n_cols
        fig_h = top + bottom + cell * len(rows)
        fig = Figure(figsize=(fig_w, fig_h))
        fig.subplots_adjust(
            left=left / fig_w, right=1 - right / fig_w, top=1 - top / fig_h, bottom=bottom / fig_h,
            wspace=0.04, hspace=0.04,
        )
        axes = fig.subplots(len(rows), n_cols, squeeze=False)
        for r, example in enumerate(rows):
            _draw_row(axes[r], example, methods)
            axes[r, 0].set_ylabel(f"{example['class']}\n{example['image_id']}", fontsize=6, labelpad=2)
        for c, ax in enumerate(axes[0]):
            title = "image" if c == 0 else methods[c - 1]
            color = "black" if c == 0 else _darker(colors[methods[c - 1]])
            ax.set_title(common.wrap(title), fontsize=7, color=color, pad=3)
        _colorbar(fig, bar_w=min(2.4, 0.6 * (fig_w - left - right)))
    return common.save_figure(fig, out_path)


def _draw_row(axes: Sequence[Axes], example: Mapping, methods: Sequence[str]) -> None:
    """One example: the image, then its map under each method, the defect mask outlined on every cell."""
    image = np.asarray(example["image"], dtype=np.float32)
    mask = np.asarray(example["mask"], dtype=bool)
    cells = [(255 * image).clip(0, 255).astype(np.uint8)]
    cells += [overlay(image, np.asarray(example["maps"][m], dtype=np.float32)) for m in methods]
    for ax, picture in zip(axes, cells):
        ax.imshow(picture, interpolation="nearest")
        if mask.any():  # contour of an empty mask draws nothing and warns
            ax.contour(mask.astype(np.float32), levels=[0.5], colors="white", linewidths=0.8)
        ax.set_xticks([])
        ax.set_yticks([])
        for spine in ax.spines.values():
            spine.set_linewidth(0.4)


def _colorbar(fig: Figure, bar_w: float) -> None:
    """One colour bar under the grid, ``bar_w`` inches wide and centred.

    It is shared because every map is min–max scaled per image, so 0 and 1 mean the same everywhere.
    """
    fig_w, fig_h = fig.get_size_inches()
    bar_ax = fig.add_axes(((fig_w - bar_w) / 2 / fig_w, 0.12 / fig_h, bar_w / fig_w, 0.06 / fig_h), label="colorbar")
    bar = fig.colorbar(ScalarMappable(norm=Normalize(0.0, 1.0), cmap="jet"), cax=bar_ax, orientation="horizontal")
    bar.set_ticks([0.0, 1.0])
    bar.ax.tick_params(labelsize=6, length=2, pad=1)
    bar.ax.xaxis.set_label_position("top")
    bar.set_label("attribution (min–max per map); white line: defect mask", fontsize=6, labelpad=2)


def _darker(color: tuple[float, float, float], factor: float = 0.75) -> tuple[float, float, float]:
    """A darker shade of a colour, readable as text on white."""
    return tuple(factor * c for c in color)


def _pick_rows(examples: Sequence[Mapping], max_rows: int) -> list[Mapping]:
    """At most ``max_rows`` examples grouped by class, classes taking turns so each is represented."""
    by_class: dict[str, list[Mapping]] = {}
    for example in examples:
        by_class.setdefault(str(example["class"]), []).append(example)
    classes = common.order_classes(by_class)
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
        raise ValueError(
            f"example '{example.get('image_id')}' has no map for {missing}; it has {sorted(example['maps'])}."
        )
    for m in methods:
        shape = np.asarray(example["maps"][m]).shape
        if shape != size:
            raise ValueError(f"example '{example.get('image_id')}': map '{m}' {shape} does not match image {size}.")
