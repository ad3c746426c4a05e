"""A batch of attribution maps flattened to sorted rows: the machinery every localisation score shares.

Internal to :mod:`xai_lightning.metrics`; :mod:`~xai_lightning.metrics.localization` describes how the scores use it.

Each row's values are sorted once (values only, no indices), and so are each row's mask values, so
every rank-based score is a few binary searches per row instead of passes over all B*H*W pixels.
Sorting values only matters: ``torch.sort`` always builds an index tensor as well and is about 10x
slower on the CPU than NumPy's SIMD sort (measured at one thread, 256 maps of 224²). On CUDA the
code is free of host syncs; on the CPU a "sync" is free, and one batch-wide ``.max()`` trims the
padding of the mask values (never a loop over images).

Scores are accumulated in float64 (float32 on Apple MPS, which has no float64): ties between
methods are later decided with a tolerance of ``TIE_TOLERANCE`` (1e-9,
:mod:`xai_lightning.metrics.names`), which float32 rounding (about 6e-8) would break for values
that are mathematically equal. Counts are exact integers throughout.
"""

from __future__ import annotations

import math
from functools import cached_property

import numpy as np
import torch
from torch import Tensor

__all__ = ["SortedRows", "count_rows", "searchsorted_rows", "sum_rows"]

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


def count_rows(x: Tensor) -> Tensor:
    """Number of True per row of a (B, N) bool tensor, int64."""
    if _use_numpy(x):
        # torch's bool-to-int64 sum is ~10x slower on the CPU than NumPy's count_nonzero.
        return torch.from_numpy(np.count_nonzero(x.numpy(), axis=1)).to(torch.long)
    return x.sum(dim=1)


def sum_rows(x: Tensor, dtype: torch.dtype) -> Tensor:
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


def searchsorted_rows(sorted_rows: Tensor, values: Tensor, right: bool = False) -> Tensor:
    """Per row, how many entries of ``sorted_rows`` are ``< values`` (``<= values`` if ``right``).

    ``values`` is (B,) or (B, Q); the result has its shape. A binary search per query: O(log N).
    """
    squeeze = values.ndim == 1
    queries = values.unsqueeze(1) if squeeze else values
    out = torch.searchsorted(sorted_rows, queries.contiguous(), right=right)
    return out.squeeze(1) if squeeze else out


class SortedRows:
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
        return count_rows(self.m)

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

