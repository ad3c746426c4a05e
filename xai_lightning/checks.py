"""Does the explanation tell the truth? The per-run checks ``evaluate.py`` runs on a small fixed image set.

Localisation scores say where a map points; these say whether the model really uses that region and
whether the map depends on the model at all (docs/metrics.md, "Faithfulness, robustness and sanity"):

- robustness: infidelity and max-sensitivity of every method (``captum.metrics``);
- sanity: cascading model-parameter randomisation, Spearman correlation with the intact model's maps;
- stability: the stochastic methods explained R times with different seeds.

They cost many explanations per image (a randomisation step re-explains everything, max-sensitivity
explains every perturbation), so they run on a seeded sample of a few images per class rather than
on every image; the deletion/insertion curves, which are cheap, run on all images in
:func:`xai_lightning.evaluation.explain_run`.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import partial

import pandas as pd
import torch
from torch import Tensor

from xai_lightning.evaluation.explanations import stacked_maps
from xai_lightning.explain import Explainer, build_explainers
from xai_lightning.explain.engine import BatchExplanation, explain_batch
from xai_lightning.metrics import (
    cascading_randomization,
    infidelity_score,
    max_sensitivity_score,
    stability,
)
from xai_lightning.runs import LoadedRun, Run, as_loaded


@dataclass
class CheckSettings:
    """How much of each check to run; a count of 0 (or 1 stability run) switches that check off.

    Attributes:
        images_per_class: defect images per class in the check set (seeded sample); 0: no checks.
        robustness_samples: perturbations per image for infidelity and max-sensitivity.
        noise_std: infidelity's Gaussian noise, in normalised-image units.
        perturb_radius: max-sensitivity's L∞ radius, in normalised-image units.
        randomization: run the cascading randomisation check.
        stability_runs: explanations with different seeds per stochastic method.
        batch_size: images explained together.
    """

    images_per_class: int = 2
    robustness_samples: int = 5
    noise_std: float = 0.1
    perturb_radius: float = 0.02
    randomization: bool = True
    stability_runs: int = 5
    batch_size: int = 8

    def __post_init__(self) -> None:
        for name in ("images_per_class", "robustness_samples", "stability_runs"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} is {getattr(self, name)}; use 0 or more (0 switches the check off).")
        if self.batch_size < 1:
            raise ValueError(f"batch_size is {self.batch_size}; use 1 or more.")


@dataclass
class RunChecks:
    """What :func:`check_run` found on one run, as tidy tables (empty when a check was off).

    Attributes:
        per_image: rows in the per-image table's shape (``metric`` = ``infidelity`` or ``max_sensitivity``).
        randomization: one row per method × randomisation step × image (``spearman``).
        stability: one row per stochastic method × image (``spearman``, ``iou``, ``runs``).
    """

    per_image: pd.DataFrame = field(default_factory=pd.DataFrame)
    randomization: pd.DataFrame = field(default_factory=pd.DataFrame)
    stability: pd.DataFrame = field(default_factory=pd.DataFrame)


def check_run(
    run: Run | LoadedRun,
    methods: dict[str, dict],
    split: str = "test",
    settings: CheckSettings | None = None,
    checkpoint: str = "best",
    seed: int = 0,
    experiment: str | None = None,
    known_maps: Mapping[str, Mapping[str, Tensor]] | None = None,
) -> RunChecks:
    """Robustness, randomisation and stability of every method on a fixed sample of the run's ``split``.

    The images are a seeded sample of ``settings.images_per_class`` defect images per class, the
    same for every seed of an experiment, explained for their ground-truth class. A method that fails
    a check is left out of that check with a warning; the other methods and checks go on.

    ``known_maps`` (image id → method → (H, W) map, for the ground-truth class with this ``seed``)
    are maps an evaluation computed already; when they cover the check set, the intact model's
    maps are not computed again (robustness, randomisation step 0, the first stability run).
    """
    settings = settings or CheckSettings()
    if settings.images_per_class == 0:
        return RunChecks()
    loaded = as_loaded(run, checkpoint)
    sample = loaded.sample(split, settings.images_per_class, seed)
    if sample is None:
        return RunChecks()
    batch, image_ids = sample
    labels = batch["label"]
    checks = _CheckSet(
        model=loaded.model,
        methods=methods,
        explainers=build_explainers(methods, loaded.model, seed),
        images=batch["image"],
        labels=labels,
        ids=pd.DataFrame(
            {
                "image": range(len(image_ids)),
                "image_id": image_ids,
                "class": [loaded.class_names[i] for i in labels.tolist()],
            }
        ),
        settings=settings,
        seed=seed,
        where=f"{loaded.run.name} {split} checks",
        known=stacked_maps(known_maps, image_ids, methods),
    )
    tables = RunChecks()
    if settings.robustness_samples:
        tables.per_image = _robustness(checks)
    if settings.randomization:
        tables.randomization = _randomization(checks)
    if settings.stability_runs > 1:
        tables.stability = _stability(checks)
    labels_ = {
        "experiment": experiment or loaded.run.path.parent.name,
        "run": loaded.run.name,
        "seed": loaded.run.seed,
        "split": split,
    }
    for name in ("per_image", "randomization", "stability"):
        table = getattr(tables, name)
        if len(table):
            setattr(tables, name, table.assign(**labels_))
    return tables


@dataclass
class _CheckSet:
    """The check images of one run, with everything each check needs about them."""

    model: torch.nn.Module
    methods: dict[str, dict]
    explainers: dict[str, Explainer]
    images: Tensor
    labels: Tensor
    ids: pd.DataFrame
    settings: CheckSettings
    seed: int
    where: str
    #: ``{method: (N, H, W)}`` maps of the intact model, when an evaluation computed them already.
    known: dict[str, Tensor] | None


def _robustness(checks: _CheckSet) -> pd.DataFrame:
    """Infidelity and max-sensitivity of each method, in the per-image table's long shape."""
    settings, model, rows = checks.settings, checks.model, []
    for start in range(0, len(checks.images), settings.batch_size):
        chunk = slice(start, start + settings.batch_size)
        x, y = checks.images[chunk], checks.labels[chunk]
        if checks.known is not None:
            explained = BatchExplanation(maps={name: maps[chunk] for name, maps in checks.known.items()})
        else:
            explained = explain_batch(checks.explainers, x, y)
        for display, error in explained.errors.items():
            warnings.warn(
                f"{checks.where}: {display} failed and is left out of the robustness check: {error!r}", stacklevel=2
            )
        for display, maps in explained.maps.items():
            metrics = {
                "infidelity": partial(
                    infidelity_score, model.classify, x, y, maps, settings.noise_std, settings.robustness_samples
                ),
                "max_sensitivity": partial(
                    max_sensitivity_score,
                    checks.explainers[display],
                    x,
                    y,
                    settings.perturb_radius,
                    settings.robustness_samples,
                ),
            }
            for metric, score in metrics.items():
                try:
                    values = score(seed=checks.seed)
                except Exception as error:  # noqa: BLE001 (one method's failure must not stop the others)
                    warnings.warn(f"{checks.where}: {metric} of {display} failed: {error!r}", stacklevel=2)
                    continue
                # The per-image table's long shape, as explain_run writes it (target = the class explained).
                scored = checks.ids.iloc[chunk][["image_id", "class"]]
                rows.append(
                    scored.assign(
                        target=scored["class"], method=display, metric=metric, value=values.double().cpu().numpy()
                    )
                )
    return pd.concat(rows, ignore_index=True) if rows else pd.DataFrame()


