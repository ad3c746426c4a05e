"""torchmetrics wrappers of the localisation scores, accumulated overall and per defect class.

Created once per split by the attribution callback; states are sums and counts, so DDP sync is cheap and exact.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor
from torchmetrics import Metric

from xai_lightning.metrics.localization import (
    check_pointing_ties,
    otsu_iou_precision_recall,
    pixel_auroc,
    pointing_game,
    relevance_mass_accuracy,
    top_k_overlap,
)
from xai_lightning.metrics.names import DEFAULT_POINTING_TIES, OVERALL
from xai_lightning.metrics.otsu import OTSU_BINS
from xai_lightning.metrics.winrate import WinRate, labels_or_zeros, resolve_class_names

__all__ = [
    "LocalizationMetric",
    "TopKOverlap",
    "PointingGame",
    "RelevanceMassAccuracy",
    "OtsuIoU",
    "OtsuPrecision",
    "OtsuRecall",
    "PixelAUROC",
    "WinRate",
    "flatten_result",
]


class LocalizationMetric(Metric):
    """Mean of a per-image localisation score, overall (pooled over images) and per class.

    Subclasses implement ``score(attributions, masks) -> (B,)``. Images whose
    score is NaN (empty mask, e.g. every ``good`` image; non-finite map) are
    counted in ``n_excluded`` and take no part in the means.

    Args:
        num_classes: number of label values when no names are given.
        class_names: names of the label values 0..C-1. With neither, only
            ``"overall"`` is reported and ``labels`` may be omitted.

    ``compute()`` returns ``{"overall": mean, <class>: mean, ..., "n_images":
    included images, "n_excluded": excluded images}`` as 0-d tensors; a class
    without included images has a NaN mean. ``"overall"`` pools images, it is
    not the mean of the class means.
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    value_sum: Tensor
    n_included: Tensor
    n_excluded_per_class: Tensor

    def __init__(
        self,
        num_classes: int | None = None,
        class_names: Sequence[str] | None = None,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.class_names, self.per_class = resolve_class_names(num_classes, class_names)
        n_classes = len(self.class_names)
        # float64 sums: per-image scores are float64 and the sums stay exact
        # enough that batching and DDP sharding do not change the result.
        self.add_state("value_sum", torch.zeros(n_classes, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("n_included", torch.zeros(n_classes, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("n_excluded_per_class", torch.zeros(n_classes, dtype=torch.long), dist_reduce_fx="sum")

    def score(self, attributions: Tensor, masks: Tensor) -> Tensor:
        """(B,) per-image scores, NaN where undefined."""
        raise NotImplementedError

    def update(
        self,
        attributions: Tensor | None = None,
        masks: Tensor | None = None,
        labels: Tensor | None = None,
        *,
        scores: Tensor | None = None,
    ) -> None:
        """Add a batch: ``attributions`` (B, H, W) with their ``masks`` (B, H, W), or their (B,) ``scores``.

        ``labels`` (B,) are class indices. ``scores`` are per-image scores already computed (e.g. by
        ``localization_scores``, once for all metrics); see :meth:`update_scores`.
        """
        if scores is None:
            if attributions is None or masks is None:
                raise ValueError("update needs attributions and masks, or scores")
            scores = self.score(attributions, masks)
        elif attributions is not None or masks is not None:
            raise ValueError("update takes attributions and masks or scores, not both")
        self._add_scores(scores, labels)

    def update_scores(self, values: Tensor, labels: Tensor | None = None) -> None:
        """Add per-image scores already computed (e.g. by ``localization_scores``, once for all metrics).

        Goes through :meth:`update` on purpose: torchmetrics wraps ``update`` to drop the value cached by
        ``compute()`` and to count updates, so a bypass would make the next ``compute()`` return stale means.
        """
        self.update(labels=labels, scores=values)

    def _add_scores(self, values: Tensor, labels: Tensor | None) -> None:
        values = values.to(self.value_sum.device)
        labels = labels_or_zeros(labels, values.shape[0], self.value_sum.device, self.per_class)
        included = torch.isfinite(values)
        # index_add_ with zeroed entries instead of boolean indexing: no host sync.
        self.value_sum.index_add_(0, labels, torch.where(included, values, 0.0).to(self.value_sum.dtype))
        self.n_included.index_add_(0, labels, included.long())
        self.n_excluded_per_class.index_add_(0, labels, (~included).long())

    def compute(self) -> dict[str, Tensor]:
        """See the class docstring."""
        counts = self.n_included.to(self.value_sum.dtype)
        # 0/0 is NaN: no included image means no defined mean.
        result = {OVERALL: self.value_sum.sum() / counts.sum()}
        if self.per_class:
            means = self.value_sum / counts
            result.update(zip(self.class_names, means.unbind(0)))
        result["n_images"] = self.n_included.sum()
        result["n_excluded"] = self.n_excluded_per_class.sum()
        return result


class TopKOverlap(LocalizationMetric):
    """Mean top-K overlap (see ``localization.top_k_overlap``); ``k=None`` is ``K = |M|``.

    Example:
        >>> metric = TopKOverlap(class_names=["crack", "hole"])
        >>> masks = torch.tensor([[[True, False]], [[False, True]], [[False, False]]])
        >>> maps = torch.tensor([[[1.0, 0.0]], [[1.0, 0.0]], [[1.0, 0.0]]])
        >>> metric.update(maps, masks, torch.tensor([0, 1, 1]))
        >>> {k: float(v) for k, v in metric.compute().items()}
        {'overall': 0.5, 'crack': 1.0, 'hole': 0.0, 'n_images': 2.0, 'n_excluded': 1.0}
    """

    def __init__(
        self,
        num_classes: int | None = None,
        class_names: Sequence[str] | None = None,
        k: int | float | None = None,
        **kwargs,
    ) -> None:
        super().__init__(num_classes=num_classes, class_names=class_names, **kwargs)
        self.k = k

    def score(self, attributions: Tensor, masks: Tensor) -> Tensor:
        return top_k_overlap(attributions, masks, k=self.k)


class PointingGame(LocalizationMetric):
    """Mean pointing-game score (see ``localization.pointing_game``; ``ties`` defaults to ``"expected"``)."""

    def __init__(
        self,
        num_classes: int | None = None,
        class_names: Sequence[str] | None = None,
        tolerance: int = 0,
        ties: str = DEFAULT_POINTING_TIES,
        **kwargs,
    ) -> None:
        super().__init__(num_classes=num_classes, class_names=class_names, **kwargs)
        self.tolerance = tolerance
        self.ties = check_pointing_ties(ties)

    def score(self, attributions: Tensor, masks: Tensor) -> Tensor:
        return pointing_game(attributions, masks, tolerance=self.tolerance, ties=self.ties)


class RelevanceMassAccuracy(LocalizationMetric):
    """Mean share of relevance inside the mask (see ``localization.relevance_mass_accuracy``)."""

    def score(self, attributions: Tensor, masks: Tensor) -> Tensor:
        return relevance_mass_accuracy(attributions, masks)


class _OtsuMetric(LocalizationMetric):
    _which = 0

    def __init__(
        self,
        num_classes: int | None = None,
        class_names: Sequence[str] | None = None,
        bins: int = OTSU_BINS,
        **kwargs,
    ) -> None:
        super().__init__(num_classes=num_classes, class_names=class_names, **kwargs)
        self.bins = bins

    def score(self, attributions: Tensor, masks: Tensor) -> Tensor:
        return otsu_iou_precision_recall(attributions, masks, bins=self.bins)[self._which]


class OtsuIoU(_OtsuMetric):
    """Mean IoU of the Otsu-thresholded map with the mask."""

    _which = 0


class OtsuPrecision(_OtsuMetric):
    """Mean precision of the Otsu-thresholded map against the mask."""

    _which = 1


class OtsuRecall(_OtsuMetric):
    """Mean recall of the Otsu-thresholded map against the mask."""

    _which = 2


class PixelAUROC(LocalizationMetric):
    """Mean per-image pixel ROC-AUC (see ``localization.pixel_auroc``); full masks are excluded too."""

    def score(self, attributions: Tensor, masks: Tensor) -> Tensor:
        return pixel_auroc(attributions, masks)


def flatten_result(result: Mapping, prefix: str = "", sep: str = "/") -> dict[str, Tensor]:
    """Flatten a (nested) ``compute()`` result into ``{"prefix/key/subkey": value}`` for a logger.

    Example:
        >>> flatten_result({"overall": {"gradcam": 0.5}, "n_images": 3}, prefix="val/winrate")
        {'val/winrate/overall/gradcam': 0.5, 'val/winrate/n_images': 3}
    """
    flat: dict[str, Tensor] = {}
    for key, value in result.items():
        name = f"{prefix}{sep}{key}" if prefix else str(key)
        if isinstance(value, Mapping):
            flat.update(flatten_result(value, prefix=name, sep=sep))
        else:
            flat[name] = value
    return flat
