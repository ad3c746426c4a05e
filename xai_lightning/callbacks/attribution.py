"""AttributionCallback: while a model trains, score attribution maps against the defect masks.

Every N validation epochs (and on test) it drives the attribution pass (:mod:`xai_lightning.scoring`)
over a fixed, seeded image set, shards it across DDP processes, syncs the result and hands it to the
sinks (console table, per-image CSV, W&B media); a history of passes survives resume.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import pytorch_lightning as pl
import torch
from pytorch_lightning.loggers import WandbLogger
from pytorch_lightning.utilities import rank_zero_warn
from torch.utils.data import DataLoader, Subset
from tqdm.auto import tqdm

from xai_lightning.atomic import WriteError
from xai_lightning.callbacks.ddp import gather_failures, gather_rows
from xai_lightning.data.transforms import input_normalized
from xai_lightning.callbacks.sinks import HeatmapPanels, log_pass_to_wandb, print_pass_table, write_pass_csv
from xai_lightning.errors import ConfigError
from xai_lightning.explain.base import Explainer, build_explainers, eval_mode, explainer_specs
from xai_lightning.metrics.names import DEFAULT_POINTING_TIES, DEFAULT_WIN_TIES, FAITHFULNESS_METRICS
from xai_lightning.runs import EXPLAINERS_FILE, XAI_DIR
from xai_lightning.scoring import (
    CurveError,
    PassAccumulator,
    PassResult,
    ScoringConfig,
    count_empty_masks,
    describe_error,
    score_batch,
    select_images,
    winners,
)

#: Methods explained when the config names none: cheap gradient methods plus the two references.
DEFAULT_METHODS: dict[str, dict[str, Any]] = {
    "gradcam": {},
    "saliency": {},
    "integrated_gradients": {"n_steps": 16},
    "segmentation_head": {},
    "random": {},
}

Split = Literal["train", "val", "test"]

__all__ = ["DEFAULT_METHODS", "AttributionCallback", "PassResult", "select_images", "winners"]


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
        batch_size: images per attribution batch.
        log_images: how many images get a heatmap panel per pass (one W&B image each, all methods side by side).
        output_dir: where per-image CSVs, ``explainers.json`` and ``scoring.json`` go (default ``<run dir>/xai``).
        include_good, target, seed, top_k, pointing_tolerance, pointing_ties, faithfulness_steps,
        faithfulness_baseline, only_correct, win_ties, top_k_iou: the scoring configuration, see
            :class:`~xai_lightning.scoring.ScoringConfig`.
            ``faithfulness_steps`` > 0 adds deletion / insertion areas (``deletion_auc``, lower is better;
            ``insertion_auc``), at ``2 · (steps − 1)`` forward passes per image and method (and one for the
            baseline image), hence off by default.
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
        pointing_ties: Literal["expected", "any"] = DEFAULT_POINTING_TIES,
        log_images: int = 8,
        output_dir: str | None = None,
        faithfulness_steps: int = 0,
        faithfulness_baseline: Literal["blur", "mean"] = "blur",
        only_correct: bool = False,
        win_ties: Literal["fair", "first_listed"] = DEFAULT_WIN_TIES,
        top_k_iou: bool = False,
    ) -> None:
        super().__init__()
        self.methods = explainer_specs(methods if methods is not None else DEFAULT_METHODS)
        self.scoring = ScoringConfig.named(
            "AttributionCallback",
            top_k=top_k,
            pointing_tolerance=pointing_tolerance,
            pointing_ties=pointing_ties,
            target=target,
            include_good=include_good,
            faithfulness_steps=faithfulness_steps,
            faithfulness_baseline=faithfulness_baseline,
            seed=seed,
            only_correct=only_correct,
            win_ties=win_ties,
            top_k_iou=top_k_iou,
        )
        _check_schedule(self.methods, splits, every_n_epochs, max_images_per_class, batch_size, log_images)
        self.every_n_epochs = every_n_epochs
        self.splits = list(splits)
        self.run_on_train_end = on_train_end
        self.max_images_per_class = max_images_per_class
        self.batch_size = batch_size
        self.log_images = log_images
        self.output_dir = output_dir
        self.explainers: dict[str, Explainer] = {}
        self._explained_module: pl.LightningModule | None = None
        #: One summary per pass (epoch, split, TKO / win-rate per method, failures); saved in checkpoints.
        self.history: list[dict[str, Any]] = []
        self._last_pass_epoch: int | None = None

    def __getattr__(self, name: str) -> Any:
        # The scoring options stay readable as attributes (callback.top_k), as they were before they had a record.
        scoring = self.__dict__.get("scoring")
        if scoring is not None and name in scoring.to_dict():
            return getattr(scoring, name)
        raise AttributeError(f"'{type(self).__name__}' object has no attribute '{name}'")

    # ------------------------------------------------------------------ Lightning hooks
    @property
    def state_key(self) -> str:
        return self._generate_state_key(methods=sorted(self.methods), splits=self.splits)

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        # Built here, before any training step, so an unknown method or option stops the run at once.
        # Rebuilt when the trainer is handed another module (explainers hold hooks on the model).
        if self._explained_module is not pl_module:
            where = "AttributionCallback.methods"
            self.explainers = build_explainers(self.methods, pl_module, self.scoring.seed, where=where)
            self._explained_module = pl_module
            if trainer.is_global_zero:
                self._record(trainer)
        datamodule = trainer.datamodule
        if datamodule is None or not all(hasattr(datamodule, a) for a in ("frame", "dataset", "class_names")):
            raise ConfigError(
                "AttributionCallback needs the trainer's datamodule to be an MVTecDataModule (or to offer "
                "frame(split), dataset(split) and class_names); pass `datamodule=` to fit / validate / test."
            )

    def _record(self, trainer: pl.Trainer) -> None:
        """Each method's registry name, reduction and options, and the scoring configuration, for the run record."""
        record = {name: explainer.config() for name, explainer in self.explainers.items()}
        out = self._output_dir(trainer)
        out.mkdir(parents=True, exist_ok=True)
        (out / EXPLAINERS_FILE).write_text(json.dumps(record, indent=2, default=str))
        self.scoring.write(out)
        for logger in trainer.loggers:
            logger.log_hyperparams({"xai_explainers": record, "xai_scoring": self.scoring.to_dict()})

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        fitting = trainer.state.fn == "fit"
        if fitting and (trainer.current_epoch + 1) % self.every_n_epochs != 0:
            return
        for split in self.splits if fitting else ["val"]:
            result = self.run_pass(trainer, pl_module, split)
            # Values are already identical on every process; syncing keeps Lightning from warning per key.
            pl_module.log_dict(result.scalars(), on_epoch=True, sync_dist=trainer.world_size > 1)
        self._last_pass_epoch = trainer.current_epoch

    def on_test_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        result = self.run_pass(trainer, pl_module, "test")
        pl_module.log_dict(result.scalars(), on_epoch=True, sync_dist=trainer.world_size > 1)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        last_epoch = trainer.current_epoch - 1 if trainer.current_epoch > 0 else 0
        if not self.run_on_train_end or self._last_pass_epoch is not None and self._last_pass_epoch >= last_epoch:
            return
        for split in self.splits:
            result = self.run_pass(trainer, pl_module, split)
            # self.log is not allowed in on_train_end; the loggers take the same keys directly.
            for logger in trainer.loggers:
                logger.log_metrics(result.scalars(), step=trainer.global_step)
        self._last_pass_epoch = last_epoch

    def state_dict(self) -> dict[str, Any]:
        return {"history": self.history, "last_pass_epoch": self._last_pass_epoch}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.history = list(state_dict.get("history", []))
        self._last_pass_epoch = state_dict.get("last_pass_epoch")

    # ------------------------------------------------------------------ one pass
    def run_pass(self, trainer: pl.Trainer, pl_module: pl.LightningModule, split: str) -> PassResult:
        """Explain the split's image set with every method, score, log heatmaps and a table; return the result.

        Torch's global RNG is restored afterwards: iterating a DataLoader draws from it, and an
        attribution pass must not change the shuffling or augmentation of the training that follows.
        Eval mode for the whole pass: at on_train_end the module is back in train mode, and a
        forward pass there would update BatchNorm statistics of the trained model.
        """
        devices = [pl_module.device] if pl_module.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices), eval_mode(pl_module):
            if self._explained_module is not pl_module:
                self.setup(trainer, pl_module, "fit")
            accumulator, panels = self._explain_shard(trainer, pl_module, split)
        # All processes must drop the same methods and compute from the same rows.
        failed = gather_failures(accumulator.errors, trainer.world_size)
        frame = trainer.datamodule.frame(split)
        result = accumulator.result(
            split,
            epoch=trainer.current_epoch,
            step=trainer.global_step,
            failed=failed,
            per_image=gather_rows(accumulator.rows, trainer.world_size),
            n_empty_mask_skipped=0 if self.scoring.include_good else count_empty_masks(frame),
        )
        self.history.append(result.summary(tuple(m for m in FAITHFULNESS_METRICS if m in self.scoring.metrics)))
        if trainer.is_global_zero:
            self._report(trainer, result, panels)
        return result

    def _explain_shard(self, trainer: pl.Trainer, pl_module: pl.LightningModule, split: str):
        """This process's share of the image set, explained and scored batch by batch."""
        dataset, positions = self.image_set(trainer.datamodule, split)
        rank, world = trainer.global_rank, trainer.world_size
        loader = DataLoader(Subset(dataset, positions[rank::world]), batch_size=self.batch_size, num_workers=0)
        image_ids = trainer.datamodule.frame(split)["image_id"]
        accumulator = PassAccumulator(
            list(self.explainers), trainer.datamodule.class_names, self.scoring, pl_module.device
        )
        panels = HeatmapPanels(self.log_images, normalized=input_normalized(pl_module))
        for batch in tqdm(loader, desc=f"xai {split}", unit="batch", disable=not trainer.is_global_zero, leave=False):
            # A method that failed is skipped for the rest of the pass; the others go on.
            explainers = {n: e for n, e in self.explainers.items() if n not in accumulator.errors}
            device = pl_module.device
            scored = score_batch(
                pl_module,
                explainers,
                batch["image"].to(device),
                batch["mask"].to(device)[:, 0],
                batch["label"].to(device),
                self.scoring,
            )
            for name, error in scored.errors.items():
                what = ": deletion / insertion curves failed" if isinstance(error, CurveError) else " failed"
                rank_zero_warn(
                    f"[xai] {name}{what} on the {split} split; skipped for this pass: {describe_error(error)}"
                )
            accumulator.add(scored, image_ids.loc[batch["index"].tolist()].tolist())
            panels.add(batch, scored)
        return accumulator, panels.panels

    def image_set(self, datamodule, split: str) -> tuple[Any, list[int]]:
        """The split's evaluation dataset and the fixed, seeded positions explained in it (:func:`select_images`)."""
        frame = datamodule.frame(split)
        positions = select_images(frame, self.max_images_per_class, self.scoring.include_good, self.scoring.seed)
        return datamodule.dataset(split), positions

    # ------------------------------------------------------------------ DDP and sinks
    def _report(self, trainer: pl.Trainer, result: PassResult, panels) -> None:
        print_pass_table(result)
        # A standalone trainer.validate must not overwrite the file of the fit's pass at that epoch.
        fn = getattr(trainer.state.fn, "value", trainer.state.fn)
        try:
            write_pass_csv(result, self._output_dir(trainer), stage="" if fn in ("fit", "test") else f"_{fn}")
        except WriteError as error:  # the pass's values are logged already; the training goes on
            rank_zero_warn(f"[xai] {error}")
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                log_pass_to_wandb(logger, result, panels)

    def _output_dir(self, trainer: pl.Trainer) -> Path:
        return Path(self.output_dir) if self.output_dir else Path(trainer.default_root_dir) / XAI_DIR


def _check_schedule(methods, splits, every_n_epochs, max_images_per_class, batch_size, log_images) -> None:
    """The callback's own options (the scoring options are checked by ScoringConfig)."""
    if not methods:
        raise ConfigError("`AttributionCallback.methods` is empty; name at least one explainer.")
    bad = [s for s in splits if s not in ("train", "val")]
    if bad:
        raise ConfigError(
            f"`AttributionCallback.splits` has {bad}; validation passes explain 'train' and/or 'val' "
            "(the test split is explained when trainer.test runs)."
        )
    if max_images_per_class is not None and max_images_per_class < 1:
        raise ConfigError("`AttributionCallback.max_images_per_class` must be >= 1 or null (all images).")
    for option, value in (("batch_size", batch_size), ("every_n_epochs", every_n_epochs)):
        if value < 1:
            raise ConfigError(f"`AttributionCallback.{option}` is {value}; use 1 or more.")
    if log_images < 0:
        raise ConfigError(f"`AttributionCallback.log_images` is {log_images}; use 0 or more.")
