"""Re-score an experiment's runs: model metrics per split, and attributions recomputed per seed.

``python evaluate.py runs/quickstart`` writes into ``runs/quickstart/evaluation/``:
``metrics.csv`` (one row per run, seed, split and model metric) and ``per_image.parquet`` (one row
per run, seed, split, image, method and localisation metric), the tidy shapes pandas aggregates.
"""

from __future__ import annotations

import argparse
import warnings
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch
from tqdm.auto import tqdm

from xai_lightning.callbacks.attribution import select_images
from xai_lightning.checks import CheckSettings, check_run
from xai_lightning.data.cache import ResizedImageCache
from xai_lightning.data.splits import SPLITS
from xai_lightning.data.synthetic import shortcut_mask_path, shortcut_settings
from xai_lightning.data.transforms import denormalize
from xai_lightning.errors import ConfigError
from xai_lightning.explain import build_explainers, explainer_specs, list_explainers
from xai_lightning.explain.engine import explain_batch
from xai_lightning.metrics import (
    curve_area,
    deletion_curve,
    insertion_curve,
    localization_scores,
    pairwise_agreement,
    top_k_overlap,
)
from xai_lightning.reporting.report import build_report
from xai_lightning.runs import Run, find_runs
from xai_lightning.tracking import read_wandb_history


@torch.no_grad()
def evaluate_run(run: Run, splits: tuple[str, ...] = SPLITS, checkpoint: str = "best") -> pd.DataFrame:
    """Metrics of one run's checkpoint on each split, computed with the model's own torchmetrics.

    Evaluation always uses the deterministic transform, also on the train split.
    """
    model = run.load_model(checkpoint).eval()
    data = run.load_datamodule()
    data.setup()
    rows = []
    for split in splits:
        if data.frame(split).empty:
            continue
        metrics = model.make_metrics()
        loader = torch.utils.data.DataLoader(data.dataset(split), batch_size=data.eval_batch_size)
        for batch in loader:
            model.update_metrics(metrics, batch)
        values = metrics.compute()
        per_class = values.pop("class_acc")
        values.update({f"acc/{name}": value for name, value in zip(model.class_names, per_class)})
        rows += [
            {
                "run": run.name,
                "seed": run.seed,
                "split": split,
                "metric": name,
                "value": float(value),
            }
            for name, value in values.items()
        ]
    return pd.DataFrame(rows)


def configured_methods(run: Run) -> dict[str, dict]:
    """``{display name: {"method": registry name, **options}}`` of the run's AttributionCallback."""
    callbacks = (run.config.get("trainer") or {}).get("callbacks") or []
    for callback in callbacks if isinstance(callbacks, list) else [callbacks]:
        if isinstance(callback, dict) and str(callback.get("class_path", "")).endswith("AttributionCallback"):
            return explainer_specs((callback.get("init_args") or {}).get("methods") or {})
    return {}


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


