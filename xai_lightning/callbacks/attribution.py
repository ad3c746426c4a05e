"""AttributionCallback: while a model trains, score attribution maps against the defect masks.

Every N validation epochs (and on test) it explains a fixed, seeded set of images with each
configured method, scores the maps (Top-K overlap, win-rate, pointing game, …) with DDP-synced
torchmetrics, logs scalars, heatmaps and a per-image table, and keeps a history that survives resume.
"""

from __future__ import annotations

import math
import traceback
import warnings
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import pytorch_lightning as pl
import torch
from pytorch_lightning.loggers import WandbLogger
from pytorch_lightning.utilities import rank_zero_info, rank_zero_warn
from torch.utils.data import DataLoader, Subset
from tqdm.auto import tqdm

from xai_lightning.data.mvtec import has_mask
from xai_lightning.data.transforms import denormalize
from xai_lightning.errors import ConfigError
from xai_lightning.explain.base import Explainer, build_explainers, eval_mode, explainer_specs
from xai_lightning.explain.engine import device_clock, explain_batch
from xai_lightning.metrics import LOCALIZATION_METRICS, LocalizationMetric, WinRate, localization_scores
from xai_lightning.metrics.faithfulness import CURVE_BASELINES, curve_area, deletion_curve, insertion_curve
from xai_lightning.reporting.heatmaps import heatmap_strip, tiled_mask

#: Methods explained when the config names none: cheap gradient methods plus the two references.
DEFAULT_METHODS: dict[str, dict[str, Any]] = {
    "gradcam": {},
    "saliency": {},
    "integrated_gradients": {"n_steps": 16},
    "segmentation_head": {},
    "random": {},
}

Split = Literal["train", "val", "test"]

#: Per-image faithfulness areas tracked when ``faithfulness_steps`` > 0 (deletion: lower is better).
FAITHFULNESS_METRICS = ("deletion_auc", "insertion_auc")


@dataclass
class PassResult:
    """What one attribution pass produced (also what rank zero prints, logs and saves)."""

    split: str
    epoch: int
    step: int
    scalars: dict[str, float]
    per_image: pd.DataFrame
    failed: dict[str, str] = field(default_factory=dict)
    seconds_per_image: dict[str, float] = field(default_factory=dict)
    #: Wall time of the deletion / insertion curves per image, per method (empty when they are off).
    faithfulness_seconds_per_image: dict[str, float] = field(default_factory=dict)