def _randomization(checks: _CheckSet) -> pd.DataFrame:
    """Cascading randomisation of every method; a method that fails is retried alone, then left out."""
    run = partial(
        cascading_randomization,
        checks.model,
        images=checks.images,
        targets=checks.labels,
        seed=checks.seed,
        intact=checks.known,
    )
    try:
        table = run(checks.methods)
    except Exception as error:  # noqa: BLE001
        # One failing method fails the joint call; run the methods one by one so only it is lost.
        warnings.warn(
            f"{checks.where}: randomisation of all methods together failed ({error!r}); retrying one by one",
            stacklevel=2,
        )
        parts = []
        for display, spec in checks.methods.items():
            try:
                parts.append(run({display: spec}))
            except Exception as single:  # noqa: BLE001
                warnings.warn(
                    f"{checks.where}: {display} is left out of the randomisation check: {single!r}", stacklevel=2
                )
        if not parts:
            return pd.DataFrame()
        table = pd.concat(parts, ignore_index=True)
    return table.merge(checks.ids, on="image").drop(columns="image")


def _stability(checks: _CheckSet) -> pd.DataFrame:
    """Run-to-run stability of the stochastic methods (deterministic ones are 1 by construction)."""
    seeds = [checks.seed + r for r in range(checks.settings.stability_runs)]
    parts = []
    for display, explainer in checks.explainers.items():
        if not explainer.stochastic:
            continue
        try:
            first = None if checks.known is None else checks.known[display]
            table = stability(
                checks.methods[display], checks.model, checks.images, checks.labels, seeds=seeds, first=first
            )
        except Exception as error:  # noqa: BLE001
            warnings.warn(f"{checks.where}: {display} is left out of the stability check: {error!r}", stacklevel=2)
            continue
        parts.append(table.assign(method=display).merge(checks.ids, on="image").drop(columns="image"))
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()
