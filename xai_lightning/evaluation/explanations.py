"""Attributions of a saved run, recomputed through the same pass the callback runs, as tidy per-image tables.

:func:`explain_run` drives :func:`~xai_lightning.scoring.score_batch` over every explained image of a
run's splits and adds what only an evaluation keeps: mean curves, the agreement of every pair of
methods and, on known-answer data, TKO against the planted marker.
"""

from __future__ import annotations

import warnings
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch
from torchvision.transforms.functional import center_crop
from tqdm.auto import tqdm

from xai_lightning.data.cache import ResizedImageCache
from xai_lightning.data.synthetic import shortcut_mask_path, shortcut_settings
from xai_lightning.data.transforms import denormalize, input_normalized
from xai_lightning.errors import ConfigError
from xai_lightning.explain import build_explainers
from xai_lightning.explain.engine import explain_batch
from xai_lightning.metrics import pairwise_agreement, top_k_overlap
from xai_lightning.runs import LoadedRun, Run, as_loaded
from xai_lightning.scoring import BatchScores, ScoringConfig, score_batch, select_images

ID_COLUMNS = ["split", "image_id", "class", "target", "prediction"]


@dataclass
class RunExplanations:
    """What :func:`explain_run` computed on one run, as tidy tables.

    Attributes:
        per_image: (experiment, run, seed, backbone, split, image_id, class, target, prediction,
            method, metric, value): localisation metrics, ``deletion_auc`` / ``insertion_auc``,
            ``seconds`` (the method's wall time per image) and, on known-answer data, ``tko_marker``.
        curves: the mean deletion and insertion curves per split and method (experiment, run, seed,
            split, method, curve, fraction, probability, n_images).
        agreement: top-10 % IoU per image for every pair of methods (experiment, run, seed, split,
            image_id, class, method_a, method_b, iou).
    """

    per_image: pd.DataFrame
    curves: pd.DataFrame
    agreement: pd.DataFrame
    #: ``{image_id: {method: (H, W) map}}`` of the images asked for with ``keep_maps`` (on the host).
    maps: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict)


@dataclass
class _Tables:
    """Columns collected batch by batch and turned into frames once (a frame per batch and metric is slow)."""

    scores: list[dict[str, Any]] = field(default_factory=list)
    agreement: list[dict[str, Any]] = field(default_factory=list)
    # Running sums of each (split, method, curve)'s probabilities: the mean curve without keeping every image's.
    curve_sums: dict[tuple[str, str, str], list] = field(default_factory=dict)
    keep: frozenset[tuple[str, str]] = frozenset()
    maps: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict)

    def add(self, ids: dict[str, np.ndarray], scored: BatchScores, extra: dict[str, dict[str, torch.Tensor]]) -> None:
        n = len(scored)
        for method, scores in scored.scores.items():
            seconds = np.full(n, scored.seconds[method] / n)
            for metric, values in {**scores, "seconds": seconds, **extra.get(method, {})}.items():
                values = values.double().cpu().numpy() if isinstance(values, torch.Tensor) else values
                self.scores.append({**ids, "method": method, "metric": metric, "value": values})
            for curve, probabilities in scored.curves.get(method, {}).items():
                total = self.curve_sums.setdefault((ids["split"][0], method, curve), [0.0, 0])
                total[0] = total[0] + probabilities.double().sum(0).cpu()
                total[1] += n
        for i, key in enumerate(zip(ids["split"], ids["image_id"])):
            if key in self.keep:
                self.maps[key[1]] = {method: maps[i].cpu() for method, maps in scored.maps.items()}
        for (a, b), iou in pairwise_agreement(scored.maps).items():
            columns = {k: ids[k] for k in ("split", "image_id", "class")}
            self.agreement.append({**columns, "method_a": a, "method_b": b, "iou": iou.cpu().numpy()})

    def frames(self, steps: int, labels: dict[str, Any]) -> RunExplanations:
        per_image = _long_frame(self.scores, [*ID_COLUMNS, "method", "metric", "value"])
        agreement = _long_frame(self.agreement, ["split", "image_id", "class", "method_a", "method_b", "iou"])
        curves = _mean_curves(self.curve_sums, steps)
        return RunExplanations(
            per_image=per_image.assign(**labels),
            curves=curves.assign(**{k: v for k, v in labels.items() if k != "backbone"}),
            agreement=agreement.assign(**labels),
            maps=self.maps,
        )


