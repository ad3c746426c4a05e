"""Re-scoring saved runs: each run loaded once, then model metrics, attributions, checks and example maps.

``evaluate.py`` (the command) drives these; each works on a :class:`~xai_lightning.runs.LoadedRun`.
"""

from xai_lightning.evaluation.explanations import RunExplanations, example_maps, explain_run
from xai_lightning.evaluation.history import training_curves
from xai_lightning.evaluation.model_metrics import evaluate_run
from xai_lightning.evaluation.settings import EVALUATION_FAITHFULNESS_STEPS, configured_methods, evaluation_scoring

__all__ = [
    "EVALUATION_FAITHFULNESS_STEPS",
    "RunExplanations",
    "configured_methods",
    "evaluate_run",
    "evaluation_scoring",
    "example_maps",
    "explain_run",
    "training_curves",
]
