"""Win-rate of attribution methods: which method localises each defect best, ties shared fairly (by default).

The functional ``win_credit`` scores one batch; ``WinRate`` accumulates it per defect class, DDP-synced.

Per image (non-empty mask, finite TKO for every method) the winners are the
methods whose TKO is within ``atol`` (``TIE_TOLERANCE``, 1e-9) of the best; each winner gets
``1 / #winners``, the others 0. ``win_rate(m) = sum(credit(m)) / N_images``, so
the rates of the compared methods sum to 1. Nothing depends on the order in
which the methods are listed (argsort-based ranking hands every tie to the
first-listed method).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor
from torchmetrics import Metric

from xai_lightning.metrics.names import DEFAULT_WIN_TIES, OVERALL, TIE_TOLERANCE, WIN_TIES

__all__ = ["win_credit", "win_rate", "WinRate"]

# Keys that compute() uses itself; a class may not take one of these names.
RESERVED_KEYS = frozenset({OVERALL, "n_images", "n_excluded"})


def win_credit(tko: Tensor, atol: float = TIE_TOLERANCE, ties: str = DEFAULT_WIN_TIES) -> Tensor:
    """Credit of each method on each image.

    Args:
        tko: (B, n_methods) top-K overlaps, one row per image.
        atol: methods within ``atol`` of the row's maximum all win.
        ties: ``fair`` shares a tie; ``first_listed`` gives it all to the first winner in column order
            (the poster code's argsort flaw: with three methods tied, the first scores 1, not 1/3).

    Returns:
        (B, n_methods) credits: ``1 / #winners`` for winners, 0 for the rest;
        a row with any non-finite TKO (empty mask, or a method without a
        defined score) is all NaN, meaning the image is excluded.

    Example:
        >>> win_credit(torch.tensor([[0.5, 0.5, 0.2], [0.1, 0.9, 0.3], [float("nan"), 0.4, 0.4]]))
        tensor([[0.5000, 0.5000, 0.0000],
                [0.0000, 1.0000, 0.0000],
                [   nan,    nan,    nan]])
        >>> win_credit(torch.tensor([[0.5, 0.5, 0.2]]), ties="first_listed")
        tensor([[1., 0., 0.]])
    """
    if tko.ndim != 2:
        raise ValueError(f"tko must have shape (B, n_methods), got {tuple(tko.shape)}")
    if not tko.is_floating_point():
        tko = tko.to(torch.float32)
    # Comparing every method with the row maximum (not with its neighbour in a
    # sorted order) makes the winner set independent of the listing order.
    if ties not in WIN_TIES:
        raise ValueError(f"ties is {ties!r}; use one of {', '.join(WIN_TIES)}")
    best = tko.amax(dim=1, keepdim=True)
    winners = (best - tko).abs() <= atol
    if ties == "first_listed":
        first = winners.to(torch.int8).argmax(dim=1, keepdim=True)  # argmax returns the first maximum
        winners = torch.zeros_like(winners).scatter_(1, first, True) & winners.any(dim=1, keepdim=True)
    credit = winners.to(tko.dtype) / winners.sum(dim=1, keepdim=True).clamp(min=1).to(tko.dtype)
    excluded = ~torch.isfinite(tko).all(dim=1, keepdim=True)
    return credit.masked_fill(excluded, float("nan"))


def win_rate(
    tko: Tensor, method_names: Sequence[str], atol: float = TIE_TOLERANCE, ties: str = DEFAULT_WIN_TIES
) -> tuple[dict[str, float], int]:
    """Win-rate of each method over a set of images, on the host.

    A convenience for scripts and notebooks (it copies the result to the CPU);
    during training use ``WinRate``, which never leaves the device until compute.

    Returns:
        ``(rates, n_excluded)``: the win-rate per method name (NaN for every
        method when no image is included) and the number of excluded images.

    Example:
        >>> rates, n_excluded = win_rate(torch.tensor([[0.5, 0.5], [0.2, 0.7], [0.3, float("nan")]]), ["a", "b"])
        >>> rates, n_excluded
        ({'a': 0.25, 'b': 0.75}, 1)
    """
    if tko.ndim != 2 or tko.shape[1] != len(method_names):
        raise ValueError(f"tko must have shape (B, {len(method_names)}), got {tuple(tko.shape)}")
    credit = win_credit(tko, atol=atol, ties=ties)
    included = torch.isfinite(credit).all(dim=1)
    n_included = int(included.sum())
    rates = credit[included].sum(dim=0) / n_included if n_included else torch.full((len(method_names),), float("nan"))
    return {name: float(rate) for name, rate in zip(method_names, rates.tolist())}, tko.shape[0] - n_included


def resolve_class_names(num_classes: int | None, class_names: Sequence[str] | None) -> tuple[list[str], bool]:
    """Class names for the per-class results, and whether to report them at all.

    No names and no count means a single unnamed class: only ``"overall"`` is
    reported and labels may be omitted. A count without names gives
    ``class_0, class_1, ...``.
    """
    if class_names is not None:
        names = [str(name) for name in class_names]
        if num_classes is not None and num_classes != len(names):
            raise ValueError(f"num_classes={num_classes} but {len(names)} class_names were given")
        if not names:
            raise ValueError("class_names must not be empty")
    elif num_classes is not None:
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        names = [f"class_{i}" for i in range(num_classes)]
    else:
        return [OVERALL], False
    if len(set(names)) != len(names):
        raise ValueError(f"class_names must be unique, got {names}")
    clash = RESERVED_KEYS.intersection(names)
    if clash:
        raise ValueError(f"class_names may not use the reserved keys {sorted(clash)}")
    return names, True


def labels_or_zeros(labels: Tensor | None, batch_size: int, device: torch.device, per_class: bool) -> Tensor:
    """Check the class labels of a batch; without per-class reporting they may be omitted."""
    if labels is None:
        if per_class:
            raise ValueError("labels are required when the metric reports per class")
        return torch.zeros(batch_size, dtype=torch.long, device=device)
    if labels.shape != (batch_size,):
        raise ValueError(f"labels must have shape ({batch_size},), got {tuple(labels.shape)}")
    if not per_class:
        # A single unnamed class: every image belongs to it, whatever its label.
        return torch.zeros(batch_size, dtype=torch.long, device=device)
    return labels.to(device=device, dtype=torch.long)


class WinRate(Metric):
    """Win-rate of attribution methods, overall and per defect class.

    States are sums and counts (credit per class and method, included and
    excluded images per class) reduced with ``"sum"``, so DDP sync is one
    small all-reduce and exact.

    Args:
        method_names: the compared methods, in the column order of ``tko``.
        class_names: names of the label values 0..C-1 (e.g. MVTec defect types).
        num_classes: number of classes when no names are given.
        atol: tolerance within which two TKOs tie.
        ties: how a tie is credited (:data:`~xai_lightning.metrics.names.WIN_TIES`).

    Example:
        >>> metric = WinRate(["gradcam", "ig"], class_names=["crack", "hole"])
        >>> metric.update(torch.tensor([[0.5, 0.5], [0.9, 0.1], [0.2, 0.4]]), torch.tensor([0, 0, 1]))
        >>> result = metric.compute()
        >>> {k: round(float(v), 3) for k, v in result["overall"].items()}
        {'gradcam': 0.5, 'ig': 0.5}
        >>> {k: round(float(v), 3) for k, v in result["crack"].items()}
        {'gradcam': 0.75, 'ig': 0.25}
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    credit_sum: Tensor
    n_included: Tensor
    n_excluded_per_class: Tensor

    def __init__(
        self,
        method_names: Sequence[str],
        class_names: Sequence[str] | None = None,
        num_classes: int | None = None,
        atol: float = TIE_TOLERANCE,
        ties: str = DEFAULT_WIN_TIES,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.method_names = [str(name) for name in method_names]
        if not self.method_names:
            raise ValueError("method_names must not be empty")
        if len(set(self.method_names)) != len(self.method_names):
            raise ValueError(f"method_names must be unique, got {self.method_names}")
        self.class_names, self.per_class = resolve_class_names(num_classes, class_names)
        self.atol, self.ties = atol, ties
        n_classes, n_methods = len(self.class_names), len(self.method_names)
        # float64: credits like 1/3 summed over thousands of images stay exact to ~1e-13.
        self.add_state("credit_sum", torch.zeros(n_classes, n_methods, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("n_included", torch.zeros(n_classes, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("n_excluded_per_class", torch.zeros(n_classes, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, tko: Tensor, labels: Tensor | None = None) -> None:
        """Add a batch: ``tko`` (B, n_methods), ``labels`` (B,) class indices."""
        if tko.ndim != 2 or tko.shape[1] != len(self.method_names):
            raise ValueError(f"tko must have shape (B, {len(self.method_names)}), got {tuple(tko.shape)}")
        labels = labels_or_zeros(labels, tko.shape[0], self.credit_sum.device, self.per_class)
        credit = win_credit(tko.to(self.credit_sum.device), atol=self.atol, ties=self.ties)
        included = torch.isfinite(credit).all(dim=1)
        # index_add_ with zeroed rows instead of boolean indexing: no host sync.
        self.credit_sum.index_add_(0, labels, torch.where(included[:, None], credit, 0.0).to(self.credit_sum.dtype))
        self.n_included.index_add_(0, labels, included.long())
        self.n_excluded_per_class.index_add_(0, labels, (~included).long())

    def compute(self) -> dict:
        """``{"overall": {method: rate}, <class>: {method: rate}, "n_images": int tensor, "n_excluded": int tensor}``.

        ``"overall"`` pools images over classes; a class without included
        images has NaN rates.
        """

        def rates(credit: Tensor, count: Tensor) -> dict[str, Tensor]:
            values = credit / count.to(credit.dtype)  # 0/0 gives NaN for a class without images
            return dict(zip(self.method_names, values.unbind(0)))

        result: dict = {OVERALL: rates(self.credit_sum.sum(dim=0), self.n_included.sum())}
        if self.per_class:
            for i, name in enumerate(self.class_names):
                result[name] = rates(self.credit_sum[i], self.n_included[i])
        result["n_images"] = self.n_included.sum()
        result["n_excluded"] = self.n_excluded_per_class.sum()
        return result
