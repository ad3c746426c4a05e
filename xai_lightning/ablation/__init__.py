"""The poster ablation: reproduce the hazelnut win-rate poster's pipeline, then change one factor at a time.

``python -m xai_lightning.ablation --config configs/poster.yaml`` (see :mod:`xai_lightning.ablation.__main__`).
"""

from xai_lightning.ablation.factors import POSTER, POSTER_METHODS, REFERENCES, Factor, factors
from xai_lightning.ablation.table import ablation_table

__all__ = ["POSTER", "POSTER_METHODS", "REFERENCES", "Factor", "ablation_table", "factors"]
