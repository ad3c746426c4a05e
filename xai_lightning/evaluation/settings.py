"""What an evaluation of a run computes: the methods and scoring configuration the run trained with, plus overrides.

A run records its scoring configuration (``xai/scoring.json``); evaluation starts from it, so it scores
exactly what training scored, and says which settings a command-line option changed.
"""

from __future__ import annotations

from typing import Any

from xai_lightning.errors import ConfigError
from xai_lightning.explain import explainer_specs, list_explainers
from xai_lightning.runs import Run
from xai_lightning.scoring import ScoringConfig
from xai_lightning.scoring.config import ScoringOptionError

#: Model-free reference maps every evaluation scores next to the methods asked for: a method that does not beat
#: the centre prior (hazelnuts are centred) or the image's edges has not shown that it localises anything.
REFERENCE_METHODS = ("center_prior", "edge")

#: Deletion / insertion steps when the run's callback had the curves off (their cost belongs to evaluation).
EVALUATION_FAITHFULNESS_STEPS = 10


def configured_methods(run: Run) -> dict[str, dict]:
    """``{display name: {"method": registry name, **options}}`` of the run's AttributionCallback."""
    return explainer_specs(run.callback_options().get("methods") or {})


def methods_for(run: Run, requested: list[str] | None) -> dict[str, dict]:
    """The run's own methods, or the ``requested`` ones (a run's display name or a registry name), plus the
    :data:`REFERENCE_METHODS` they lack; an empty set (``--methods`` alone: model metrics only) stays empty."""
    configured = configured_methods(run)
    if requested is None:
        return with_references(configured)
    known = set(list_explainers()) | set(configured)
    unknown = [name for name in requested if name not in known]
    if unknown:
        raise ConfigError(
            f"--methods {' '.join(unknown)}: not a method of run '{run.path}' ({', '.join(configured) or 'none'}) "
            f"nor a registered explainer ({', '.join(list_explainers())})."
        )
    return with_references({name: configured.get(name, {"method": name}) for name in requested})


def with_references(methods: dict[str, dict]) -> dict[str, dict]:
    """``methods`` followed by each :data:`REFERENCE_METHODS` entry not among them (by display or registry name).

    >>> list(with_references({"gradcam": {"method": "gradcam"}, "prior": {"method": "center_prior", "sigma": 0.1}}))
    ['gradcam', 'prior', 'edge']
    >>> with_references({})
    {}
    """
    if not methods:
        return methods
    present = set(methods) | {spec.get("method") for spec in methods.values()}
    return {**methods, **{name: {"method": name} for name in REFERENCE_METHODS if name not in present}}


def training_scoring(run: Run) -> ScoringConfig:
    """The scoring configuration of the run's training passes.

    Read from ``xai/scoring.json``; a run saved before that record existed is read from its config's
    callback options (the same values), and a run without an AttributionCallback scored with defaults.
    """
    recorded = run.scoring()
    if recorded is not None:
        return recorded
    options = run.callback_options()
    fields = ScoringConfig().to_dict()
    return ScoringConfig.named(f"{run.path} AttributionCallback", **{k: v for k, v in options.items() if k in fields})


def evaluation_scoring(run: Run, **overrides: Any) -> tuple[ScoringConfig, dict[str, tuple[Any, Any]]]:
    """The configuration evaluation scores ``run`` with, and ``{option: (training, evaluation)}`` where they differ.

    Overrides of None keep the training value. Deletion / insertion curves that training left off
    run with :data:`EVALUATION_FAITHFULNESS_STEPS` steps unless ``faithfulness_steps`` says otherwise.
    """
    trained = training_scoring(run)
    config = trained
    if trained.faithfulness_steps == 0 and overrides.get("faithfulness_steps") is None:
        config = config.replace(faithfulness_steps=EVALUATION_FAITHFULNESS_STEPS)
    config = checked_overrides(overrides, config)
    return config, trained.differences(config)


def checked_overrides(overrides: dict[str, Any], base: ScoringConfig | None = None) -> ScoringConfig:
    """``base`` (default: the defaults) with the overrides; a bad one is named by its command-line flag."""
    try:
        return (base or ScoringConfig()).replace(**overrides)
    except ScoringOptionError as error:
        raise ConfigError(f"evaluate.py --{error.option.replace('_', '-')} {error.problem}") from None
