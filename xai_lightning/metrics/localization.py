"""Localisation scores of attribution maps against defect masks, batched over images.

Pure torch on every device, with NumPy kernels on the CPU where they are several times faster than
torch's (sorting, bool counts, float64 row sums); the definitions are those of docs/metrics.md.

Every function takes ``attributions`` of shape (B, H, W) (one non-negative map per
image, already reduced over channels) and ``masks`` of shape (B, H, W) (bool, or
anything binarised with ``> 0``), and returns one score per image, shape (B,).
An image with an empty mask, or with a non-finite value (NaN, +-inf) in its map, scores NaN:
NaN means "takes no part", and the torchmetrics wrappers count such images
instead of dropping them silently. Such a row never disturbs the other rows of its batch.

How the batch is scored: each row's values are sorted once (values only, no indices), and so are
each row's mask values. Every rank-based score is then a few binary searches per row instead of
passes over all B*H*W pixels:

- TKO: with ``tau`` the K-th largest value, ``|G|``, ``|T|``, ``|G & M|`` and ``|T & M|`` are
  differences of ``searchsorted`` positions of ``tau`` in the sorted values and sorted mask values;
- pixel AUROC: the average rank of each mask value is found by binary search in the sorted values;
- pointing game: the number of maximal pixels, overall and in the mask, likewise;
- Otsu: the histogram of a sorted row is cumulative counts, again binary searches.

Sorting values only matters: ``torch.sort`` always builds an index tensor as well and is about
10x slower on the CPU than NumPy's SIMD sort (measured at one thread, 256 maps of 224²); sorting
once serves every score. On CUDA the code
is free of host syncs; on the CPU a "sync" is free, and one batch-wide ``.max()`` trims the padding
of the mask values (never a loop over images).

Scores are computed in float64 (float32 on Apple MPS, which has no float64):
ties between methods are later decided with a tolerance of 1e-9, which float32
rounding (about 6e-8) would break for values that are mathematically equal.
Counts are exact integers throughout, so rank-based scores are exact ratios.
"""

from __future__ import annotations

import math
from functools import cached_property

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "LOCALIZATION_METRICS",
    "dilate_masks",
    "localization_scores",
    "otsu_iou_precision_recall",
    "otsu_threshold",
    "pixel_auroc",
    "pointing_game",
    "relevance_mass_accuracy",
    "top_k_overlap",
]

# dtypes whose CPU tensors NumPy can view without a copy (it has no bfloat16).
_NUMPY_DTYPES = (torch.bool, torch.float16, torch.float32, torch.float64)


def _accumulation_dtype(device: torch.device) -> torch.dtype:
    return torch.float32 if device.type == "mps" else torch.float64


def _use_numpy(x: Tensor) -> bool:
    """Whether ``x`` is a CPU tensor that NumPy can view in place (``torch.from_numpy`` shares the memory back)."""
    return x.device.type == "cpu" and x.dtype in _NUMPY_DTYPES


def _sort_rows(x: Tensor) -> Tensor:
    """Each row of a (B, N) tensor sorted ascending, values only (NaN last)."""
    if _use_numpy(x):
        # NumPy's SIMD sort of values is ~10x faster on the CPU than torch.sort, which builds indices too.
        return torch.from_numpy(np.sort(x.numpy(), axis=1))
    return torch.sort(x, dim=1).values


def _count_rows(x: Tensor) -> Tensor:
    """Number of True per row of a (B, N) bool tensor, int64."""
    if _use_numpy(x):
        # torch's bool-to-int64 sum is ~10x slower on the CPU than NumPy's count_nonzero.
        return torch.from_numpy(np.count_nonzero(x.numpy(), axis=1)).to(torch.long)
    return x.sum(dim=1)


