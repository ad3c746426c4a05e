"""Metrics that score attribution maps: localisation against defect masks, win-rate, faithfulness, sanity.

Functional forms (batched, pure torch) and torchmetrics wrappers (DDP-synced, per defect class).
"""

from xai_lightning.metrics.agreement import (
    Agreement,
    agreement_matrix,
    pairwise_agreement,
    top_fraction_iou,
    top_fraction_mask,
)
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
from xai_lightning.metrics.faithfulness import (
    curve_area,
    curve_baseline,
    deletion_curve,
    infidelity_score,
    insertion_curve,
    max_sensitivity_score,
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
from xai_lightning.metrics.sanity import (
    cascading_randomization,
    sanity_verdict,
    spearman,
    stability,
)
from xai_lightning.metrics.winrate import WinRate, win_credit, win_rate

__all__ = [
    "LOCALIZATION_METRICS",
    "Agreement",
    "LocalizationMetric",
    "OtsuIoU",
    "OtsuPrecision",
    "OtsuRecall",
    "PixelAUROC",
    "PointingGame",
    "RelevanceMassAccuracy",
    "TopKOverlap",
    "WinRate",
    "agreement_matrix",
    "pairwise_agreement",
    "cascading_randomization",
    "curve_area",
    "curve_baseline",
    "deletion_curve",
    "dilate_masks",
    "flatten_result",
    "infidelity_score",
    "insertion_curve",
    "localization_scores",
    "max_sensitivity_score",
    "otsu_iou_precision_recall",
    "otsu_threshold",
    "pixel_auroc",
    "pointing_game",
    "relevance_mass_accuracy",
    "sanity_verdict",
    "spearman",
    "stability",
    "top_fraction_iou",
    "top_fraction_mask",
    "top_k_overlap",
    "win_credit",
    "win_rate",
]