def _long_frame(parts: list[dict[str, Any]], columns: list[str]) -> pd.DataFrame:
    """One frame from parts whose values are per-image arrays or one scalar for the whole part."""
    if not parts:
        return pd.DataFrame(columns=columns)
    lengths = [len(next(v for v in part.values() if isinstance(v, np.ndarray))) for part in parts]
    data = {
        column: np.concatenate(
            [
                part[column] if isinstance(part[column], np.ndarray) else np.full(n, part[column], dtype=object)
                for part, n in zip(parts, lengths)
            ]
        )
        for column in columns
    }
    return pd.DataFrame(data).infer_objects()


def _mean_curves(sums: dict[tuple[str, str, str], list], steps: int) -> pd.DataFrame:
    """Tidy mean curves from the running sums: one row per split, method, curve and point."""
    columns = ["split", "method", "curve", "fraction", "probability", "n_images"]
    rows = [
        {
            "split": split,
            "method": method,
            "curve": curve,
            "fraction": point / steps,
            "probability": float(total[point] / n),
            "n_images": n,
        }
        for (split, method, curve), (total, n) in sums.items()
        for point in range(steps + 1)
    ]
    return pd.DataFrame(rows, columns=columns)


@torch.no_grad()
def explain_run(
    run: Run | LoadedRun,
    methods: dict[str, dict],
    splits: tuple[str, ...] = ("train", "test"),
    checkpoint: str = "best",
    max_images_per_class: int | None = None,
    batch_size: int = 8,
    seed: int | None = None,
    experiment: str | None = None,
    scoring: ScoringConfig | None = None,
    keep_maps: Collection[tuple[str, str]] = (),
    **overrides: Any,
) -> RunExplanations:
    """Per-image scores of every method on the run's checkpoint, recomputed deterministically.

    Explains, with the evaluation transform (no augmentation), the seeded sample of at most
    ``max_images_per_class`` images per class (all by default) and scores the maps exactly as
    ``scoring`` says (default: :func:`~xai_lightning.evaluation.evaluation_scoring` of the run, i.e.
    what its training passes scored; ``overrides`` such as ``faithfulness_steps=0`` change single options).
    On a known-answer synthetic set (``shortcut_fraction`` > 0) it adds ``tko_marker``: TKO against
    the planted marker's mask. ``seed`` (default: the run's) seeds the sample and the stochastic
    methods. The maps of the ``(split, image_id)`` pairs in ``keep_maps`` are
    returned too, for checks that would otherwise explain those images again.
    """
    from xai_lightning.evaluation.settings import evaluation_scoring

    loaded = as_loaded(run, checkpoint)
    overrides["seed"] = seed
    if scoring is None:
        scoring, _ = evaluation_scoring(loaded.run, **overrides)
    elif overrides:
        scoring = scoring.replace(**overrides)
    explainers = build_explainers(methods, loaded.model, scoring.seed)
    tables, markers = _Tables(keep=frozenset(keep_maps)), marker_masks(loaded)
    for split in splits:
        for ids, scored in _scored_batches(loaded, explainers, split, scoring, max_images_per_class, batch_size):
            tables.add(ids, scored, _marker_scores(markers, ids, scored, scoring))
    labels = {
        "experiment": experiment or loaded.run.path.parent.name,
        "run": loaded.run.name,
        "seed": loaded.run.seed,
        "backbone": (loaded.run.config.get("model") or {}).get("backbone"),
    }
    return tables.frames(scoring.faithfulness_steps, labels)