class AttributionCallback(pl.Callback):
    """Explain a fixed image set during training and score the maps against the ground-truth masks.

    Args:
        methods: explainer names, or ``{display_name: options}``; options may carry ``method`` to use
            one registry entry twice (``{ig_64: {method: integrated_gradients, n_steps: 64}}``).
        every_n_epochs: run after every N-th validation epoch (always skipped in the sanity check).
        splits: splits explained at those validation passes (``val``, and ``train`` on request);
            the ``test`` split is explained whenever ``trainer.test`` runs.
        on_train_end: run once more at the end of training if the last epoch had no pass.
        max_images_per_class: a seeded sample of at most this many images per class (None: all).
        include_good: also explain images with an empty mask; they take no part in the localisation
            metrics and are counted in ``n_excluded``.
        target: explain the ground-truth class (``label``) or the model's prediction (``prediction``).
        seed: seeds the image sample and stochastic methods.
        batch_size: images per attribution batch.
        top_k: K of Top-K overlap: None for K = |mask|, a fraction of H·W, or a pixel count.
        pointing_tolerance: pointing-game tolerance in pixels (TorchRay uses 15 at 224²).
        pointing_ties: how tied maxima score: ``expected`` = their share inside the mask (TKO's tie
            rule at K = 1, so a constant map scores chance), ``any`` = a hit if any of them is inside.
        log_images: how many images get a heatmap panel per pass (one W&B image each, all methods side by side).
        output_dir: where per-image CSVs go (default ``<run dir>/xai``).
        faithfulness_steps: when > 0, also score each map against the model itself: deletion and
            insertion curves (:func:`~xai_lightning.metrics.deletion_curve`) of the explained target's
            probability with this many steps, logged as their areas ``deletion_auc`` (lower is
            better) and ``insertion_auc`` (higher is better). Each image costs
            ``2 · (steps + 1)`` extra forward passes per method, hence off (0) by default. The areas
            need no mask: with ``include_good`` the empty-mask images count in them too.
        faithfulness_baseline: what removed pixels are replaced with: ``blur`` (a blurred copy of the
            image) or ``mean`` (the dataset-mean image).
    """

    def __init__(
        self,
        methods: list[str] | dict[str, dict[str, Any]] | None = None,
        every_n_epochs: int = 1,
        splits: list[Split] = ["val"],  # noqa: B006 (jsonargparse needs a literal default)
        on_train_end: bool = True,
        max_images_per_class: int | None = 8,
        include_good: bool = False,
        target: Literal["label", "prediction"] = "label",
        seed: int = 0,
        batch_size: int = 8,
        top_k: int | float | None = None,
        pointing_tolerance: int = 0,
        pointing_ties: Literal["expected", "any"] = "expected",
        log_images: int = 8,
        output_dir: str | None = None,
        faithfulness_steps: int = 0,
        faithfulness_baseline: Literal["blur", "mean"] = "blur",
    ) -> None:
        super().__init__()
        self.methods = explainer_specs(methods if methods is not None else DEFAULT_METHODS)
        if not self.methods:
            raise ConfigError("`AttributionCallback.methods` is empty; name at least one explainer.")
        if every_n_epochs < 1:
            raise ConfigError(f"`AttributionCallback.every_n_epochs` is {every_n_epochs}; use 1 or more.")
        bad = [s for s in splits if s not in ("train", "val")]
        if bad:
            raise ConfigError(
                f"`AttributionCallback.splits` has {bad}; validation passes explain 'train' and/or 'val' "
                "(the test split is explained when trainer.test runs)."
            )
        if target not in ("label", "prediction"):
            raise ConfigError(f"`AttributionCallback.target` is '{target}'; use 'label' or 'prediction'.")
        if max_images_per_class is not None and max_images_per_class < 1:
            raise ConfigError("`AttributionCallback.max_images_per_class` must be >= 1 or null (all images).")
        _check_top_k(top_k)
        for option, value in (("batch_size", batch_size), ("every_n_epochs", every_n_epochs)):
            if value < 1:
                raise ConfigError(f"`AttributionCallback.{option}` is {value}; use 1 or more.")
        for option, value in (("pointing_tolerance", pointing_tolerance), ("log_images", log_images)):
            if value < 0:
                raise ConfigError(f"`AttributionCallback.{option}` is {value}; use 0 or more.")
        if pointing_ties not in ("expected", "any"):
            raise ConfigError(f"`AttributionCallback.pointing_ties` is '{pointing_ties}'; use 'expected' or 'any'.")
        if isinstance(faithfulness_steps, bool) or not isinstance(faithfulness_steps, int) or faithfulness_steps < 0:
            raise ConfigError(
                f"`AttributionCallback.faithfulness_steps` is {faithfulness_steps!r}; use 0 (off) or more."
            )
        if faithfulness_baseline not in CURVE_BASELINES:
            raise ConfigError(
                f"`AttributionCallback.faithfulness_baseline` is '{faithfulness_baseline}'; use 'blur' or 'mean'."
            )
        self.every_n_epochs = every_n_epochs
        self.splits = list(splits)
        self.run_on_train_end = on_train_end
        self.max_images_per_class = max_images_per_class
        self.include_good = include_good
        self.target = target
        self.seed = seed
        self.batch_size = batch_size
        self.top_k = top_k
        self.pointing_tolerance = pointing_tolerance
        self.pointing_ties = pointing_ties
        self.log_images = log_images
        self.output_dir = output_dir
        self.faithfulness_steps = faithfulness_steps
        self.faithfulness_baseline = faithfulness_baseline
        self.explainers: dict[str, Explainer] = {}
        self._explained_module: pl.LightningModule | None = None
        #: One summary per pass (epoch, split, TKO / win-rate per method, failures); saved in checkpoints.
        self.history: list[dict[str, Any]] = []
        self._last_pass_epoch: int | None = None

    # ------------------------------------------------------------------ Lightning hooks
    @property
    def state_key(self) -> str:
        return self._generate_state_key(methods=sorted(self.methods), splits=self.splits)

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        # Built here, before any training step, so an unknown method or option stops the run at once.
        # Rebuilt when the trainer is handed another module (explainers hold hooks on the model).
        if self._explained_module is not pl_module:
            self.explainers = build_explainers(self.methods, pl_module, self.seed, where="AttributionCallback.methods")
            self._explained_module = pl_module
            if trainer.is_global_zero:
                self._record_explainers(trainer)
        datamodule = trainer.datamodule
        if datamodule is None or not all(hasattr(datamodule, a) for a in ("frame", "dataset", "class_names")):
            raise ConfigError(
                "AttributionCallback needs the trainer's datamodule to be an MVTecDataModule (or to offer "
                "frame(split), dataset(split) and class_names); pass `datamodule=` to fit / validate / test."
            )

    def _record_explainers(self, trainer: pl.Trainer) -> None:
        """Each method's registry name, reduction and full options (defaults included), for the run record."""
        import json

        record = {name: explainer.config() for name, explainer in self.explainers.items()}
        out = self._output_dir(trainer)
        out.mkdir(parents=True, exist_ok=True)
        (out / "explainers.json").write_text(json.dumps(record, indent=2, default=str))
        for logger in trainer.loggers:
            logger.log_hyperparams({"xai_explainers": record})

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        fitting = trainer.state.fn == "fit"
        if fitting and (trainer.current_epoch + 1) % self.every_n_epochs != 0:
            return
        for split in self.splits if fitting else ["val"]:
            result = self.run_pass(trainer, pl_module, split)
            # Values are already identical on every process; syncing keeps Lightning from warning per key.
            pl_module.log_dict(result.scalars, on_epoch=True, sync_dist=trainer.world_size > 1)
        self._last_pass_epoch = trainer.current_epoch

    def on_test_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        result = self.run_pass(trainer, pl_module, "test")
        pl_module.log_dict(result.scalars, on_epoch=True, sync_dist=trainer.world_size > 1)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        last_epoch = trainer.current_epoch - 1 if trainer.current_epoch > 0 else 0
        if not self.run_on_train_end or self._last_pass_epoch is not None and self._last_pass_epoch >= last_epoch:
            return
        for split in self.splits:
            result = self.run_pass(trainer, pl_module, split)
            # self.log is not allowed in on_train_end; the loggers take the same keys directly.
            for logger in trainer.loggers:
                logger.log_metrics(result.scalars, step=trainer.global_step)
        self._last_pass_epoch = last_epoch

    def state_dict(self) -> dict[str, Any]:
        return {"history": self.history, "last_pass_epoch": self._last_pass_epoch}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.history = list(state_dict.get("history", []))
        self._last_pass_epoch = state_dict.get("last_pass_epoch")

    # ------------------------------------------------------------------ one pass
    def run_pass(self, trainer: pl.Trainer, pl_module: pl.LightningModule, split: str) -> PassResult:
        """Explain the split's image set with every method, score, log heatmaps and a table; return the scores.

        Torch's global RNG is restored afterwards: iterating a DataLoader draws from it, and an
        attribution pass must not change the shuffling or augmentation of the training that follows.
        """
        devices = [pl_module.device] if pl_module.device.type == "cuda" else []
        # Eval mode for the whole pass: at on_train_end the module is back in train mode, and a
        # forward pass there would update BatchNorm statistics of the trained model.
        with torch.random.fork_rng(devices=devices), eval_mode(pl_module):
            return self._run_pass(trainer, pl_module, split)

    def _run_pass(self, trainer: pl.Trainer, pl_module: pl.LightningModule, split: str) -> PassResult:
        if self._explained_module is not pl_module:
            self.setup(trainer, pl_module, "fit")
        datamodule = trainer.datamodule
        class_names = list(datamodule.class_names)
        dataset, positions = self.image_set(datamodule, split)
        rank, world = trainer.global_rank, trainer.world_size
        # Each process explains its own shard; the metrics sum their states across processes.
        loader = DataLoader(Subset(dataset, positions[rank::world]), batch_size=self.batch_size, num_workers=0)
        device = pl_module.device
        names = list(self.explainers)
        metrics = {name: self._metrics(class_names, device) for name in names}
        seconds = dict.fromkeys(names, 0.0)
        faithfulness_seconds = dict.fromkeys(names, 0.0)
        errors: dict[str, str] = {}
        rows: list[dict[str, Any]] = []
        panels: list[dict[str, Any]] = []
        frame = datamodule.frame(split)

        progress = tqdm(
            loader, desc=f"xai {split}", unit="batch", disable=rank != 0 or not trainer.is_global_zero, leave=False
        )
        for batch in progress:
            images = batch["image"].to(device)
            masks = batch["mask"].to(device)[:, 0] > 0
            labels = batch["label"].to(device)
            with torch.no_grad():
                predictions = pl_module.classify(images).argmax(dim=1)
            targets = labels if self.target == "label" else predictions
            # Per-image values of the per-image table, one column per method (NaN: failed or excluded).
            columns = {
                metric: torch.full((len(labels), len(names)), float("nan"), dtype=torch.float64, device=device)
                for metric in ("tko", *self._faithfulness_metrics())
            }
            tko = columns["tko"]
            # Methods that need the same gradient (Grad-CAM, Saliency, Input×Gradient, the
            # segmentation head) share one forward/backward pass; a failing method is reported
            # and skipped for the rest of the pass without stopping the others.
            batch_result = explain_batch({n: e for n, e in self.explainers.items() if n not in errors}, images, targets)
            for name, error in batch_result.errors.items():
                errors[name] = f"{type(error).__name__}: {error}"
                rank_zero_warn(
                    f"[xai] {name} failed on the {split} split and is skipped for this pass: {errors[name]}\n"
                    + "".join(traceback.format_exception(error)[-3:])
                )
            for name, maps in batch_result.maps.items():
                scores = {}
                if self.faithfulness_steps:
                    start = device_clock(device)
                    try:
                        scores = self._faithfulness_scores(pl_module, images, targets, maps)
                    except Exception as error:  # noqa: BLE001 (like a failing method: dropped, the others go on)
                        errors[name] = f"faithfulness curves: {type(error).__name__}: {error}"
                        rank_zero_warn(
                            f"[xai] {name}: deletion / insertion curves failed on the {split} split; the method is "
                            f"skipped for this pass: {errors[name]}\n" + "".join(traceback.format_exception(error)[-3:])
                        )
                        continue
                    faithfulness_seconds[name] += device_clock(device) - start
                seconds[name] += batch_result.seconds[name]
                # "expected" scores tied maxima by their share inside the mask (TKO at K = 1), so a
                # constant map (e.g. an all-zero Grad-CAM) scores chance instead of a hit on every image.
                scores |= localization_scores(
                    maps, masks, k=self.top_k, tolerance=self.pointing_tolerance, ties=self.pointing_ties
                )
                for metric_name, metric in metrics[name].items():
                    metric.update_scores(scores[metric_name], labels)
                for metric_name, column in columns.items():
                    column[:, names.index(name)] = scores[metric_name]
            # Maps of a method whose curves failed are not shown either: the method is dropped for the pass.
            maps_for_panels = {name: maps for name, maps in batch_result.maps.items() if name not in errors}
            rows += self._rows(batch, frame, class_names, names, columns, targets, predictions)
            if len(panels) < self.log_images:
                panels += self._panels(batch, maps_for_panels, tko, names, self.log_images - len(panels))

        errors = self._sync_failures(trainer, errors)
        failed = set(errors)
        ok = [name for name in names if name not in failed]
        scalars = self._compute(metrics, rows, ok, class_names, split, device, trainer, failed)
        n_local = len(positions[rank::world])
        per_image = pd.DataFrame(rows)
        if world > 1:
            per_image = _gather_frames(per_image)
        if len(per_image):
            per_image = per_image.sort_values("image_id", kind="stable").reset_index(drop=True)
        result = PassResult(
            split=split,
            epoch=trainer.current_epoch,
            step=trainer.global_step,
            scalars=scalars,
            per_image=per_image,
            failed=errors,
            seconds_per_image={name: seconds[name] / max(n_local, 1) for name in ok},
            faithfulness_seconds_per_image=(
                {name: faithfulness_seconds[name] / max(n_local, 1) for name in ok} if self.faithfulness_steps else {}
            ),
        )
        # Empty-mask images (``good``) are not explained unless include_good; count them all the same.
        scalars[f"xai/{split}/n_empty_mask_skipped"] = 0.0 if self.include_good else float(
            (~frame["mask_path"].map(has_mask)).sum()
        )
        for name, value in result.seconds_per_image.items():
            scalars[f"xai/{split}/sec_per_image/{name}"] = value
        for name, value in result.faithfulness_seconds_per_image.items():
            scalars[f"xai/{split}/faithfulness_sec_per_image/{name}"] = value
        self.history.append(self._summary(result, ok))
        if trainer.is_global_zero:
            self._report(trainer, result, ok, panels)
        return result

    def image_set(self, datamodule, split: str) -> tuple[Any, list[int]]:
        """The split's evaluation dataset and the fixed, seeded positions explained in it (see :func:`select_images`)."""
        frame = datamodule.frame(split)
        positions = select_images(frame, self.max_images_per_class, self.include_good, self.seed)
        return datamodule.dataset(split), positions

    # ------------------------------------------------------------------ internals
    def _metrics(self, class_names: list[str], device: torch.device) -> dict[str, LocalizationMetric]:
        # Plain accumulators: the scores come from localization_scores (and the faithfulness curves),
        # computed once per batch; sums and counts per class, so they sync across processes like TKO.
        return {
            name: LocalizationMetric(class_names=class_names).to(device)
            for name in (*LOCALIZATION_METRICS, *self._faithfulness_metrics())
        }

    def _faithfulness_metrics(self) -> tuple[str, ...]:
        return FAITHFULNESS_METRICS if self.faithfulness_steps else ()

    def _faithfulness_scores(self, pl_module, images, targets, maps) -> dict[str, torch.Tensor]:
        """(B,) deletion and insertion areas of one method's maps for the explained targets.

        The pass runs in eval mode and inside a forked RNG; the curves add no_grad and draw nothing.
        """
        scores = {}
        for metric_name, curve in (("deletion_auc", deletion_curve), ("insertion_auc", insertion_curve)):
            probabilities = curve(
                pl_module.classify, images, targets, maps, self.faithfulness_steps, self.faithfulness_baseline
            )
            scores[metric_name] = curve_area(probabilities)
        return scores

    def _rows(self, batch, frame, class_names, names, columns, targets, predictions) -> list[dict[str, Any]]:
        # One host copy per batch and metric, not one per image.
        values = {metric: column.cpu().numpy() for metric, column in columns.items()}
        rows = []
        for i, row_id in enumerate(batch["index"].tolist()):
            row = {
                "image_id": frame.loc[row_id, "image_id"],
                "class": class_names[int(batch["label"][i])],
                "target": class_names[int(targets[i])],
                "prediction": class_names[int(predictions[i])],
            }
            for metric, column in values.items():
                row.update({f"{metric}/{name}": float(column[i, m]) for m, name in enumerate(names)})
            rows.append(row)
        return rows

    def _panels(self, batch, maps: dict[str, torch.Tensor], tko, names, budget: int) -> list[dict[str, Any]]:
        images = denormalize(batch["image"][:budget]).permute(0, 2, 3, 1).numpy()
        panels = []
        for i in range(len(images)):
            shown = [name for name in names if name in maps]
            panels.append(
                {
                    "image": images[i],
                    "mask": batch["mask"][i, 0].numpy(),
                    "maps": [maps[name][i].cpu() for name in shown],
                    "methods": shown,
                    "tko": {name: float(tko[i, names.index(name)]) for name in shown},
                    "index": int(batch["index"][i]),
                }
            )
        return panels

    def _sync_failures(self, trainer: pl.Trainer, errors: dict[str, str]) -> dict[str, str]:
        """Every process's failures with their errors: all processes must drop the same methods."""
        if trainer.world_size == 1:
            return errors
        import torch.distributed as dist

        gathered: list[Any] = [None] * trainer.world_size
        dist.all_gather_object(gathered, errors)
        merged: dict[str, str] = {}
        for rank, rank_errors in enumerate(gathered):
            for name, error in rank_errors.items():
                merged.setdefault(name, f"rank {rank}: {error}")
        return merged

    def _compute(self, metrics, rows, ok, class_names, split, device, trainer, failed) -> dict[str, float]:
        """Synchronised metric values as flat ``xai/<split>/<metric>[/<class>]/<method>`` scalars."""
        scalars: dict[str, float] = {}
        for name, per_metric in metrics.items():
            for metric_name, metric in per_metric.items():
                with warnings.catch_warnings():
                    warnings.filterwarnings("ignore", message=".*compute.*before.*update.*")
                    values = metric.compute()  # collective under DDP: every process calls it
                if name not in ok:
                    continue
                for key, value in values.items():
                    value = float(value)
                    if key in ("n_images", "n_excluded") or math.isnan(value):
                        continue
                    suffix = name if key == "overall" else f"{key}/{name}"
                    scalars[f"xai/{split}/{metric_name}/{suffix}"] = value
        if ok:
            counts = metrics[ok[0]]["tko"].compute()
            scalars[f"xai/{split}/n_images"] = float(counts["n_images"])
            scalars[f"xai/{split}/n_excluded"] = float(counts["n_excluded"])
            win = WinRate(ok, class_names=class_names).to(device)
            table = pd.DataFrame(rows)
            if len(table):
                tko = torch.tensor(table[[f"tko/{name}" for name in ok]].to_numpy(), dtype=torch.float64, device=device)
                labels = torch.tensor([class_names.index(c) for c in table["class"]], device=device)
                win.update(tko, labels)
            result = win.compute()
            for key, value in result.items():
                if key in ("n_images", "n_excluded"):
                    scalars[f"xai/{split}/win_rate/{key}"] = float(value)
                    continue
                for method, rate in value.items():
                    if not math.isnan(float(rate)):
                        suffix = method if key == "overall" else f"{key}/{method}"
                        scalars[f"xai/{split}/win_rate/{suffix}"] = float(rate)
        for name in self.explainers:
            scalars[f"xai/{split}/failed/{name}"] = float(name in failed)
        return scalars

    def _summary(self, result: PassResult, ok: list[str]) -> dict[str, Any]:
        s, split = result.scalars, result.split
        return {
            "epoch": result.epoch,
            "step": result.step,
            "split": split,
            "n_images": s.get(f"xai/{split}/n_images"),
            "tko": {name: s.get(f"xai/{split}/tko/{name}") for name in ok},
            "win_rate": {name: s.get(f"xai/{split}/win_rate/{name}") for name in ok},
            **{
                metric: {name: s.get(f"xai/{split}/{metric}/{name}") for name in ok}
                for metric in self._faithfulness_metrics()
            },
            "failed": dict(result.failed),
        }

    def _report(self, trainer: pl.Trainer, result: PassResult, ok: list[str], panels: list[dict]) -> None:
        split, s = result.split, result.scalars
        table = pd.DataFrame(
            {
                "tko": [s.get(f"xai/{split}/tko/{n}") for n in ok],
                "win_rate": [s.get(f"xai/{split}/win_rate/{n}") for n in ok],
                "pointing": [s.get(f"xai/{split}/pointing_game/{n}") for n in ok],
                "auroc": [s.get(f"xai/{split}/pixel_auroc/{n}") for n in ok],
                **{
                    metric.removesuffix("_auc"): [s.get(f"xai/{split}/{metric}/{n}") for n in ok]
                    for metric in self._faithfulness_metrics()
                },
                "s/img": [result.seconds_per_image.get(n) for n in ok],
            },
            index=pd.Index(ok, name="method"),
        ).sort_values("tko", ascending=False)
        n = int(s.get(f"xai/{split}/n_images", 0))
        lines = [f"[xai] {split} split, epoch {result.epoch}: {n} defect images", table.round(3).to_string()]
        lines += [f"[xai] FAILED {name}: {error}" for name, error in result.failed.items()]
        rank_zero_info("\n".join(lines))

        out = self._output_dir(trainer)
        out.mkdir(parents=True, exist_ok=True)
        if len(result.per_image):
            frame = result.per_image.copy()
            frame["winner"] = _winners(frame, ok)
            # A standalone trainer.validate must not overwrite the file of the fit's pass at that epoch.
            fn = getattr(trainer.state.fn, "value", trainer.state.fn)
            stage = "" if fn in ("fit", "test") else f"_{fn}"
            frame.to_csv(out / f"{split}{stage}_epoch{result.epoch:03d}.csv", index=False)
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                self._log_wandb(logger, result, ok, panels)

    def _output_dir(self, trainer: pl.Trainer) -> Path:
        return Path(self.output_dir) if self.output_dir else Path(trainer.default_root_dir) / "xai"

    def _log_wandb(self, logger: WandbLogger, result: PassResult, ok: list[str], panels: list[dict]) -> None:
        import wandb

        split = result.split
        images = []
        for panel in panels:
            strip = heatmap_strip(panel["image"], panel["maps"])
            caption = " | ".join(["image"] + [f"{m} {panel['tko'][m]:.2f}" for m in panel["methods"]])
            images.append(
                wandb.Image(
                    strip,
                    caption=caption,
                    masks={
                        "ground_truth": {
                            "mask_data": tiled_mask(panel["mask"], len(panel["methods"]) + 1),
                            "class_labels": {1: "defect"},
                        }
                    },
                )
            )
        frame = result.per_image.copy()
        if len(frame):
            frame["winner"] = _winners(frame, ok)
        payload: dict[str, Any] = {f"xai/{split}/table": wandb.Table(dataframe=frame)}
        if images:
            payload[f"xai/{split}/heatmaps"] = images
        # One call per pass; no explicit step (mixing steps with WandbLogger's calls drops records).
        logger.experiment.log({**payload, "trainer/global_step": result.step})