def _sum_rows(x: Tensor, dtype: torch.dtype) -> Tensor:
    """Row sums of a (B, N) tensor accumulated in ``dtype``, without a ``dtype`` copy of ``x``."""
    if _use_numpy(x) and dtype == torch.float64:
        # torch's float32-to-float64 sum is ~7x slower on the CPU than NumPy's.
        return torch.from_numpy(np.add.reduce(x.numpy(), axis=1, dtype=np.float64))
    return x.sum(dim=1, dtype=dtype)


def _flatten(attributions: Tensor, masks: Tensor | None) -> tuple[Tensor, Tensor | None]:
    """Check shapes, binarise the masks and flatten both to (B, H*W)."""
    if attributions.ndim != 3:
        raise ValueError(f"attributions must have shape (B, H, W), got {tuple(attributions.shape)}")
    # Scores are not differentiable; detaching also lets NumPy view the maps.
    attributions = attributions.detach()
    if not attributions.is_floating_point():
        attributions = attributions.to(torch.float32)
    # Explicit sizes, not -1: an empty batch (B = 0) has an ambiguous -1.
    b, n = attributions.shape[0], attributions.shape[1] * attributions.shape[2]
    if masks is None:
        return attributions.reshape(b, n), None
    if masks.shape != attributions.shape:
        raise ValueError(
            f"masks must have the shape of attributions {tuple(attributions.shape)}, got {tuple(masks.shape)}"
        )
    if masks.dtype != torch.bool:
        # Same rule as for the MVTec PNGs (0/255): anything positive is defect.
        masks = masks > 0
    return attributions.reshape(b, n), masks.reshape(b, n)


def _positions(sorted_rows: Tensor, values: Tensor, right: bool = False) -> Tensor:
    """Per row, how many entries of ``sorted_rows`` are ``< values`` (``<= values`` if ``right``).

    ``values`` is (B,) or (B, Q); the result has its shape. A binary search per query: O(log N).
    """
    squeeze = values.ndim == 1
    queries = values.unsqueeze(1) if squeeze else values
    out = torch.searchsorted(sorted_rows, queries.contiguous(), right=right)
    return out.squeeze(1) if squeeze else out


class _Rows:
    """A batch flattened to (B, N) rows, with what several scores share, each computed once on first use.

    ``localization_scores`` builds one and hands it to every score, so the sorts, the row
    statistics and the undefined rows are computed once per batch, not once per metric.
    """

    def __init__(self, attributions: Tensor, masks: Tensor | None) -> None:
        self.shape = attributions.shape
        self.a, self._m = _flatten(attributions, masks)
        self.n = self.a.shape[1]
        self.dtype = _accumulation_dtype(self.a.device)

    @property
    def m(self) -> Tensor:
        """(B, N) bool masks."""
        if self._m is None:
            raise RuntimeError("this score needs masks")
        return self._m

    @cached_property
    def n_pos(self) -> Tensor:
        """|M| per row, int64."""
        return _count_rows(self.m)

    @cached_property
    def amax(self) -> Tensor:
        return self.a.amax(dim=1)

    @cached_property
    def amin(self) -> Tensor:
        return self.a.amin(dim=1)

    @cached_property
    def finite(self) -> Tensor:
        """Rows without NaN or +-inf.

        amax and amin propagate NaN and see the infinities, so two reductions decide it: several
        times cheaper than ``isfinite(a).all(1)``, which writes a (B, N) temporary.
        """
        return torch.isfinite(self.amax) & torch.isfinite(self.amin)

    @cached_property
    def undefined(self) -> Tensor:
        """Rows that take no part: empty mask or a non-finite map."""
        return (self.n_pos == 0) | ~self.finite

    @cached_property
    def sorted_values(self) -> Tensor:
        """(B, N): each row's values, ascending."""
        return _sort_rows(self.a)

    @cached_property
    def sorted_mask_values(self) -> Tensor:
        """(B, W): each row's mask values, ascending, then +inf padding; W >= max |M|.

        Entries at column >= |M| of their row are padding (see ``in_mask_columns``). A finite
        query ``x`` therefore finds exactly the mask values ``< x`` (or ``<= x``) by binary search.
        """
        a, m = self.a, self.m
        if not _use_numpy(a):
            # Device path, free of host syncs: every column, the background replaced by +inf.
            return _sort_rows(torch.where(m, a, math.inf))
        # On the CPU, gather only the mask values (a few % of the pixels) into a (B, max|M|) block
        # and sort that: far cheaper than sorting every row a second time.
        n_pos = self.n_pos.numpy()
        width = int(n_pos.max()) if len(n_pos) else 0
        block = np.full((len(n_pos), width), np.inf, dtype=a.numpy().dtype)
        # Boolean indexing is row-major on both sides: row i's mask values fill row i's first |M_i| slots.
        block[np.arange(width) < n_pos[:, None]] = a.numpy()[m.numpy()]
        block.sort(axis=1)
        return torch.from_numpy(block)

    @cached_property
    def in_mask_columns(self) -> Tensor:
        """(B, W) bool: which entries of ``sorted_mask_values`` are mask values, not padding."""
        width = self.sorted_mask_values.shape[1]
        return torch.arange(width, device=self.a.device) < self.n_pos.unsqueeze(1)

    def nan_where_undefined(self, score: Tensor, also: Tensor | None = None) -> Tensor:
        """``score`` with NaN in the undefined rows (and where ``also`` is True)."""
        undefined = self.undefined if also is None else self.undefined | also
        return score.masked_fill(undefined, float("nan"))


