"""The attribution pass, free of Lightning: pick images, explain them, score the maps, accumulate a result.

The training callback and ``evaluate.py`` are two drivers of this one pass, so a run is evaluated
with exactly the scores it was trained with (the configuration is saved as ``xai/scoring.json``).
"""

from xai_lightning.scoring.accumulator import PassAccumulator, PassResult, winners
from xai_lightning.scoring.batch import BatchScores, CurveError, describe_error, score_batch
from xai_lightning.scoring.config import SCORING_FILE, ScoringConfig
from xai_lightning.scoring.selection import count_empty_masks, select_images

__all__ = [
    "SCORING_FILE",
    "BatchScores",
    "CurveError",
    "PassAccumulator",
    "PassResult",
    "ScoringConfig",
    "count_empty_masks",
    "describe_error",
    "score_batch",
    "select_images",
    "winners",
]