def _scored_batches(loaded: LoadedRun, explainers, split: str, scoring: ScoringConfig, per_class, batch_size):
    """(ids, scores) of each batch of the split's explained images."""
    data, names = loaded.data, loaded.class_names
    frame = data.frame(split)
    positions = select_images(frame, per_class, scoring.include_good, scoring.seed)
    if not positions:
        return
    subset = torch.utils.data.Subset(data.dataset(split), positions)
    loader = torch.utils.data.DataLoader(subset, batch_size=batch_size)
    for batch in tqdm(loader, desc=f"{loaded.run.name} {split}", unit="batch", leave=False):
        scored = score_batch(loaded.model, explainers, batch["image"], batch["mask"][:, 0], batch["label"], scoring)
        report_failures(scored.errors, f"{loaded.run.name} {split}")
        rows = frame.loc[batch["index"].tolist()]
        ids = {
            "split": np.full(len(rows), split, dtype=object),
            "image_id": rows["image_id"].to_numpy(dtype=object),
            "image_path": rows["image_path"].to_numpy(dtype=object),
            **{
                key: np.array([names[i] for i in tensor.tolist()], dtype=object)
                for key, tensor in (
                    ("class", scored.labels),
                    ("target", scored.targets),
                    ("prediction", scored.predictions),
                )
            },
        }
        yield ids, scored


def marker_masks(loaded: LoadedRun) -> ResizedImageCache | None:
    """On known-answer data (``shortcut_fraction`` > 0), a cache that reads the planted markers' masks."""
    data = loaded.data
    if not (data.is_synthetic and shortcut_settings(data.root)):
        return None
    return ResizedImageCache(data.resize_size or data.image_size)


def _marker_scores(markers: ResizedImageCache | None, ids, scored: BatchScores, scoring: ScoringConfig) -> dict:
    """``{method: {"tko_marker": (B,)}}``: TKO against the marker masks, resized exactly like the defect masks."""
    if markers is None:
        return {}
    masks = torch.stack([torch.from_numpy(markers.mask(shortcut_mask_path(p))) > 0 for p in ids["image_path"]])
    masks = center_crop(masks, list(next(iter(scored.maps.values())).shape[-2:]))  # as the transform crops (resize_size)
    return {method: {"tko_marker": top_k_overlap(maps, masks, k=scoring.top_k)} for method, maps in scored.maps.items()}


def report_failures(errors: dict[str, BaseException], where: str) -> None:
    """A configuration error stops the evaluation (it would fail on every batch); anything else is a warning."""
    for display, error in errors.items():
        if isinstance(error, ConfigError):
            raise ConfigError(f"{where}: method '{display}': {error}") from error
        warnings.warn(f"{where}: {display} failed on a batch and is left out of it: {error!r}", stacklevel=2)


def stacked_maps(known_maps: dict | None, image_ids: list[str], methods) -> dict[str, torch.Tensor] | None:
    """``{method: (N, H, W)}`` of ``image_ids`` in order from :func:`explain_run`'s kept maps, or None when
    they do not cover every image and method (the caller then explains them itself)."""
    if not known_maps or not all(i in known_maps and set(methods) <= set(known_maps[i]) for i in image_ids):
        return None
    return {method: torch.stack([known_maps[i][method] for i in image_ids]) for method in methods}


@torch.no_grad()
def example_maps(
    run: Run | LoadedRun,
    methods: dict[str, dict],
    split: str = "test",
    per_class: int = 1,
    seed: int = 0,
    checkpoint: str = "best",
    known_maps: dict[str, dict[str, torch.Tensor]] | None = None,
) -> list[dict]:
    """A few images per class with every method's map (for its label), for the report's heatmap grid.

    ``known_maps`` (image id → method → map, as :func:`explain_run` keeps them) are used where they
    cover every image and method; the others are explained here.
    """
    loaded = as_loaded(run, checkpoint)
    sample = loaded.sample(split, per_class, seed)
    if sample is None:
        return []
    batch, image_ids = sample
    maps = stacked_maps(known_maps, image_ids, methods)
    if maps is None:
        explained = explain_batch(build_explainers(methods, loaded.model, seed), batch["image"], batch["label"])
        report_failures(explained.errors, f"{loaded.run.name} {split} examples")
        maps = explained.maps
    images = denormalize(batch["image"], normalized=input_normalized(loaded.model)).permute(0, 2, 3, 1).numpy()
    return [
        {
            "image": images[i],
            "mask": batch["mask"][i, 0].numpy() > 0,
            "class": loaded.class_names[int(batch["label"][i])],
            "image_id": image_ids[i],
            "maps": {name: m[i].cpu().numpy() for name, m in maps.items()},
        }
        for i in range(len(images))
    ]
