"""Attribution methods for the multi-task models: a registry of explainers and their reductions to one map.

Importing the package registers every built-in method; ``create_explainer("gradcam", model)`` builds one by name.
"""

from xai_lightning.explain import methods  # noqa: F401  (registers the built-in explainers)
from xai_lightning.explain.base import (
    Explainer,
    attribution_mode,
    build_explainers,
    create_explainer,
    explainer_class,
    explainer_specs,
    list_explainers,
    register_explainer,
    registered_explainers,
    unregister_explainer,
)
from xai_lightning.explain.baselines import CURVE_BASELINES, EXPLAINER_BASELINES, baseline_image
from xai_lightning.explain.engine import BatchExplanation, explain_batch
from xai_lightning.explain.options import ExplainerOptions
from xai_lightning.explain.reduction import REDUCTIONS, reduce_attribution

__all__ = [
    "CURVE_BASELINES",
    "EXPLAINER_BASELINES",
    "REDUCTIONS",
    "BatchExplanation",
    "Explainer",
    "ExplainerOptions",
    "attribution_mode",
    "baseline_image",
    "build_explainers",
    "create_explainer",
    "explainer_class",
    "explain_batch",
    "explainer_specs",
    "list_explainers",
    "methods",
    "reduce_attribution",
    "register_explainer",
    "registered_explainers",
    "unregister_explainer",
]
