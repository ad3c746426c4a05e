"""The words that metrics, the attribution pass, the callback and the reports share, defined once.

Every module that writes or reads a metric key, a tie rule or a display name imports it from here,
so a table written during training and one written by ``evaluate.py`` can never disagree on them.
"""

from __future__ import annotations

#: The pooled group next to the per-class groups (``xai/<split>/tko/<method>`` is its key; tables
#: name it in their ``class`` column).
OVERALL = "overall"

#: Methods whose TKO is within this of an image's best all win it (docs/metrics.md, "Win-rate").
TIE_TOLERANCE = 1e-9

#: How the win-rate shares an image that several methods tie on: ``fair`` = 1 / #winners each (nothing
#: depends on the listing order); ``first_listed`` = all of it to the first-listed winner, which is what
#: an argsort-based ranking does (the hazelnut poster's code). Kept only to reproduce that flaw.
WIN_TIES = ("fair", "first_listed")
DEFAULT_WIN_TIES = "fair"

#: How the pointing game scores tied maxima: ``expected`` = their share inside the mask (TKO's tie
#: rule at K = 1, so a constant map scores chance), ``any`` = a hit when any of them is inside.
POINTING_TIES = ("expected", "any")
DEFAULT_POINTING_TIES = "expected"

#: Per-image localisation metrics against the defect mask, in table order.
LOCALIZATION_METRICS = (
    "tko",
    "topk_iou",
    "pointing_game",
    "relevance_mass",
    "otsu_iou",
    "otsu_precision",
    "otsu_recall",
    "pixel_auroc",
)

#: Per-image faithfulness areas (deletion: lower is better; insertion: higher is better).
FAITHFULNESS_METRICS = ("deletion_auc", "insertion_auc")

#: Metrics where a lower value is the better one; every other metric is higher-is-better.
LOWER_IS_BETTER = frozenset({"deletion_auc", "infidelity", "max_sensitivity", "seconds"})

#: How each metric is named in tables, figures and report sentences.
METRIC_LABELS = {
    "win_rate": "win-rate",
    "tko": "TKO",
    "tko_marker": "TKO vs marker",
    "topk_iou": "top-K IoU",
    "pointing_game": "pointing game",
    "relevance_mass": "relevance mass",
    "otsu_iou": "Otsu IoU",
    "otsu_precision": "Otsu precision",
    "otsu_recall": "Otsu recall",
    "pixel_auroc": "pixel AUROC",
    "deletion_auc": "deletion AUC",
    "insertion_auc": "insertion AUC",
    "infidelity": "infidelity",
    "max_sensitivity": "max-sensitivity",
    "seconds": "ms / image",
}


def metric_label(metric: str) -> str:
    """The display name of ``metric`` (its key with spaces for underscores when it has none).

    >>> metric_label("tko"), metric_label("seg_iou")
    ('TKO', 'seg iou')
    """
    return METRIC_LABELS.get(metric, metric.replace("_", " "))
