"""Cross-method agreement: how much the top pixels of two attribution maps coincide.

Each map (B, H, W) is reduced to the mask of its top ``fraction`` pixels (docs/metrics.md: the top
10 %); two methods agree on an image as much as the IoU of their masks. :func:`agreement_matrix`
averages that IoU over images for every pair of methods, overall and per defect class, which shows
whether different methods point at the same evidence. The same IoU measures the run-to-run
stability of stochastic methods (:func:`xai_lightning.metrics.sanity.stability`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from itertools import combinations
from typing import NamedTuple

import pandas as pd
import torch
from torch import Tensor

__all__ = [
    "TOP_FRACTION",
    "Agreement",
    "agreement_matrix",
    "pairwise_agreement",
    "top_fraction_count",
    "top_fraction_iou",
    "top_fraction_mask",
]

#: Share of each map's pixels that agreement and stability compare (docs/metrics.md: the top 10 %).
TOP_FRACTION = 0.1


def top_fraction_count(height: int, width: int, fraction: float) -> int:
    """Pixels a top-``fraction`` mask of an ``height`` x ``width`` map holds: ``floor(fraction·H·W + 0.5)``.

    Rounded half up (not Python's round-half-to-even) and at least one pixel, the same count as a
    fractional ``k`` in :func:`xai_lightning.metrics.localization.top_k_overlap`.
    """
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction must lie in (0, 1]; got {fraction}.")
    n = height * width
    return min(n, max(1, math.floor(fraction * n + 0.5)))


def top_fraction_mask(maps: Tensor, fraction: float = TOP_FRACTION) -> Tensor:
    """(B, H, W) bool mask of each map's ``fraction`` most relevant pixels: exactly the same count per image.

    A threshold (``maps >= k-th largest value``) would select more than ``k`` pixels whenever values
    tie at the threshold (flat regions of Grad-CAM, zeros after a ReLU), which would make IoUs of
    different methods incomparable. Instead pixels are ranked and exactly
    :func:`top_fraction_count` of them kept. Ties are broken deterministically by position: among
    equal values the pixel with the lower row-major (flat) index wins, so the same map always gives
    the same mask on every device. NaN counts as the least relevant value (it is never preferred
    over a finite pixel).

    Args:
        maps: (B, H, W) attribution maps (any real dtype).
        fraction: share of the pixels to keep, in (0, 1].
    """
    if maps.ndim != 3:
        raise ValueError(f"maps must be (B, H, W); got shape {tuple(maps.shape)}.")
    b, h, w = maps.shape
    k = top_fraction_count(h, w, fraction)
    flat = maps.detach().reshape(b, h * w)
    if flat.dtype == torch.bool:
        flat = flat.to(torch.uint8)
    if flat.is_floating_point():
        # Sorting places NaN above +inf; demote it so a broken pixel is never "most relevant".
        flat = torch.nan_to_num(flat, nan=-math.inf)
    # A stable descending sort keeps tied pixels in index order: that is the documented tie-break.
    order = torch.sort(flat, dim=1, descending=True, stable=True).indices[:, :k]
    mask = torch.zeros(b, h * w, dtype=torch.bool, device=maps.device)
    mask.scatter_(1, order, True)
    return mask.reshape(b, h, w)


def _mask_iou(a: Tensor, b: Tensor) -> Tensor:
    """(B,) IoU of two (B, H, W) bool masks, float64; NaN for a row where both masks are empty."""
    inter = (a & b).flatten(1).sum(1, dtype=torch.float64)
    union = (a | b).flatten(1).sum(1, dtype=torch.float64)
    return inter / union


def top_fraction_iou(a: Tensor, b: Tensor, fraction: float = TOP_FRACTION) -> Tensor:
    """(B,) IoU of the top-``fraction`` pixels of two map batches (float64): 1 identical, 0 disjoint.

    Both masks hold exactly :func:`top_fraction_count` pixels (see :func:`top_fraction_mask`), so the
    union is never empty and the IoU is always defined.
    """
    if a.shape != b.shape:
        raise ValueError(f"maps must have the same shape; got {tuple(a.shape)} and {tuple(b.shape)}.")
    return _mask_iou(top_fraction_mask(a, fraction), top_fraction_mask(b, fraction))


class Agreement(NamedTuple):
    """Result of :func:`agreement_matrix`.

    Attributes:
        overall: methods x methods DataFrame, the mean top-fraction IoU over all images.
        per_class: the same matrix per class, stacked with a (class, method) row index and methods
            as columns; None when no labels were given.
    """

    overall: pd.DataFrame
    per_class: pd.DataFrame | None


def pairwise_agreement(maps: Mapping[str, Tensor], fraction: float = TOP_FRACTION) -> dict[tuple[str, str], Tensor]:
    """(B,) top-``fraction`` IoU per image for every unordered pair of methods, in the order given.

    The per-image values behind :func:`agreement_matrix`, for callers that pool images over many
    batches (``evaluate.py`` stores them per image and averages per seed and class later). Each
    method's mask is built once, whatever the number of pairs.

    Args:
        maps: method name -> (B, H, W) maps of the same images in the same order.
        fraction: share of each map's pixels compared (default :data:`TOP_FRACTION`, 10 %).

    Returns:
        ``{(a, b): (B,) float64 IoU}`` for each pair with ``a`` listed before ``b``.
    """
    names = list(maps)
    shapes = {tuple(maps[name].shape) for name in names}
    if len(shapes) > 1:
        raise ValueError(f"maps must all have the same shape; got {dict((n, tuple(maps[n].shape)) for n in names)}.")
    masks = {name: top_fraction_mask(maps[name], fraction) for name in names}
    return {(a, b): _mask_iou(masks[a], masks[b]) for a, b in combinations(names, 2)}


def agreement_matrix(
    maps: Mapping[str, Tensor],
    labels: Tensor | Sequence[int] | None = None,
    class_names: Sequence[str] | None = None,
    fraction: float = TOP_FRACTION,
) -> Agreement:
    """Mean IoU of the top-``fraction`` pixels between every pair of methods, overall and per class.

    The matrix is symmetric with ones on the diagonal (a method's mask equals itself). Each pair's
    IoU is computed per image from masks built once per method; ``overall`` averages it over all
    images, ``per_class`` over the images of each class (classes without images are left out).

    Args:
        maps: method name -> (B, H, W) maps of the same images in the same order.
        labels: (B,) class index of each image, for the per-class matrices.
        class_names: names of the class indices (default: the indices themselves).
        fraction: share of each map's pixels compared (default :data:`TOP_FRACTION`, 10 %).
    """
    if not maps:
        raise ValueError("agreement_matrix needs at least one method's maps.")
    names = list(maps)
    shape = maps[names[0]].shape
    for name in names:
        if maps[name].shape != shape:
            raise ValueError(f"maps['{name}'] has shape {tuple(maps[name].shape)}; expected {tuple(shape)}.")
    n_images = shape[0]
    # (M, M, B) per-image IoUs; the diagonal is 1 by definition, each pair is computed once.
    device = maps[names[0]].device
    iou = torch.ones(len(names), len(names), n_images, dtype=torch.float64, device=device)
    for (a, b), values in pairwise_agreement(maps, fraction).items():
        i, j = names.index(a), names.index(b)
        iou[i, j] = iou[j, i] = values
    overall = pd.DataFrame(
        iou.mean(dim=2).cpu().numpy(),
        index=pd.Index(names, name="method"),
        columns=names,
    )

    per_class = None
    if labels is not None:
        labels = torch.as_tensor(labels).reshape(-1).to(device)
        if labels.numel() != n_images:
            raise ValueError(f"labels holds {labels.numel()} entries for {n_images} images.")
        frames = []
        for label in torch.unique(labels).tolist():
            name = class_names[label] if class_names is not None else label
            block = iou[:, :, labels == label].mean(dim=2).cpu().numpy()
            frames.append(
                pd.DataFrame(
                    block,
                    index=pd.MultiIndex.from_product([[name], names], names=["class", "method"]),
                    columns=names,
                )
            )
        per_class = pd.concat(frames)
    return Agreement(overall, per_class)