@torch.no_grad()
def explain_run(
    run: Run,
    methods: dict[str, dict],
    splits: tuple[str, ...] = ("train", "test"),
    checkpoint: str = "best",
    max_images_per_class: int | None = None,
    batch_size: int = 8,
    seed: int = 0,
    experiment: str | None = None,
    faithfulness_steps: int = 10,
    faithfulness_baseline: str = "blur",
) -> RunExplanations:
    """Per-image scores of every method on the run's checkpoint, recomputed deterministically.

    Explains the ground-truth class with the evaluation transform (no augmentation), on the images
    with a defect mask (at most ``max_images_per_class`` per class, seeded). Metrics: the localisation
    metrics against the defect mask; ``deletion_auc`` / ``insertion_auc`` (``faithfulness_steps``
    steps, 0 to skip) and their mean curves; the cost of each method; the agreement of every pair
    of methods; and on a known-answer synthetic set (``shortcut_fraction`` > 0), ``tko_marker``:
    TKO against the planted marker's mask.
    """
    model = run.load_model(checkpoint).eval()
    data = run.load_datamodule()
    data.setup()
    explainers = build_explainers(methods, model, seed)
    # Known-answer data: the marker masks, resized exactly like the defect masks.
    markers = ResizedImageCache(data.image_size) if data.is_synthetic and shortcut_settings(data.root) else None
    frames, agreement = [], []
    # Running sums of each (split, method, curve)'s probabilities: the mean curve without keeping every image's.
    curve_sums: dict[tuple[str, str, str], list] = {}
    for split in splits:
        frame = data.frame(split)
        positions = select_images(frame, max_images_per_class, seed=seed)
        if not positions:
            continue
        subset = torch.utils.data.Subset(data.dataset(split), positions)
        loader = torch.utils.data.DataLoader(subset, batch_size=batch_size)
        for batch in tqdm(loader, desc=f"{run.name} {split}", unit="batch", leave=False):
            images, labels = batch["image"], batch["label"]
            masks = batch["mask"][:, 0] > 0
            rows = frame.loc[batch["index"].tolist()]
            ids = pd.DataFrame(
                {
                    "split": split,
                    "image_id": rows["image_id"].tolist(),
                    "class": [model.class_names[i] for i in labels.tolist()],
                    "prediction": [model.class_names[i] for i in model.classify(images).argmax(1).tolist()],
                }
            )
            explained = explain_batch(explainers, images, labels)
            _report_failures(explained, f"{run.name} {split}")
            marker_masks = None
            if markers is not None:
                marker_masks = torch.stack(
                    [torch.from_numpy(markers.mask(shortcut_mask_path(p))) > 0 for p in rows["image_path"]]
                )
            for display, maps in explained.maps.items():
                scores = localization_scores(maps, masks)
                scores["seconds"] = torch.full((len(images),), explained.seconds[display] / len(images))
                if marker_masks is not None:
                    scores["tko_marker"] = top_k_overlap(maps, marker_masks)
                if faithfulness_steps:
                    for name, curve in (
                        ("deletion", deletion_curve),
                        ("insertion", insertion_curve),
                    ):
                        probabilities = curve(
                            model.classify,
                            images,
                            labels,
                            maps,
                            faithfulness_steps,
                            faithfulness_baseline,
                        )
                        scores[f"{name}_auc"] = curve_area(probabilities)
                        total = curve_sums.setdefault((split, display, name), [0.0, 0])
                        total[0] = total[0] + probabilities.double().sum(0).cpu()
                        total[1] += len(images)
                for metric, values in scores.items():
                    frames.append(
                        ids.assign(
                            method=display,
                            metric=metric,
                            value=values.double().cpu().numpy(),
                        )
                    )
            for (a, b), iou in pairwise_agreement(explained.maps).items():
                agreement.append(
                    ids[["split", "image_id", "class"]].assign(method_a=a, method_b=b, iou=iou.cpu().numpy())
                )
    labels_ = {
        "experiment": experiment or run.path.parent.name,
        "run": run.name,
        "seed": run.seed,
        "backbone": _backbone(run),
    }
    per_image = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    if len(per_image):
        per_image = per_image.assign(target=per_image["class"])
    return RunExplanations(
        per_image=per_image.assign(**labels_),
        curves=_mean_curves(curve_sums, faithfulness_steps).assign(**labels_).drop(columns="backbone"),
        agreement=(pd.concat(agreement, ignore_index=True) if agreement else pd.DataFrame()).assign(**labels_),
    )


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


def _report_failures(explained, where: str) -> None:
    """A configuration error stops the evaluation (it would fail on every batch); anything else is a warning."""
    for display, error in explained.errors.items():
        if isinstance(error, ConfigError):
            raise ConfigError(f"{where}: method '{display}': {error}") from error
        warnings.warn(
            f"{where}: {display} failed on a batch and is left out of it: {error!r}",
            stacklevel=2,
        )


CURVE_KEYS = ("val/loss", "val/acc", "val/balanced_acc")


def training_curves(run: Run, experiment: str) -> pd.DataFrame:
    """Per-epoch validation curves of a run (model metrics and overall TKO), read from its W&B files."""
    rows = []
    for wandb_dir in sorted((run.path / "wandb").glob("*run-*")):
        history = read_wandb_history(wandb_dir, wait=0)
        if "epoch" not in history.columns:
            continue
        keys = [k for k in history.columns if k in CURVE_KEYS or (k.startswith("xai/val/tko/") and k.count("/") == 3)]
        long = history[["epoch", *keys]].melt(id_vars="epoch", var_name="key", value_name="value").dropna()
        rows.append(long)
    if not rows:
        return pd.DataFrame(columns=["experiment", "seed", "epoch", "key", "value"])
    curves = pd.concat(rows, ignore_index=True).drop_duplicates(["epoch", "key"], keep="last")
    return curves.assign(experiment=experiment, seed=run.seed)


