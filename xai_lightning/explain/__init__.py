"""Attribution methods for the multi-task models: a registry of explainers and their reductions to one map.

``create_explainer("gradcam", model)`` builds one by name; ``list_explainers("*grad*")`` filters the names.
"""

from xai_lightning.explain.base import (
    Explainer,
    attribution_mode,
    build_explainers,
    create_explainer,
    explainer_specs,
    list_explainers,
    register_explainer,
)
from xai_lightning.explain.engine import BatchExplanation, explain_batch
from xai_lightning.explain.reduction import REDUCTIONS, reduce_attribution

__all__ = [
    "REDUCTIONS",
    "BatchExplanation",
    "Explainer",
    "attribution_mode",
    "build_explainers",
    "create_explainer",
    "explain_batch",
    "explainer_specs",
    "list_explainers",
    "reduce_attribution",
    "register_explainer",
]
