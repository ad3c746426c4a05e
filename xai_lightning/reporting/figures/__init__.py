"""Paper figures of an experiment across seeds: win-rate bars, distributions, heatmap grids, curves and checks.

Each function writes one PNG at 200 dpi and returns its path; :mod:`.common` holds what all kinds of figure share.
"""

from xai_lightning.reporting.figures.check_figures import (
    FAITHFULNESS_CURVES,
    agreement_heatmap,
    faithfulness_curves,
    randomization_curves,
)
from xai_lightning.reporting.figures.common import BASELINE_METHODS, COLUMN_WIDTH, DPI, FULL_WIDTH, method_colors
from xai_lightning.reporting.figures.grids import heatmap_grid
from xai_lightning.reporting.figures.seed_figures import (
    MAX_DEFAULT_CURVES,
    metric_distributions,
    training_curves,
    win_rate_bars,
)

__all__ = [
    "BASELINE_METHODS",
    "COLUMN_WIDTH",
    "DPI",
    "FAITHFULNESS_CURVES",
    "FULL_WIDTH",
    "MAX_DEFAULT_CURVES",
    "agreement_heatmap",
    "faithfulness_curves",
    "heatmap_grid",
    "method_colors",
    "metric_distributions",
    "randomization_curves",
    "training_curves",
    "win_rate_bars",
]