@torch.no_grad()
def example_maps(
    run: Run,
    methods: dict[str, dict],
    split: str = "test",
    per_class: int = 1,
    seed: int = 0,
) -> list[dict]:
    """A few images per class with every method's map, for the report's heatmap grid."""
    model = run.load_model().eval()
    data = run.load_datamodule()
    data.setup()
    frame = data.frame(split)
    positions = select_images(frame, per_class, seed=seed)
    if not positions:
        return []
    batch = next(
        iter(
            torch.utils.data.DataLoader(
                torch.utils.data.Subset(data.dataset(split), positions),
                batch_size=len(positions),
            )
        )
    )
    explainers = build_explainers(methods, model, seed)
    explained = explain_batch(explainers, batch["image"], batch["label"])
    _report_failures(explained, f"{run.name} {split} examples")
    maps = explained.maps
    images = denormalize(batch["image"]).permute(0, 2, 3, 1).numpy()
    return [
        {
            "image": images[i],
            "mask": batch["mask"][i, 0].numpy() > 0,
            "class": model.class_names[int(batch["label"][i])],
            "image_id": frame.loc[int(batch["index"][i]), "image_id"],
            "maps": {name: m[i].cpu().numpy() for name, m in maps.items()},
        }
        for i in range(len(images))
    ]


def main(argv: list[str] | None = None) -> pd.DataFrame:
    parser = argparse.ArgumentParser(description="Evaluate the runs of one or more experiments and write a report.")
    parser.add_argument(
        "experiment_dirs",
        type=Path,
        nargs="+",
        help="experiment folder(s) (or single run folders)",
    )
    parser.add_argument("--checkpoint", choices=["best", "last"], default="best")
    parser.add_argument("--splits", nargs="+", choices=SPLITS, default=list(SPLITS))
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="output folder (default: <first experiment>/evaluation)",
    )
    parser.add_argument(
        "--methods",
        nargs="*",
        default=None,
        help="attribution methods to recompute (default: those each run's AttributionCallback used); none: skip",
    )
    parser.add_argument("--xai-splits", nargs="+", choices=SPLITS, default=["train", "test"])
    parser.add_argument(
        "--max-images-per-class",
        type=int,
        default=None,
        help="default: every image with a mask",
    )
    parser.add_argument(
        "--faithfulness-steps",
        type=int,
        default=10,
        help="deletion / insertion curve steps per image and method (0: skip these curves)",
    )
    parser.add_argument("--faithfulness-baseline", choices=["blur", "mean"], default="blur")
    checks = parser.add_argument_group(
        "checks", "robustness, randomisation and stability, on a fixed sample of --check-split (they cost many passes)"
    )
    checks.add_argument(
        "--check-images-per-class", type=int, default=2, help="defect images per class in the check set (0: no checks)"
    )
    checks.add_argument("--check-split", choices=SPLITS, default=None, help="default: the last of --xai-splits")
    checks.add_argument(
        "--robustness-samples",
        type=int,
        default=5,
        help="perturbations per image for infidelity and max-sensitivity (0: skip them)",
    )
    checks.add_argument(
        "--randomization",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="cascading model-parameter randomisation (sanity check)",
    )
    checks.add_argument(
        "--stability-runs", type=int, default=5, help="seeded runs per stochastic method (below 2: skip stability)"
    )
    parser.add_argument("--bootstrap", type=int, default=10000, help="bootstrap resamples for the CIs")
    parser.add_argument(
        "--no-wandb",
        action="store_true",
        help="do not log the report as a W&B summary run",
    )
    args = parser.parse_args(argv)
    try:
        settings = CheckSettings(
            images_per_class=args.check_images_per_class,
            robustness_samples=args.robustness_samples,
            randomization=args.randomization,
            stability_runs=args.stability_runs,
        )
    except ValueError as error:
        raise ConfigError(
            f"evaluate.py: {error} (options --check-images-per-class, --robustness-samples, --stability-runs)"
        ) from error
    if args.faithfulness_steps < 0:
        raise ConfigError(f"--faithfulness-steps is {args.faithfulness_steps}; use 0 (skip) or more.")
    check_split = args.check_split or args.xai_splits[-1]

    experiments = {directory: find_runs(directory) for directory in args.experiment_dirs}
    out = args.out or args.experiment_dirs[0] / "evaluation"
    out.mkdir(parents=True, exist_ok=True)
    model_tables, curves, examples = [], [], []
    tables: dict[str, list[pd.DataFrame]] = {name: [] for name in TABLE_FILES}
    for directory, runs in experiments.items():
        name = directory.name
        for run in tqdm(runs, desc=f"evaluating {name}", unit="run"):
            model_tables.append(evaluate_run(run, tuple(args.splits), args.checkpoint).assign(experiment=name))
            curves.append(training_curves(run, name))
            methods = _methods_for(run, args.methods)
            if not methods:
                continue
            explained = explain_run(
                run,
                methods,
                tuple(args.xai_splits),
                args.checkpoint,
                args.max_images_per_class,
                experiment=name,
                faithfulness_steps=args.faithfulness_steps,
                faithfulness_baseline=args.faithfulness_baseline,
            )
            checked = check_run(run, methods, check_split, settings, args.checkpoint, experiment=name)
            tables["per_image"] += [explained.per_image, checked.per_image.assign(backbone=_backbone(run))]
            tables["faithfulness_curves"].append(explained.curves)
            tables["agreement"].append(explained.agreement)
            tables["randomization"].append(checked.randomization)
            tables["stability"].append(checked.stability)
            if not examples:
                examples = example_maps(run, methods, split=args.xai_splits[-1])
    table = pd.concat(model_tables, ignore_index=True)
    table.to_csv(out / "metrics.csv", index=False)
    written = {name: _write(frames, out / TABLE_FILES[name]) for name, frames in tables.items()}
    curves_table = pd.concat(curves, ignore_index=True)
    curves_table.to_csv(out / "curves.csv", index=False)

    first_run = next(iter(experiments.values()))[0]
    synthetic = first_run.load_datamodule().is_synthetic
    notes = [f"Runs: {', '.join(f'{d} ({len(r)} seeds)' for d, r in experiments.items())}."]
    if synthetic:
        notes.append("Data: SYNTHETIC hazelnut-like images (xai_lightning.data.synthetic), not MVTec AD.")
    report = build_report(
        out,
        table,
        written["per_image"],
        curves_table,
        examples,
        title=f"Evaluation of {', '.join(e.name for e in experiments)}",
        notes=notes,
        n_boot=args.bootstrap,
        faithfulness_curves=written["faithfulness_curves"],
        randomization=written["randomization"],
        stability=written["stability"],
        agreement=written["agreement"],
    )
    summary = table[table["metric"].isin(["loss", "acc", "balanced_acc", "seg_iou"])]
    print(
        summary.pivot_table(index=["experiment", "run", "split"], columns="metric", values="value").round(4).to_string()
    )
    print("\n".join(report.sentences[:10]))
    print(f"\nReport: {report.path}")
    if not args.no_wandb:
        log_report_to_wandb(report, first_run, name=f"{'+'.join(e.name for e in experiments)}-summary")
    return table