def _resolve_k(k: int | float | None, rows: _Rows) -> Tensor:  # noqa: PYI041 (k=1 and k=1.0 differ)
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


def _top_k_overlap(rows: _Rows, k: int | float | None) -> Tensor:  # noqa: PYI041
    kk = _resolve_k(k, rows)
    values, mask_values, n = rows.sorted_values, rows.sorted_mask_values, rows.n
    # The K-th largest value is at ascending position N - K; K = 0 (empty mask) is a NaN row anyway.
    tau = values.gather(1, (n - kk).clamp(0, n - 1).unsqueeze(1)).squeeze(1)
    # Counts of {A < tau} and {A <= tau}, in the map and in the mask, from four binary searches per
    # row instead of four comparison passes over every pixel.
    below, upto = _positions(values, tau), _positions(values, tau, right=True)
    below_in, upto_in = _positions(mask_values, tau), _positions(mask_values, tau, right=True)
    dtype = rows.dtype
    n_above = (n - upto).to(dtype)  # |G|
    n_tied = (upto - below).to(dtype)  # |T|
    n_above_in = (rows.n_pos - upto_in).to(dtype)  # |G & M|; the +inf padding is never <= a finite tau
    n_tied_in = (upto_in - below_in).to(dtype)  # |T & M|
    kf = kk.to(dtype)
    # n_tied >= 1 whenever the row is defined (tau itself is a value of the row).
    score = (n_above_in + (kf - n_above) * n_tied_in / n_tied.clamp(min=1)) / kf.clamp(min=1)
    return rows.nan_where_undefined(score)


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
    return _top_k_overlap(_Rows(attributions, masks), k)


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


def _pointing_game(rows: _Rows, tolerance: int, ties: str) -> Tensor:
    if ties not in ("any", "expected"):
        raise ValueError(f"ties must be 'any' or 'expected', got {ties!r}")
    if tolerance:
        # The dilated mask has no sorted values to search: compare every pixel with the row maximum.
        target = dilate_masks(rows.m.reshape(rows.shape), tolerance).reshape(rows.m.shape)
        maximal = rows.a == rows.amax.unsqueeze(1)
        n_max, n_max_in = _count_rows(maximal), _count_rows(maximal & target)
    else:
        # Maximal pixels are those not below the row maximum: one binary search per row, in the
        # sorted values and in the sorted mask values.
        n_max = rows.n - _positions(rows.sorted_values, rows.amax)
        n_max_in = rows.n_pos - _positions(rows.sorted_mask_values, rows.amax)
    if ties == "any":
        score = (n_max_in > 0).to(rows.dtype)
    else:
        score = n_max_in.to(rows.dtype) / n_max.clamp(min=1).to(rows.dtype)
    return rows.nan_where_undefined(score)


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
    return _pointing_game(_Rows(attributions, masks), tolerance, ties)