def select_images(
    frame: pd.DataFrame, max_images_per_class: int | None, include_good: bool = False, seed: int = 0
) -> list[int]:
    """Positions (in ``frame``'s row order) of a fixed, seeded image set: at most M per class.

    Images with an empty mask are left out unless ``include_good``. Each class is sampled with a
    generator keyed by (seed, class name), so the sample does not move when other classes come or go.
    """
    frame = frame.reset_index(drop=True)
    keep = frame["mask_path"].map(has_mask) | include_good
    chosen: list[int] = []
    for label, rows in sorted(frame[keep].groupby("label"), key=lambda item: item[0]):
        positions = rows.sort_values("image_id").index.to_numpy()
        if max_images_per_class is not None and len(positions) > max_images_per_class:
            rng = np.random.default_rng([seed, zlib.crc32(label.encode())])
            positions = np.sort(rng.choice(positions, max_images_per_class, replace=False))
        chosen += positions.tolist()
    return sorted(chosen)


def _check_top_k(top_k: int | float | None) -> None:
    if top_k is None:
        return
    if isinstance(top_k, bool) or not isinstance(top_k, (int, float)) or top_k <= 0:
        raise ConfigError(f"`AttributionCallback.top_k` is {top_k!r}; use null (K = mask size), a fraction in (0, 1] or a pixel count.")
    if isinstance(top_k, float) and top_k > 1:
        raise ConfigError(f"`AttributionCallback.top_k` is {top_k}; a fraction of the image lies in (0, 1] (or give an int count).")


def _winners(frame: pd.DataFrame, methods: list[str]) -> list[str]:
    """Per image, the method(s) with the highest TKO (ties joined with '='); '' when excluded."""
    if not methods:
        return [""] * len(frame)
    values = frame[[f"tko/{m}" for m in methods]].to_numpy()
    winners = []
    for row in values:
        if np.isnan(row).any():
            winners.append("")
            continue
        best = row.max()
        winners.append("=".join(m for m, v in zip(methods, row) if abs(v - best) <= 1e-9))
    return winners


def _gather_frames(frame: pd.DataFrame) -> pd.DataFrame:
    """Concatenate every process's per-image rows (all processes get the full table)."""
    import torch.distributed as dist

    gathered: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, frame.to_dict("records"))
    return pd.DataFrame([row for part in gathered for row in part])
