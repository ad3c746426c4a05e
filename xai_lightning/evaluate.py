"""Re-score an experiment's runs: model metrics per split, and attributions recomputed per seed.

``python evaluate.py runs/quickstart`` writes into ``runs/quickstart/evaluation/``:
``metrics.csv`` (one row per run, seed, split and model metric) and ``per_image.parquet`` (one row
per run, seed, split, image, method and localisation metric), the tidy shapes pandas aggregates.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd
import torch

from tqdm.auto import tqdm

from xai_lightning.callbacks.attribution import select_images
from xai_lightning.data.splits import SPLITS
from xai_lightning.errors import ConfigError
from xai_lightning.explain import create_explainer, list_explainers
from xai_lightning.metrics import localization_scores
from xai_lightning.runs import Run, find_runs


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
            {"run": run.name, "seed": run.seed, "split": split, "metric": name, "value": float(value)}
            for name, value in values.items()
        ]
    return pd.DataFrame(rows)


def configured_methods(run: Run) -> dict[str, dict]:
    """``{display name: {"method": registry name, **options}}`` of the run's AttributionCallback."""
    callbacks = (run.config.get("trainer") or {}).get("callbacks") or []
    for callback in callbacks if isinstance(callbacks, list) else [callbacks]:
        if isinstance(callback, dict) and str(callback.get("class_path", "")).endswith("AttributionCallback"):
            methods = (callback.get("init_args") or {}).get("methods") or {}
            if isinstance(methods, list):
                methods = {name: {} for name in methods}
            return {name: {"method": name, **(options or {})} for name, options in methods.items()}
    return {}


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
) -> pd.DataFrame:
    """Per-image localisation scores of every method on the run's checkpoint, recomputed deterministically.

    Explains the ground-truth class with the evaluation transform (no augmentation), on the images
    with a defect mask (at most ``max_images_per_class`` per class, seeded). Returns the long table
    (experiment, run, seed, split, image_id, class, target, prediction, method, metric, value).
    """
    model = run.load_model(checkpoint).eval()
    data = run.load_datamodule()
    data.setup()
    explainers = {}
    for display, spec in methods.items():
        options = dict(spec)
        explainers[display] = create_explainer(options.pop("method", display), model, seed=seed, **options)
    frames = []
    for split in splits:
        frame = data.frame(split)
        positions = select_images(frame, max_images_per_class, seed=seed)
        if not positions:
            continue
        subset = torch.utils.data.Subset(data.dataset(split), positions)
        loader = torch.utils.data.DataLoader(subset, batch_size=batch_size)
        for batch in tqdm(loader, desc=f"{run.name} {split}", unit="batch", leave=False):
            masks = batch["mask"][:, 0] > 0
            predictions = model.classify(batch["image"]).argmax(1)
            ids = frame.loc[batch["index"].tolist(), "image_id"].tolist()
            classes = [model.class_names[i] for i in batch["label"].tolist()]
            for display, explainer in explainers.items():
                maps = explainer.explain(batch["image"], batch["label"])
                for metric, values in localization_scores(maps, masks).items():
                    frames.append(
                        pd.DataFrame(
                            {
                                "image_id": ids,
                                "class": classes,
                                "target": classes,
                                "prediction": [model.class_names[i] for i in predictions.tolist()],
                                "method": display,
                                "metric": metric,
                                "value": values.double().cpu().numpy(),
                                "split": split,
                            }
                        )
                    )
    table = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    return table.assign(experiment=experiment or run.path.parent.name, run=run.name, seed=run.seed)


def main(argv: list[str] | None = None) -> pd.DataFrame:
    parser = argparse.ArgumentParser(description="Re-score the checkpoints of an experiment's runs.")
    parser.add_argument("experiment_dir", type=Path, help="experiment folder (or a single run folder)")
    parser.add_argument("--checkpoint", choices=["best", "last"], default="best")
    parser.add_argument("--splits", nargs="+", choices=SPLITS, default=list(SPLITS))
    parser.add_argument("--out", type=Path, default=None, help="output folder (default: <experiment_dir>/evaluation)")
    parser.add_argument(
        "--methods", nargs="*", default=None,
        help="attribution methods to recompute (default: those each run's AttributionCallback used); none: skip",
    )
    parser.add_argument("--xai-splits", nargs="+", choices=SPLITS, default=["train", "test"])
    parser.add_argument("--max-images-per-class", type=int, default=None, help="default: every image with a mask")
    args = parser.parse_args(argv)

    runs = find_runs(args.experiment_dir)
    table = pd.concat([evaluate_run(run, tuple(args.splits), args.checkpoint) for run in runs], ignore_index=True)
    out = args.out or args.experiment_dir / "evaluation"
    out.mkdir(parents=True, exist_ok=True)
    table.to_csv(out / "metrics.csv", index=False)
    per_image = []
    for run in tqdm(runs, desc="attributions", unit="run"):
        methods = _methods_for(run, args.methods)
        if methods:
            per_image.append(
                explain_run(run, methods, tuple(args.xai_splits), args.checkpoint, args.max_images_per_class)
            )
    if per_image:
        pd.concat(per_image, ignore_index=True).to_parquet(out / "per_image.parquet", index=False)
        print(f"Per-image attribution scores: {out / 'per_image.parquet'}")
    summary = table[table["metric"].isin(["loss", "loss_ce", "loss_bce", "acc", "balanced_acc", "seg_iou"])]
    print(summary.pivot_table(index=["run", "split"], columns="metric", values="value").round(4).to_string())
    print(f"\nPer-run metrics: {out / 'metrics.csv'}")
    return table


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
