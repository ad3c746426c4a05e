"""Otsu thresholding of attribution maps, and the IoU, precision and recall of its foreground against the mask.

One 256-bin histogram per min-max normalised map, read off the rows of :mod:`~xai_lightning.metrics.sorted_rows`.
"""

from __future__ import annotations

import torch
from torch import Tensor

from xai_lightning.metrics.sorted_rows import SortedRows, searchsorted_rows

__all__ = ["OTSU_BINS", "otsu_iou_precision_recall", "otsu_row_scores", "otsu_threshold"]

#: Histogram bins of the Otsu threshold (as scikit-image's ``threshold_otsu``).
OTSU_BINS = 256


def _otsu_bins(values: Tensor, lo: Tensor, span: Tensor, bins: int) -> Tensor:
    """Histogram bin (as a float) of each value of a min-max normalised row, ``floor((v - lo) / span * bins)``.

    Every step is monotone in ``v``. A NaN, or an infinity (inf/inf), makes the whole row NaN:
    nan_to_num puts it in bin 0 instead of letting the cast to an index turn NaN into INT64_MIN,
    the out-of-bounds index that used to raise and take the whole batch down.
    """
    return (values - lo).div_(span).mul_(bins).floor_().clamp_(0, bins - 1).nan_to_num_(0.0)


def _cumulative_histogram(values: Tensor, lo: Tensor, span: Tensor, bins: int) -> Tensor:
    """``n0[:, j]``, the number of values in bins ``<= j``, for (B, N) rows sorted ascending: (B, bins) int64.

    The bin is monotone in the value, so bin j ends where a binary search on the sorted row finds
    it: ``log2(N)`` vectorised steps over every (row, bin) pair at once bin only B * bins * log2(N)
    values instead of all B * N, with the same arithmetic, hence the same bins, as binning them all.
    """
    b, n = values.shape
    levels = torch.arange(bins, dtype=values.dtype, device=values.device)
    low = torch.zeros(b, bins, dtype=torch.long, device=values.device)
    high = torch.full((b, bins), n, dtype=torch.long, device=values.device)
    for _ in range(n.bit_length()):  # the search interval [low, high] holds n + 1 <= 2**steps answers
        mid = (low + high) // 2
        probe = _otsu_bins(values.gather(1, mid.clamp(max=max(n - 1, 0))), lo, span, bins)
        not_past = probe <= levels  # bin(values[mid]) <= j: the end of bin j lies after mid
        searching = low < high
        low = torch.where(searching & not_past, mid + 1, low)
        high = torch.where(searching & ~not_past, mid, high)
    return low


def _otsu(rows: SortedRows, bins: int) -> tuple[Tensor, Tensor]:
    """Otsu on a ``bins``-bin histogram of each min-max normalised row.

    Returns the threshold ``t`` per row, the largest value of the lower class (so ``A > t`` is
    exactly the upper class), and the size of the upper class, int64. Meaningless (but finite and
    in range) on a non-finite row, which the callers mask.
    """
    if bins < 2:
        raise ValueError(f"bins must be >= 2, got {bins}")
    values, n = rows.sorted_values, rows.n
    lo = rows.amin.unsqueeze(1)
    span = rows.amax.unsqueeze(1) - lo
    n0 = _cumulative_histogram(values, lo, torch.where(span > 0, span, 1.0), bins)
    hist = torch.diff(n0, dim=1, prepend=torch.zeros_like(n0[:, :1]))

    # Between-class variance up to a positive factor, from exact integer sums:
    # sigma_b^2 ~ (S*n0 - s0*N)^2 / (n0 * (N - n0)), with n0 pixels and bin-index sum
    # s0 in the lower class. Integers avoid rounding noise where a class is nearly empty.
    bin_ids = torch.arange(bins, device=n0.device)
    s0 = (hist * bin_ids).cumsum(dim=1)
    diff = s0[:, -1:] * n0 - s0 * n
    denom = n0 * (n - n0)
    dtype = rows.dtype
    variance = torch.where(
        denom > 0, diff.to(dtype) ** 2 / denom.clamp(min=1).to(dtype), torch.tensor(-1.0, dtype=dtype, device=n0.device)
    )
    # argmax takes the first maximum: across empty bins the variance is flat,
    # and the first split keeps the threshold at a value that occurs in the map.
    best = variance.argmax(dim=1, keepdim=True)
    # The lower class is the n_lower smallest values, so its largest value is sorted position n_lower - 1.
    n_lower = n0.gather(1, best).squeeze(1)
    threshold = values.gather(1, (n_lower - 1).clamp(0, n - 1).unsqueeze(1)).squeeze(1)
    return threshold, n - n_lower


def otsu_threshold(attributions: Tensor, bins: int = OTSU_BINS) -> Tensor:
    """Otsu threshold of each map, computed on a ``bins``-bin histogram of the min-max normalised map.

    The returned threshold ``t`` is the largest value of the lower class, so
    ``attributions > t`` is exactly the upper class Otsu chose. A constant map
    gets its constant (an empty foreground).

    Returns:
        (B,) thresholds in the units of ``attributions``; NaN for a non-finite map.

    Example:
        >>> a = torch.tensor([[[0.1, 0.2, 0.1], [0.9, 0.8, 0.9]]])
        >>> otsu_threshold(a)
        tensor([0.2000])
    """
    rows = SortedRows(attributions, None)
    threshold, _ = _otsu(rows, bins)
    return threshold.masked_fill(~rows.finite, float("nan"))


def otsu_row_scores(rows: SortedRows, bins: int = OTSU_BINS) -> tuple[Tensor, Tensor, Tensor]:
    """:func:`otsu_iou_precision_recall` of rows already built, so ``localization_scores`` sorts a batch only once."""
    threshold, n_upper = _otsu(rows, bins)
    dtype = rows.dtype
    # Mask values above the threshold: a binary search in the sorted mask values.
    inter = (rows.n_pos - searchsorted_rows(rows.sorted_mask_values, threshold, right=True)).to(dtype)
    n_pred = n_upper.to(dtype)
    n_mask = rows.n_pos.to(dtype)
    union = n_pred + n_mask - inter
    iou = inter / union.clamp(min=1)
    precision = torch.where(n_pred > 0, inter / n_pred.clamp(min=1), 0.0)
    recall = inter / n_mask.clamp(min=1)
    return rows.nan_where_undefined(iou), rows.nan_where_undefined(precision), rows.nan_where_undefined(recall)


def otsu_iou_precision_recall(
    attributions: Tensor, masks: Tensor, bins: int = OTSU_BINS
) -> tuple[Tensor, Tensor, Tensor]:
    """IoU, precision and recall of the Otsu-thresholded map (``A > t``) against the mask.

    Precision of an empty prediction (a constant map) is 0, as
    scikit-learn's ``zero_division`` default: nothing correct was predicted.

    Returns:
        Three (B,) tensors ``(iou, precision, recall)``; NaN for an empty mask
        or a non-finite map.

    Example:
        >>> a = torch.tensor([[[0.1, 0.2, 0.1], [0.9, 0.8, 0.9]]])
        >>> m = torch.tensor([[[False, False, False], [True, True, False]]])
        >>> [round(float(x), 4) for x in otsu_iou_precision_recall(a, m)]
        [0.6667, 0.6667, 1.0]
    """
    return otsu_row_scores(SortedRows(attributions, masks), bins)

