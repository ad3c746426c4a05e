"""One batch of an attribution pass: explain with every method, then score each map against the mask and the model.

:func:`score_batch` is the single place where maps become per-image scores; the training callback
and ``evaluate.py`` both call it, so the two can only differ in the settings they pass.
"""

from __future__ import annotations

import traceback
from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from xai_lightning.data.transforms import input_normalized
from xai_lightning.explain.base import Explainer
from xai_lightning.explain.engine import device_clock, explain_batch
from xai_lightning.metrics.faithfulness import curve_area, curve_baseline, deletion_curve, insertion_curve
from xai_lightning.metrics.localization import localization_scores
from xai_lightning.scoring.config import ScoringConfig

#: The curves behind the faithfulness areas, by the prefix of their metric (``deletion_auc``, ...).
CURVES = {"deletion": deletion_curve, "insertion": insertion_curve}


class CurveError(RuntimeError):
    """A method's deletion / insertion curves failed (its maps were fine): the method is dropped all the same."""

    def __str__(self) -> str:
        return f"deletion / insertion curves failed: {super().__str__()}"


@dataclass
class BatchScores:
    """What one batch gave: per method, its maps and per-image scores; failures instead where a method failed.

    Attributes:
        labels, targets, predictions: (B,) class indices: the truth, what was explained, what the model said.
        maps: ``{method: (B, H, W)}`` of the methods that succeeded.
        scores: ``{method: {metric: (B,) float64}}`` with every metric of ``config.metrics`` (NaN where undefined).
        curves: ``{method: {"deletion" | "insertion": (B, steps + 1)}}`` probabilities, when curves are on.
        errors: ``{method: exception}`` of the methods that failed on this batch (explanation or curves).
        seconds: explanation wall time per method on this batch; ``faithfulness_seconds`` that of its curves.
    """

    labels: Tensor
    targets: Tensor
    predictions: Tensor
    maps: dict[str, Tensor] = field(default_factory=dict)
    scores: dict[str, dict[str, Tensor]] = field(default_factory=dict)
    curves: dict[str, dict[str, Tensor]] = field(default_factory=dict)
    errors: dict[str, BaseException] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    faithfulness_seconds: dict[str, float] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.labels)


def score_batch(
    model: nn.Module,
    explainers: Mapping[str, Explainer],
    images: Tensor,
    masks: Tensor,
    labels: Tensor,
    config: ScoringConfig,
) -> BatchScores:
    """Explain ``images`` with every method and score the maps, as ``config`` says.

    Args:
        model: the multi-task model (``model.classify`` gives the logits explained and the curves' probabilities).
        explainers: display name → explainer; methods that can share a gradient pass share one.
        images: (B, 3, H, W) normalised images on the model's device.
        masks: (B, H, W) defect masks (bool, or anything where > 0 is the defect).
        labels: (B,) ground-truth classes.

    A method that raises (or returns a non-finite map, or whose curves fail) is in ``errors`` and
    takes no further part in the batch; the others go on.
    """
    masks = masks > 0
    with torch.no_grad():
        logits = model.classify(images)
    predictions = logits.argmax(dim=1)
    targets = labels if config.target == "label" else predictions
    explained = explain_batch(explainers, images, targets)
    result = BatchScores(labels=labels, targets=targets, predictions=predictions, errors=dict(explained.errors))
    if config.faithfulness_steps:
        # One baseline image for every method's curves, in the model's input space.
        reference = curve_baseline(images, config.faithfulness_baseline, normalized=input_normalized(model))
        endpoints = _curve_endpoints(model, reference, logits, targets)
    for name, maps in explained.maps.items():
        scores: dict[str, Tensor] = {}
        if config.faithfulness_steps:
            start = device_clock(images.device)
            try:
                curves = {
                    curve: function(
                        model.classify,
                        images,
                        targets,
                        maps,
                        config.faithfulness_steps,
                        config.faithfulness_baseline,
                        endpoints=endpoints,
                        reference=reference,
                    )
                    for curve, function in CURVES.items()
                }
            except Exception as error:  # noqa: BLE001 (like a failing method: dropped, the others go on)
                result.errors[name] = CurveError(f"{type(error).__name__}: {error}")
                result.errors[name].__cause__ = error
                continue
            result.faithfulness_seconds[name] = device_clock(images.device) - start
            result.curves[name] = curves
            scores = {f"{curve}_auc": curve_area(probabilities).double() for curve, probabilities in curves.items()}
        scores |= {
            metric: values.double()
            for metric, values in localization_scores(
                maps, masks, k=config.top_k, tolerance=config.pointing_tolerance, ties=config.pointing_ties
            ).items()
            if metric in config.metrics
        }
        if config.only_correct:
            # Scored only where the model is right (the poster's protocol): the others count as excluded.
            wrong = predictions != labels
            scores = {metric: values.masked_fill(wrong, float("nan")) for metric, values in scores.items()}
        result.maps[name] = maps
        result.scores[name] = scores
        result.seconds[name] = explained.seconds[name]
    return result


def _curve_endpoints(model: nn.Module, reference: Tensor, logits: Tensor, targets: Tensor):
    """The target's probability on the images (``logits``) and on their baseline image ``reference``: the two ends
    of every method's curves."""
    with torch.no_grad():
        reference_logits = model.classify(reference)
    return tuple(
        values.float().softmax(1).gather(1, targets.view(-1, 1))[:, 0] for values in (logits, reference_logits)
    )


def describe_error(error: BaseException) -> str:
    """``Type: message`` and the last frames of the traceback: what a failure report shows."""
    return f"{type(error).__name__}: {error}\n" + "".join(traceback.format_exception(error)[-3:])