#: Where each tidy table of the attribution evaluation is written, relative to the output folder.
TABLE_FILES = {
    "per_image": "per_image.parquet",
    "faithfulness_curves": "faithfulness_curves.csv",
    "agreement": "agreement.parquet",
    "randomization": "randomization.csv",
    "stability": "stability.csv",
}


def _write(frames: list[pd.DataFrame], path: Path) -> pd.DataFrame | None:
    """Concatenate one table's per-run parts and write it (CSV or Parquet by suffix); None when empty."""
    frames = [frame for frame in frames if len(frame)]
    if not frames:
        return None
    table = pd.concat(frames, ignore_index=True)
    if path.suffix == ".parquet":
        table.to_parquet(path, index=False)
    else:
        table.to_csv(path, index=False)
    return table


def _backbone(run: Run) -> str | None:
    """The run's backbone name, from its saved config (the column that compares architectures)."""
    return (run.config.get("model") or {}).get("backbone")


def log_report_to_wandb(report, run: Run, name: str) -> None:
    """Log the report's tables and figures as one W&B run (job type ``summary``) in the runs' group."""
    import os

    import wandb

    from xai_lightning.tracking import resolve_wandb_mode

    logger = (run.config.get("trainer") or {}).get("logger") or {}
    init_args = logger.get("init_args", {}) if isinstance(logger, dict) else {}
    experiment = wandb.init(
        project=init_args.get("project") or "xai-lightning",
        entity=init_args.get("entity"),
        group=init_args.get("group"),
        name=name,
        job_type="summary",
        dir=str(report.path.parent),
        mode=os.environ.get("WANDB_MODE") or resolve_wandb_mode(),
        reinit="finish_previous",
    )
    payload = {f"report/{key}": wandb.Table(dataframe=frame.astype(str)) for key, frame in report.tables.items()}
    payload.update({f"report/{key}": wandb.Image(str(path)) for key, path in report.figures.items() if path})
    experiment.log(payload)
    experiment.save(str(report.path), base_path=str(report.path.parent), policy="now")
    experiment.finish()
    print(f"W&B summary run: {experiment.dir}")


def _methods_for(run: Run, requested: list[str] | None) -> dict[str, dict]:
    configured = configured_methods(run)
    if requested is None:
        return configured
    known = set(list_explainers()) | set(configured)
    unknown = [name for name in requested if name not in known]
    if unknown:
        raise ConfigError(
            f"--methods {' '.join(unknown)}: not a method of run '{run.path}' ({', '.join(configured) or 'none'}) "
            f"nor a registered explainer ({', '.join(list_explainers())})."
        )
    return {name: configured.get(name, {"method": name}) for name in requested}