def _relevance_mass_accuracy(rows: _Rows) -> Tensor:
    total = _sum_rows(rows.a, rows.dtype)
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
    return _relevance_mass_accuracy(_Rows(attributions, masks))


def _otsu_bins(values: Tensor, lo: Tensor, span: Tensor, bins: int) -> Tensor:
    """Histogram bin (as a float) of each value of a row on the min-max normalised map, ``floor((v - lo) / span * bins)``.

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


def _otsu(rows: _Rows, bins: int) -> tuple[Tensor, Tensor]:
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
    rows = _Rows(attributions, None)
    threshold, _ = _otsu(rows, bins)
    return threshold.masked_fill(~rows.finite, float("nan"))


def _otsu_iou_precision_recall(rows: _Rows, bins: int) -> tuple[Tensor, Tensor, Tensor]:
    threshold, n_upper = _otsu(rows, bins)
    dtype = rows.dtype
    # Mask values above the threshold: a binary search in the sorted mask values.
    inter = (rows.n_pos - _positions(rows.sorted_mask_values, threshold, right=True)).to(dtype)
    n_pred = n_upper.to(dtype)
    n_mask = rows.n_pos.to(dtype)
    union = n_pred + n_mask - inter
    iou = inter / union.clamp(min=1)
    precision = torch.where(n_pred > 0, inter / n_pred.clamp(min=1), 0.0)
    recall = inter / n_mask.clamp(min=1)
    return rows.nan_where_undefined(iou), rows.nan_where_undefined(precision), rows.nan_where_undefined(recall)


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
    return _otsu_iou_precision_recall(_Rows(attributions, masks), bins)


def _pixel_auroc(rows: _Rows) -> Tensor:
    values, mask_values, n = rows.sorted_values, rows.sorted_mask_values, rows.n
    # The average 1-based rank of a value x among the N values of its row, ties averaged, is
    # (#{A < x} + #{A <= x} + 1) / 2: two binary searches per mask pixel, no rank of every pixel.
    # Kept doubled, it is an integer and the rank sum is exact.
    twice_rank = _positions(values, mask_values) + _positions(values, mask_values, right=True) + 1
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
    return _pixel_auroc(_Rows(attributions, masks))


#: Per-image scores computed by :func:`localization_scores`, by their logged name.
LOCALIZATION_METRICS = ("tko", "pointing_game", "relevance_mass", "otsu_iou", "otsu_precision", "otsu_recall", "pixel_auroc")


def localization_scores(
    attributions: Tensor,
    masks: Tensor,
    *,
    k: int | float | None = None,  # noqa: PYI041 (k=1 is one pixel, k=1.0 every pixel)
    tolerance: int = 0,
    ties: str = "expected",
) -> dict[str, Tensor]:
    """Every per-image localisation score of a batch of maps, ``{name: (B,)}`` (NaN where undefined).

    The one place that maps metric names to their definitions, for evaluate.py and the benchmarks;
    the callback's torchmetrics wrappers call the same functions. The batch is sorted once and
    every score reads the shared sorted rows, so this costs far less than the sum of the functions.
    """
    rows = _Rows(attributions, masks)
    iou, precision, recall = _otsu_iou_precision_recall(rows, bins=256)
    return {
        "tko": _top_k_overlap(rows, k),
        "pointing_game": _pointing_game(rows, tolerance, ties),
        "relevance_mass": _relevance_mass_accuracy(rows),
        "otsu_iou": iou,
        "otsu_precision": precision,
        "otsu_recall": recall,
        "pixel_auroc": _pixel_auroc(rows),
    }
