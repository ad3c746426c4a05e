"""Localisation scores of attribution maps against defect masks (TKO, pointing game, relevance mass, pixel AUROC).

Batched over images, pure torch on every device with NumPy kernels on the CPU; definitions in docs/metrics.md.

Every function takes ``attributions`` of shape (B, H, W) (one non-negative map per
image, already reduced over channels) and ``masks`` of shape (B, H, W) (bool, or
anything binarised with ``> 0``), and returns one score per image, shape (B,).
An image with an empty mask, or with a non-finite value (NaN, +-inf) in its map, scores NaN:
NaN means "takes no part", and the torchmetrics wrappers count such images
instead of dropping them silently. Such a row never disturbs the other rows of its batch.

How the batch is scored: :class:`~xai_lightning.metrics.sorted_rows.SortedRows` sorts each row's
values once, and each row's mask values, so every rank-based score is a few binary searches per row:

- TKO: with ``tau`` the K-th largest value, ``|G|``, ``|T|``, ``|G & M|`` and ``|T & M|`` are
  differences of ``searchsorted`` positions of ``tau`` in the sorted values and sorted mask values;
- pixel AUROC: the average rank of each mask value is found by binary search in the sorted values;
- pointing game: the number of maximal pixels, overall and in the mask, likewise;
- Otsu (:mod:`~xai_lightning.metrics.otsu`): the histogram of a sorted row is cumulative counts.

Scores are exact ratios of integer counts, in float64 (float32 on Apple MPS).
The Otsu scores are re-exported here, so every per-image localisation score can be imported from this module.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from xai_lightning.metrics.names import DEFAULT_POINTING_TIES, LOCALIZATION_METRICS, POINTING_TIES
from xai_lightning.metrics.otsu import OTSU_BINS, otsu_iou_precision_recall, otsu_row_scores, otsu_threshold
from xai_lightning.metrics.sorted_rows import SortedRows, count_rows, searchsorted_rows, sum_rows

__all__ = [
    "LOCALIZATION_METRICS",
    "check_pointing_ties",
    "dilate_masks",
    "localization_scores",
    "otsu_iou_precision_recall",
    "otsu_threshold",
    "pixel_auroc",
    "pointing_game",
    "relevance_mass_accuracy",
    "top_k_iou",
    "top_k_overlap",
]


def _resolve_k(k: int | float | None, rows: SortedRows) -> Tensor:  # noqa: PYI041 (k=1 and k=1.0 differ)
    """K per image as a (B,) int64 tensor."""
    b, n = rows.a.shape
    if k is None:
        return rows.n_pos
    if isinstance(k, bool):
        raise TypeError("k must be an int (a pixel count) or a float in (0, 1] (a fraction of H*W), not bool")
    if isinstance(k, int):
        if not 1 <= k <= n:
            raise ValueError(f"k={k} pixels is outside [1, H*W={n}]")
        count = k
    elif isinstance(k, float):
        if not 0.0 < k <= 1.0:
            raise ValueError(f"k={k} as a fraction of H*W must lie in (0, 1]")
        # Round to nearest rather than ceil: 0.1 * 100 is 10.000000000000002 in
        # floating point and must give 10 pixels, not 11.
        count = min(n, max(1, math.floor(k * n + 0.5)))
    else:
        raise TypeError(f"k must be None, an int or a float, got {type(k).__name__}")
    return torch.full((b,), count, dtype=torch.long, device=rows.a.device)


def _top_k_overlap(rows: SortedRows, k: int | float | None) -> Tensor:  # noqa: PYI041
    kk = _resolve_k(k, rows)
    values, mask_values, n = rows.sorted_values, rows.sorted_mask_values, rows.n
    # The K-th largest value is at ascending position N - K; K = 0 (empty mask) is a NaN row anyway.
    tau = values.gather(1, (n - kk).clamp(0, n - 1).unsqueeze(1)).squeeze(1)
    # Counts of {A < tau} and {A <= tau}, in the map and in the mask, from four binary searches per
    # row instead of four comparison passes over every pixel.
    below, upto = searchsorted_rows(values, tau), searchsorted_rows(values, tau, right=True)
    below_in, upto_in = searchsorted_rows(mask_values, tau), searchsorted_rows(mask_values, tau, right=True)
    dtype = rows.dtype
    n_above = (n - upto).to(dtype)  # |G|
    n_tied = (upto - below).to(dtype)  # |T|
    n_above_in = (rows.n_pos - upto_in).to(dtype)  # |G & M|; the +inf padding is never <= a finite tau
    n_tied_in = (upto_in - below_in).to(dtype)  # |T & M|
    kf = kk.to(dtype)
    # n_tied >= 1 whenever the row is defined (tau itself is a value of the row).
    score = (n_above_in + (kf - n_above) * n_tied_in / n_tied.clamp(min=1)) / kf.clamp(min=1)
    return rows.nan_where_undefined(score)


def _top_k_iou(rows: SortedRows, k: int | float | None, tko: Tensor) -> Tensor:  # noqa: PYI041
    """IoU of the top-K set with the mask, from TKO: ``I = TKO · K`` pixels of the set are in the mask."""
    kf = _resolve_k(k, rows).to(tko.dtype)
    intersection = tko * kf
    return intersection / (kf + rows.n_pos.to(tko.dtype) - intersection)


def top_k_iou(attributions: Tensor, masks: Tensor, k: int | float | None = None) -> Tensor:  # noqa: PYI041
    """IoU of the K most relevant pixels with the mask: ``|S ∩ M| / |S ∪ M|``, S the top-K set (ties as in TKO).

    What the public code behind the hazelnut win-rate poster reports as "Top-K overlap". At K = |M| it is
    ``TKO / (2 − TKO)``: lower than TKO, but ordered the same way on every image, so it picks the same
    winners. NaN where TKO is.

    >>> maps, masks = torch.tensor([[[4.0, 3.0], [2.0, 1.0]]]), torch.tensor([[[True, False], [True, False]]])
    >>> top_k_overlap(maps, masks).item(), round(top_k_iou(maps, masks).item(), 4)  # TKO 1/2, IoU 1/3
    (0.5, 0.3333)
    """
    rows = SortedRows(attributions, masks)
    return _top_k_iou(rows, k, _top_k_overlap(rows, k))


def top_k_overlap(attributions: Tensor, masks: Tensor, k: int | float | None = None) -> Tensor:  # noqa: PYI041
    """Top-K overlap: expected fraction of the K most relevant pixels that lie in the mask.

    With ``tau`` the K-th largest value of a map, ``G = {A > tau}`` and
    ``T = {A == tau}``::

        TKO = (|G & M| + (K - |G|) * |T & M| / |T|) / K

    which is the exact expectation over uniformly random tie-breaking at the
    threshold, so the score is deterministic and independent of pixel order.

    Args:
        attributions: (B, H, W) maps.
        masks: (B, H, W) defect masks.
        k: ``None`` for ``K = |M|`` per image (Quantus' RelevanceRankAccuracy);
            an ``int`` for an absolute pixel count; a ``float`` in (0, 1] for a
            fraction of H*W (rounded to the nearest count, at least 1). Note
            that ``k=1`` is one pixel while ``k=1.0`` is every pixel.

    Returns:
        (B,) scores in [0, 1]; NaN for an empty mask or a non-finite map.

    Example:
        >>> a = torch.tensor([[[3.0, 1.0], [1.0, 0.0]]])
        >>> m = torch.tensor([[[True, False], [False, True]]])
        >>> top_k_overlap(a, m)  # K=2: pixel 3 is in M, one of the two 1s is picked
        tensor([0.5000], dtype=torch.float64)
    """
    return _top_k_overlap(SortedRows(attributions, masks), k)


def dilate_masks(masks: Tensor, radius: int) -> Tensor:
    """Dilate (B, H, W) bool masks by a Euclidean disk of ``radius`` pixels.

    A disk (as TorchRay's pointing game), not a square: a square kernel would
    count diagonal neighbours up to ``radius * sqrt(2)`` away.

    Example:
        >>> m = torch.zeros(1, 5, 5, dtype=torch.bool); m[0, 2, 2] = True
        >>> dilate_masks(m, 1)[0].int()
        tensor([[0, 0, 0, 0, 0],
                [0, 0, 1, 0, 0],
                [0, 1, 1, 1, 0],
                [0, 0, 1, 0, 0],
                [0, 0, 0, 0, 0]], dtype=torch.int32)
    """
    if masks.ndim != 3:
        raise ValueError(f"masks must have shape (B, H, W), got {tuple(masks.shape)}")
    if radius < 0:
        raise ValueError(f"radius must be >= 0, got {radius}")
    if masks.dtype != torch.bool:
        masks = masks > 0
    if radius == 0:
        return masks
    # The disk is a stack of horizontal segments, one per row offset dy, of
    # half-width isqrt(r^2 - dy^2). Segment counts come from one prefix sum
    # along rows, so the cost is O(r) per pixel instead of the O(r^2) of a 2-D
    # convolution (and far below a max-pool per width on the CPU). The loop
    # runs over kernel rows, not images.
    b, height, width = masks.shape
    prefix = masks.to(torch.int32).cumsum(dim=-1)
    # padded[..., i + radius] = number of mask pixels in columns [0, i), for i in [-radius, width + radius].
    padded = torch.cat(
        [
            torch.zeros(b, height, radius + 1, dtype=torch.int32, device=masks.device),
            prefix,
            prefix[..., -1:].expand(b, height, radius),
        ],
        dim=-1,
    )
    rows: dict[int, Tensor] = {}
    out = torch.zeros_like(masks)
    for dy in range(-radius, radius + 1):
        if abs(dy) >= height:
            continue
        half = math.isqrt(radius * radius - dy * dy)
        if half not in rows:
            upper = padded[..., radius + half + 1 : radius + half + 1 + width]
            lower = padded[..., radius - half : radius - half + width]
            rows[half] = upper > lower
        row = rows[half]
        # out[y] |= row[y + dy]
        if dy >= 0:
            out[:, : height - dy] |= row[:, dy:]
        else:
            out[:, -dy:] |= row[:, : height + dy]
    return out


def check_pointing_ties(ties: str) -> str:
    """``ties`` if it names a pointing-game tie rule (one of ``names.POINTING_TIES``); else ValueError."""
    if ties not in POINTING_TIES:
        raise ValueError(f"ties must be one of {', '.join(map(repr, POINTING_TIES))}, got {ties!r}")
    return ties


def _pointing_game(rows: SortedRows, tolerance: int, ties: str) -> Tensor:
    check_pointing_ties(ties)
    if tolerance:
        # The dilated mask has no sorted values to search: compare every pixel with the row maximum.
        target = dilate_masks(rows.m.reshape(rows.shape), tolerance).reshape(rows.m.shape)
        maximal = rows.a == rows.amax.unsqueeze(1)
        n_max, n_max_in = count_rows(maximal), count_rows(maximal & target)
    else:
        # Maximal pixels are those not below the row maximum: one binary search per row, in the
        # sorted values and in the sorted mask values.
        n_max = rows.n - searchsorted_rows(rows.sorted_values, rows.amax)
        n_max_in = rows.n_pos - searchsorted_rows(rows.sorted_mask_values, rows.amax)
    if ties == "any":
        score = (n_max_in > 0).to(rows.dtype)
    else:
        score = n_max_in.to(rows.dtype) / n_max.clamp(min=1).to(rows.dtype)
    return rows.nan_where_undefined(score)


def pointing_game(
    attributions: Tensor,
    masks: Tensor,
    tolerance: int = 0,
    ties: str = DEFAULT_POINTING_TIES,
) -> Tensor:
    """Pointing game: does the most relevant pixel fall on the defect?

    The mask is first dilated by a Euclidean disk of ``tolerance`` pixels
    (TorchRay uses 15 at 224x224). When a map has several maximal pixels (a tie),
    ``ties`` decides the score (docs/metrics.md, "Pointing game"):

    - ``"expected"`` (the default): the fraction of the maximal pixels that lie in
      the dilated mask, the expected hit when the tie is broken uniformly at random
      (TKO's tie rule at K = 1). A constant map (e.g. an all-zero Grad-CAM) then
      scores chance level, ``|M| / (H*W)``.
    - ``"any"``: a hit (1.0) when at least one maximal pixel lies in the dilated
      mask, else a miss (0.0). A constant map is then a hit on every image.

    With a single maximal pixel both rules give 1.0 (hit) or 0.0 (miss).

    Args:
        attributions: (B, H, W) maps.
        masks: (B, H, W) defect masks.
        tolerance: dilation radius in pixels.
        ties: ``"expected"`` or ``"any"``.

    Returns:
        (B,) scores in [0, 1]; NaN for an empty mask (never a hit, unlike Quantus)
        or a non-finite map.

    Example:
        >>> a = torch.tensor([[[0.0, 5.0, 1.0]]])
        >>> pointing_game(a, torch.tensor([[[False, True, False]]]))
        tensor([1.], dtype=torch.float64)
        >>> pointing_game(a, torch.tensor([[[False, False, False]]]))
        tensor([nan], dtype=torch.float64)
        >>> flat, m = torch.zeros(1, 1, 4), torch.tensor([[[True, False, False, False]]])
        >>> pointing_game(flat, m), pointing_game(flat, m, ties="any")
        (tensor([0.2500], dtype=torch.float64), tensor([1.], dtype=torch.float64))
    """
    return _pointing_game(SortedRows(attributions, masks), tolerance, ties)


def _relevance_mass_accuracy(rows: SortedRows) -> Tensor:
    total = sum_rows(rows.a, rows.dtype)
    # The mask's relevance is the sum of its (already gathered) values: no pass over every pixel.
    inside = torch.where(rows.in_mask_columns, rows.sorted_mask_values, 0.0).sum(dim=1, dtype=rows.dtype)
    score = torch.where(total > 0, inside / torch.where(total > 0, total, 1.0), 0.0)
    return rows.nan_where_undefined(score)


def relevance_mass_accuracy(attributions: Tensor, masks: Tensor) -> Tensor:
    """Relevance mass accuracy: share of the total relevance that falls in the mask, ``sum(A*M) / sum(A)``.

    Expects non-negative maps. An all-zero map scores 0, not NaN: it placed no
    relevance on the defect, and excluding it would spare a method that fails
    to produce a map.

    Returns:
        (B,) scores in [0, 1]; NaN for an empty mask or a non-finite map.

    Example:
        >>> a = torch.tensor([[[3.0, 1.0], [0.0, 0.0]]])
        >>> relevance_mass_accuracy(a, torch.tensor([[[True, False], [False, True]]]))
        tensor([0.7500], dtype=torch.float64)
    """
    return _relevance_mass_accuracy(SortedRows(attributions, masks))


def _pixel_auroc(rows: SortedRows) -> Tensor:
    values, mask_values, n = rows.sorted_values, rows.sorted_mask_values, rows.n
    # The average 1-based rank of a value x among the N values of its row, ties averaged, is
    # (#{A < x} + #{A <= x} + 1) / 2: two binary searches per mask pixel, no rank of every pixel.
    # Kept doubled, it is an integer and the rank sum is exact.
    twice_rank = searchsorted_rows(values, mask_values) + searchsorted_rows(values, mask_values, right=True) + 1
    rank_sum = torch.where(rows.in_mask_columns, twice_rank, 0).sum(dim=1).to(rows.dtype) / 2
    n_pos = rows.n_pos.to(rows.dtype)
    n_neg = n - n_pos
    # Mann-Whitney U / (n_pos * n_neg).
    auc = (rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg).clamp(min=1)
    return rows.nan_where_undefined(auc, also=n_neg == 0)


def pixel_auroc(attributions: Tensor, masks: Tensor) -> Tensor:
    """Per-image ROC-AUC of the map as a score for the mask pixels.

    Computed as the Mann-Whitney U statistic with average ranks, so a tie
    between a defect and a background pixel counts 1/2, as in
    ``sklearn.metrics.roc_auc_score``.

    Returns:
        (B,) scores in [0, 1]; NaN for an empty or full mask (AUROC needs both
        classes) or a non-finite map.

    Example:
        >>> a = torch.tensor([[[0.0, 1.0, 1.0, 2.0]]])
        >>> pixel_auroc(a, torch.tensor([[[False, True, False, True]]]))
        tensor([0.8750], dtype=torch.float64)
    """
    return _pixel_auroc(SortedRows(attributions, masks))


def localization_scores(
    attributions: Tensor,
    masks: Tensor,
    *,
    k: int | float | None = None,  # noqa: PYI041 (k=1 is one pixel, k=1.0 every pixel)
    tolerance: int = 0,
    ties: str = DEFAULT_POINTING_TIES,
) -> dict[str, Tensor]:
    """Every per-image localisation score of a batch of maps, ``{name: (B,)}`` (NaN where undefined).

    The one place that maps metric names to their definitions, for evaluate.py and the benchmarks;
    the callback's torchmetrics wrappers call the same functions. The batch is sorted once and
    every score reads the shared sorted rows, so this costs far less than the sum of the functions.
    ``k`` is TKO's (see :func:`top_k_overlap`); ``tolerance`` and ``ties`` are the pointing game's
    (see :func:`pointing_game`).
    """
    rows = SortedRows(attributions, masks)
    iou, precision, recall = otsu_row_scores(rows, OTSU_BINS)
    tko = _top_k_overlap(rows, k)
    return {
        "tko": tko,
        "topk_iou": _top_k_iou(rows, k, tko),
        "pointing_game": _pointing_game(rows, tolerance, ties),
        "relevance_mass": _relevance_mass_accuracy(rows),
        "otsu_iou": iou,
        "otsu_precision": precision,
        "otsu_recall": recall,
        "pixel_auroc": _pixel_auroc(rows),
    }
