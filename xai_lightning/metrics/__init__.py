"""Metrics that score attribution maps against defect masks: localisation and win-rate.

Functional forms (batched, pure torch) and torchmetrics wrappers (DDP-synced, per defect class).
"""

from xai_lightning.metrics.collection import (
    LocalizationMetric,
    OtsuIoU,
    OtsuPrecision,
    OtsuRecall,
    PixelAUROC,
    PointingGame,
    RelevanceMassAccuracy,
    TopKOverlap,
    flatten_result,
)
from xai_lightning.metrics.localization import (
    LOCALIZATION_METRICS,
    dilate_masks,
    localization_scores,
    otsu_iou_precision_recall,
    otsu_threshold,
    pixel_auroc,
    pointing_game,
    relevance_mass_accuracy,
    top_k_overlap,
)
from xai_lightning.metrics.winrate import WinRate, win_credit, win_rate

__all__ = [
    "LOCALIZATION_METRICS",
    "localization_scores",
    "top_k_overlap",
    "dilate_masks",
    "pointing_game",
    "relevance_mass_accuracy",
    "otsu_threshold",
    "otsu_iou_precision_recall",
    "pixel_auroc",
    "win_credit",
    "win_rate",
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
