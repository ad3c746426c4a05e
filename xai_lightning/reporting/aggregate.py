"""Aggregation across seeds, significance tests and the checks' summaries, under the name they were first imported by.

The code lives in :mod:`.seeds`, :mod:`.significance` and :mod:`.check_summaries`; this module only re-exports it.
"""

from __future__ import annotations

from xai_lightning.reporting.check_summaries import (
    agreement_square,
    agreement_summary,
    randomization_summary,
    stability_summary,
)
from xai_lightning.reporting.seeds import (
    across_seeds,
    excluded_counts,
    mean_std_label,
    per_seed_summary,
    win_credits,
)
from xai_lightning.reporting.significance import paired_comparisons, significance_sentences

__all__ = [
    "across_seeds",
    "agreement_square",
    "agreement_summary",
    "excluded_counts",
    "mean_std_label",
    "paired_comparisons",
    "per_seed_summary",
    "randomization_summary",
    "significance_sentences",
    "stability_summary",
    "win_credits",
]
