"""Localisation scores of attribution maps against defect masks, batched over images.

Pure torch, device-agnostic and free of host syncs; the definitions are those of docs/metrics.md.

Every function takes ``attributions`` of shape (B, H, W) (one non-negative map per
image, already reduced over channels) and ``masks`` of shape (B, H, W) (bool, or
anything binarised with ``> 0``), and returns one score per image, shape (B,).
An image with an empty mask, or with a non-finite value in its map, scores NaN:
NaN means "takes no part", and the torchmetrics wrappers count such images
instead of dropping them silently.

Scores are computed in float64 (float32 on Apple MPS, which has no float64):
ties between methods are later decided with a tolerance of 1e-9, which float32
rounding (about 6e-8) would break for values that are mathematically equal.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = [
    "top_k_overlap",
    "dilate_masks",
    "pointing_game",
    "relevance_mass_accuracy",
    "otsu_threshold",
    "otsu_iou_precision_recall",
    "pixel_auroc",
]


def _accumulation_dtype(device: torch.device) -> torch.dtype:
    return torch.float32 if device.type == "mps" else torch.float64


def _flatten(attributions: Tensor, masks: Tensor) -> tuple[Tensor, Tensor]:
    """Check shapes, binarise the masks and flatten both to (B, H*W)."""
    if attributions.ndim != 3:
        raise ValueError(f"attributions must have shape (B, H, W), got {tuple(attributions.shape)}")
    if masks.shape != attributions.shape:
        raise ValueError(
            f"masks must have the shape of attributions {tuple(attributions.shape)}, got {tuple(masks.shape)}"
        )
    if not attributions.is_floating_point():
        attributions = attributions.to(torch.float32)
    if masks.dtype != torch.bool:
        # Same rule as for the MVTec PNGs (0/255): anything positive is defect.
        masks = masks > 0
    b = attributions.shape[0]
    return attributions.reshape(b, -1), masks.reshape(b, -1)


def _undefined_rows(a: Tensor, m: Tensor) -> Tensor:
    """Rows that take no part: empty mask or a non-finite attribution."""
    return ~m.any(dim=1) | ~torch.isfinite(a).all(dim=1)


def _resolve_k(k: int | float | None, m: Tensor) -> Tensor:
    """K per image as a (B,) int64 tensor."""
    b, n = m.shape
    if k is None:
        return m.sum(dim=1)
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
    return torch.full((b,), count, dtype=torch.long, device=m.device)


def top_k_overlap(attributions: Tensor, masks: Tensor, k: int | float | None = None) -> Tensor:
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
    a, m = _flatten(attributions, masks)
    dtype = _accumulation_dtype(a.device)
    kk = _resolve_k(k, m)
    # One sort per row serves every K; gather picks each row's own K-th value.
    ranked = torch.sort(a, dim=1, descending=True).values
    tau = ranked.gather(1, (kk - 1).clamp(min=0).unsqueeze(1))
    above = a > tau
    tied = a == tau
    n_above = above.sum(dim=1).to(dtype)
    n_above_in = (above & m).sum(dim=1).to(dtype)
    n_tied = tied.sum(dim=1).to(dtype)
    n_tied_in = (tied & m).sum(dim=1).to(dtype)
    kf = kk.to(dtype)
    # n_tied >= 1 whenever the row is defined (tau itself is a value of the row).
    score = (n_above_in + (kf - n_above) * n_tied_in / n_tied.clamp(min=1)) / kf.clamp(min=1)
    return score.masked_fill(_undefined_rows(a, m), float("nan"))


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


def pointing_game(
    attributions: Tensor,
    masks: Tensor,
    tolerance: int = 0,
    ties: str = "any",
) -> Tensor:
    """Pointing game: does the most relevant pixel fall on the defect?

    The mask is first dilated by a Euclidean disk of ``tolerance`` pixels
    (TorchRay uses 15 at 224x224). With ``ties="any"`` (the definition in
    docs/metrics.md) an image is a hit (1.0) when at least one of its maximal
    pixels, ties included, lies in the dilated mask, else a miss (0.0). Note
    that a constant map (e.g. an all-zero Grad-CAM) is then a hit on every
    image; ``ties="expected"`` instead scores the fraction of maximal pixels
    inside the dilated mask, the expected hit under random tie-breaking, which
    gives a constant map chance level.

    Args:
        attributions: (B, H, W) maps.
        masks: (B, H, W) defect masks.
        tolerance: dilation radius in pixels.
        ties: ``"any"`` or ``"expected"``.

    Returns:
        (B,) scores; NaN for an empty mask (never a hit, unlike Quantus) or a
        non-finite map.

    Example:
        >>> a = torch.tensor([[[0.0, 5.0, 1.0]]])
        >>> pointing_game(a, torch.tensor([[[False, True, False]]]))
        tensor([1.], dtype=torch.float64)
        >>> pointing_game(a, torch.tensor([[[False, False, False]]]))
        tensor([nan], dtype=torch.float64)
    """
    if ties not in ("any", "expected"):
        raise ValueError(f"ties must be 'any' or 'expected', got {ties!r}")
    a, m = _flatten(attributions, masks)
    dtype = _accumulation_dtype(a.device)
    undefined = _undefined_rows(a, m)
    if tolerance:
        target = dilate_masks(m.reshape(masks.shape), tolerance).reshape(m.shape)
    else:
        target = m
    maximal = a == a.amax(dim=1, keepdim=True)
    if ties == "any":
        score = (maximal & target).any(dim=1).to(dtype)
    else:
        score = (maximal & target).sum(dim=1).to(dtype) / maximal.sum(dim=1).clamp(min=1).to(dtype)
    return score.masked_fill(undefined, float("nan"))


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
    a, m = _flatten(attributions, masks)
    dtype = _accumulation_dtype(a.device)
    ad = a.to(dtype)
    total = ad.sum(dim=1)
    inside = (ad * m).sum(dim=1)
    score = torch.where(total > 0, inside / torch.where(total > 0, total, 1.0), 0.0)
    return score.masked_fill(_undefined_rows(a, m), float("nan"))


def _otsu_split(a: Tensor, bins: int) -> tuple[Tensor, Tensor]:
    """Otsu on flattened (B, N) maps: the threshold per row and the bin index of every pixel."""
    if bins < 2:
        raise ValueError(f"bins must be >= 2, got {bins}")
    b, n = a.shape
    lo = a.amin(dim=1, keepdim=True)
    span = a.amax(dim=1, keepdim=True) - lo
    scaled = (a - lo) / torch.where(span > 0, span, 1.0)
    # Rounding is monotone, so bin indices never decrease with the value.
    idx = (scaled * bins).floor().clamp(0, bins - 1).to(torch.long)
    idx = torch.where(torch.isfinite(a), idx, 0)
    hist = torch.zeros(b, bins, dtype=torch.long, device=a.device).scatter_add_(1, idx, torch.ones_like(idx))

    # Between-class variance up to a positive factor, from exact integer sums:
    # sigma_b^2 ~ (S*n0 - s0*N)^2 / (n0 * (N - n0)), with n0 pixels and bin-index sum
    # s0 in the lower class. Integers avoid rounding noise where a class is nearly empty.
    bin_ids = torch.arange(bins, device=a.device)
    n0 = hist.cumsum(dim=1)
    s0 = (hist * bin_ids).cumsum(dim=1)
    diff = s0[:, -1:] * n0 - s0 * n
    dtype = _accumulation_dtype(a.device)
    denom = n0 * (n - n0)
    variance = torch.where(
        denom > 0, diff.to(dtype) ** 2 / denom.clamp(min=1).to(dtype), torch.tensor(-1.0, dtype=dtype, device=a.device)
    )
    # argmax takes the first maximum: across empty bins the variance is flat,
    # and the first split keeps the threshold at a value that occurs in the map.
    best = variance.argmax(dim=1, keepdim=True)

    # The threshold is the largest value of the lower class, so {A > t} is
    # exactly the upper class (the bins are monotone in the value).
    bin_max = torch.full((b, bins), float("-inf"), dtype=a.dtype, device=a.device)
    bin_max = bin_max.scatter_reduce(1, idx, a, reduce="amax", include_self=True)
    threshold = bin_max.cummax(dim=1).values.gather(1, best).squeeze(1)
    return threshold, idx


def otsu_threshold(attributions: Tensor, bins: int = 256) -> Tensor:
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
    if attributions.ndim != 3:
        raise ValueError(f"attributions must have shape (B, H, W), got {tuple(attributions.shape)}")
    a = attributions.reshape(attributions.shape[0], -1)
    if not a.is_floating_point():
        a = a.to(torch.float32)
    threshold, _ = _otsu_split(a, bins)
    return threshold.masked_fill(~torch.isfinite(a).all(dim=1), float("nan"))


def otsu_iou_precision_recall(
    attributions: Tensor, masks: Tensor, bins: int = 256
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
    a, m = _flatten(attributions, masks)
    dtype = _accumulation_dtype(a.device)
    threshold, _ = _otsu_split(a, bins)
    predicted = a > threshold.unsqueeze(1)
    inter = (predicted & m).sum(dim=1).to(dtype)
    n_pred = predicted.sum(dim=1).to(dtype)
    n_mask = m.sum(dim=1).to(dtype)
    union = n_pred + n_mask - inter
    undefined = _undefined_rows(a, m)
    iou = inter / union.clamp(min=1)
    precision = torch.where(n_pred > 0, inter / n_pred.clamp(min=1), 0.0)
    recall = inter / n_mask.clamp(min=1)
    nan = float("nan")
    return iou.masked_fill(undefined, nan), precision.masked_fill(undefined, nan), recall.masked_fill(undefined, nan)


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
    a, m = _flatten(attributions, masks)
    dtype = _accumulation_dtype(a.device)
    b, n = a.shape
    values, order = torch.sort(a, dim=1)
    positions = torch.arange(n, device=a.device).expand(b, n)
    # Tie groups are runs of equal values in the sorted row; every member gets
    # the mean of the group's first and last 0-based position, plus one.
    starts = torch.ones(b, n, dtype=torch.bool, device=a.device)
    starts[:, 1:] = values[:, 1:] != values[:, :-1]
    ends = torch.ones(b, n, dtype=torch.bool, device=a.device)
    ends[:, :-1] = starts[:, 1:]
    first = torch.where(starts, positions, 0).cummax(dim=1).values
    last = torch.where(ends, positions, n).flip(1).cummin(dim=1).values.flip(1)
    ranks = (first + last).to(dtype) / 2 + 1
    positive = m.gather(1, order)
    n_pos = positive.sum(dim=1).to(dtype)
    n_neg = n - n_pos
    rank_sum = (ranks * positive).sum(dim=1)
    auc = (rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg).clamp(min=1)
    undefined = _undefined_rows(a, m) | (n_neg == 0)
    return auc.masked_fill(undefined, float("nan"))


#: Per-image scores computed by :func:`localization_scores`, by their logged name.
LOCALIZATION_METRICS = ("tko", "pointing_game", "relevance_mass", "otsu_iou", "otsu_precision", "otsu_recall", "pixel_auroc")


def localization_scores(
    attributions: Tensor,
    masks: Tensor,
    *,
    k: int | float | None = None,
    tolerance: int = 0,
    ties: str = "expected",
) -> dict[str, Tensor]:
    """Every per-image localisation score of a batch of maps, ``{name: (B,)}`` (NaN where undefined).

    The one place that maps metric names to their definitions, for evaluate.py and the benchmarks;
    the callback's torchmetrics wrappers call the same functions.
    """
    iou, precision, recall = otsu_iou_precision_recall(attributions, masks)
    return {
        "tko": top_k_overlap(attributions, masks, k=k),
        "pointing_game": pointing_game(attributions, masks, tolerance=tolerance, ties=ties),
        "relevance_mass": relevance_mass_accuracy(attributions, masks),
        "otsu_iou": iou,
        "otsu_precision": precision,
        "otsu_recall": recall,
        "pixel_auroc": pixel_auroc(attributions, masks),
    }
