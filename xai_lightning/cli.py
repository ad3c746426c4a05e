"""The command line behind ``train.py``: LightningCLI with YAML configs, run directories and W&B defaults.

Every option of the data module, the model and the Trainer is settable from YAML or the command line
(``--model.seg_loss_weight 0.5``); this module only adds where a run lives and how it is tracked.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import xai_lightning  # noqa: F401  (sets NO_ALBUMENTATIONS_UPDATE before albumentations is imported)

import pytorch_lightning as pl
from jsonargparse import Namespace
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.cli import LightningArgumentParser, LightningCLI
from lightning_fabric.plugins import TorchCheckpointIO
from pytorch_lightning.loggers import WandbLogger
from pytorch_lightning.utilities import rank_zero_warn

from xai_lightning.callbacks.run_manifest import RunManifest
from xai_lightning.callbacks.random_state import RandomState
from xai_lightning.checkpoints import AtomicCheckpointIO, DamagedCheckpointError, load_checkpoint, newest_loadable
from xai_lightning.errors import ConfigError
from xai_lightning.runs import (
    CHECKPOINT_DIR,
    LAST_CHECKPOINT,
    SPLIT_FILE,
    Run,
    checked_run_name,
    seed_run_name,
)
from xai_lightning.data.datamodule import MVTecDataModule
from xai_lightning.experiment import write_finished
from xai_lightning.models.multitask import MultiTaskClassifier
from xai_lightning.tracking import OFFLINE_HINT, resolve_wandb_mode, wandb_run_dir

TRAINER_DEFAULTS = {
    # "warn": use torch's deterministic kernels wherever they exist, warn (not fail) where none does.
    "deterministic": "warn",
    "log_every_n_steps": 5,
    "max_epochs": 10,
}


class XaiLightningCLI(LightningCLI):
    """LightningCLI for the multi-task model and the MVTec data module.

    Adds ``experiment_dir`` and ``run_name`` (the run directory is ``<experiment_dir>/<run_name>``,
    default run name ``seed<seed>``), a ``checkpoint`` section (ModelCheckpoint), ``resume`` and
    ``test_after_fit``. Checkpoints, config, split, manifest and the W&B run all live in the run directory.
    """

    def __init__(self, args: list[str] | None = None, **kwargs) -> None:
        super().__init__(
            MultiTaskClassifier,
            MVTecDataModule,
            args=args,
            run=False,
            seed_everything_default=0,
            save_config_callback=RunManifest,
            save_config_kwargs={"overwrite": True},
            trainer_defaults=TRAINER_DEFAULTS,
            parser_kwargs={"description": "Train a multi-task defect classifier (see README.md)."},
            **kwargs,
        )

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_argument("--experiment_dir", default="runs/default", help="Folder holding this experiment's runs.")
        parser.add_argument("--run_name", type=str | None, default=None, help="Run folder name (default: seed<seed>).")
        parser.add_argument("--resume", type=str | None, default=None, help="Checkpoint to resume from, or 'last'.")
        parser.add_argument("--test_after_fit", type=bool, default=True, help="Evaluate the best checkpoint on test.")
        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
        parser.set_defaults(
            {
                "checkpoint.monitor": "val/loss",
                "checkpoint.mode": "min",
                "checkpoint.save_last": True,
                "checkpoint.filename": "epoch{epoch:03d}",
                "checkpoint.auto_insert_metric_name": False,
                # One last.ckpt per run folder: a resume (also of a moved folder) overwrites it, never adds last-v1.ckpt.
                "checkpoint.enable_version_counter": False,
            }
        )
        # Read from the built data module, before any data is written: for a synthetic set not written yet the
        # names come from its counts (MVTecDataModule.class_names), so the model's classes are the labels' classes.
        parser.link_arguments("data.class_names", "model.class_names", apply_on="instantiate")
        # The model's baselines (a black image, the mean image) and image displays depend on the input's scale.
        parser.link_arguments("data.normalize", "model.normalize_input")

    def before_instantiate_classes(self) -> None:
        config = self.config
        config.run_name = checked_run_name(config.run_name or seed_run_name(config.seed_everything))
        run_dir = Path(config.experiment_dir) / config.run_name
        config.trainer.default_root_dir = str(run_dir)
        config.checkpoint.dirpath = config.checkpoint.dirpath or str(run_dir / CHECKPOINT_DIR)
        os.environ.setdefault("WANDB_MODE", resolve_wandb_mode())
        for logger in _logger_configs(config):
            if logger.class_path.rsplit(".", 1)[-1] == "WandbLogger":
                _fill_wandb_defaults(logger.init_args, config, run_dir)
                if config.resume:
                    _continue_wandb_run(logger.init_args, run_dir)

    @property
    def run_dir(self) -> Path:
        return Path(self.trainer.default_root_dir)

    def fit_and_test(self) -> None:
        """Train (resuming if asked), test the best checkpoint, print where everything went.

        The W&B run is closed however this ends, so what was logged before a crash is kept (and a
        later run in the same process does not attach itself to a stale run).
        """
        datamodule = self.datamodule
        if datamodule.is_synthetic:
            pl.utilities.rank_zero_info(f"[xai_lightning] Training on SYNTHETIC data from '{datamodule.root}'.")
        resume = self._resume_checkpoint()
        if resume and (self.run_dir / SPLIT_FILE).is_file():
            datamodule.restore_split(self.run_dir / SPLIT_FILE)  # images added since must not move into training
        # DDP's re-launched processes (LOCAL_RANK > 0) share the lock of the process that launched them.
        owner = os.environ.get("LOCAL_RANK", "0") == "0" and os.environ.get("NODE_RANK", "0") == "0"
        with Run(self.run_dir).lock() if owner else contextlib.nullcontext():
            self._fit_and_test(datamodule, resume)

    def instantiate_trainer(self, **kwargs) -> pl.Trainer:
        trainer = super().instantiate_trainer(**kwargs)
        # On whatever callbacks a config lists: a resumed run must draw what the uninterrupted run drew.
        trainer.callbacks.append(RandomState())
        if type(trainer.strategy.checkpoint_io) is TorchCheckpointIO:  # a user's own checkpoint writer is kept
            trainer.strategy.checkpoint_io = AtomicCheckpointIO()
        return trainer

    def _resume_checkpoint(self) -> str | None:
        """The checkpoint ``--resume`` names, checked: ``last`` is the run's newest checkpoint that loads.

        A damaged checkpoint of the run's own folder (a full disk cut ``last.ckpt`` short) is passed over,
        with a warning, for the newest one that loads; a file that would run code is always refused.
        """
        resume = self.config.resume
        if not resume:
            return None
        folder = Path(self.config.checkpoint.dirpath)
        if resume == "last":
            found = newest_loadable(folder, prefer=LAST_CHECKPOINT)
            if found is None:
                raise ConfigError(
                    f"`--resume last`: '{folder}' holds no checkpoint to resume from. Leave out --resume to start "
                    "the run from scratch, or give --resume the path of a checkpoint file."
                )
        else:
            path = Path(resume)
            if not path.is_file():
                raise ConfigError(f"`--resume {resume}`: no such checkpoint file. Use `--resume last` or a .ckpt path.")
            try:
                load_checkpoint(path)
                return str(path)
            except DamagedCheckpointError:
                if path.resolve().parent != folder.resolve():
                    raise  # a file from elsewhere: nothing to fall back on
                found = newest_loadable(folder, prefer=path.name)
        path, passed = found
        for reason in passed:
            rank_zero_warn(f"{reason} Resuming from '{path}' instead, the newest checkpoint of the run that loads.")
        return str(path)

    def _fit_and_test(self, datamodule, resume: str | None) -> None:
        exit_code = 1
        try:
            self.trainer.fit(self.model, datamodule=datamodule, ckpt_path=resume, weights_only=True)
            #: Metrics at the end of fit (``trainer.test`` replaces ``callback_metrics``).
            self.fit_metrics = {key: float(value) for key, value in self.trainer.callback_metrics.items()}
            if self.config.test_after_fit and datamodule.split_config.test_fraction > 0:
                best = self.trainer.checkpoint_callback.best_model_path if self.trainer.checkpoint_callback else ""
                self.trainer.test(self.model, datamodule=datamodule, ckpt_path=best or None, weights_only=True)
            self._print_summary()
            if self.trainer.is_global_zero:
                write_finished(self.run_dir, {k: v for k, v in self.final_metrics.items() if not k.startswith("xai/")})
            exit_code = 0
        finally:
            _finish_wandb(self.trainer, exit_code)

    @property
    def final_metrics(self) -> dict[str, float]:
        """Metrics at the end of fit, updated by those of the test run after it."""
        return {**self.fit_metrics, **{k: float(v) for k, v in self.trainer.callback_metrics.items()}}

    @pl.utilities.rank_zero_only
    def _print_summary(self) -> None:
        metrics = self.final_metrics
        lines = [f"Run directory: {self.run_dir}"]
        checkpoint = self.trainer.checkpoint_callback
        if checkpoint is not None and checkpoint.best_model_path:
            lines.append(f"Best checkpoint: {checkpoint.best_model_path}")
        for key in ("val/acc", "val/balanced_acc", "test/acc", "test/balanced_acc", "val/seg_iou"):
            if key in metrics:
                lines.append(f"{key}: {metrics[key]:.4f}")
        if self.datamodule.is_synthetic:
            lines.append("Data: SYNTHETIC (xai_lightning.data.synthetic), not MVTec AD.")
        for logger in self.trainer.loggers:
            if isinstance(logger, WandbLogger) and wandb_run_dir(logger) is not None:
                lines.append(f"W&B run ({os.environ.get('WANDB_MODE', 'online')}): {wandb_run_dir(logger)}")
                if os.environ.get("WANDB_MODE") == "offline":
                    lines.append("Upload it with: " + OFFLINE_HINT.format(run_dir=wandb_run_dir(logger)))
        print("\n".join(lines), flush=True)


def _logger_configs(config: Namespace) -> list[Namespace]:
    loggers = config.trainer.logger
    if isinstance(loggers, Namespace):
        return [loggers]
    if isinstance(loggers, list):
        return [logger for logger in loggers if isinstance(logger, Namespace)]
    return []


def _fill_wandb_defaults(init_args: Namespace, config: Namespace, run_dir: Path) -> None:
    """W&B files go into the run directory; the run is named after it and tagged with the data kind."""
    if init_args.save_dir in (None, ".") and not init_args.get("dir"):  # "." is WandbLogger's default
        init_args.save_dir = str(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    init_args.name = init_args.name or f"{Path(config.experiment_dir).name}/{config.run_name}"
    # The W&B tag says what the data is: synthetic, or real data in the MVTec or the plain layout.
    kind = "synthetic" if config.data.source == "synthetic" else config.data.get("layout") or "mvtec"
    tags = list(init_args.get("tags") or [])
    init_args.tags = tags if kind in tags else [*tags, kind]


def _continue_wandb_run(init_args: Namespace, run_dir: Path) -> None:
    """On resume, log into the W&B run the interrupted run started (its id is in the manifest)."""
    if init_args.get("id") or init_args.get("version"):
        return
    run_id = Run(run_dir).manifest.get("wandb", {}).get("id")
    if run_id:
        init_args.id = run_id
        init_args.resume = "allow"


def _finish_wandb(trainer: pl.Trainer, exit_code: int = 0) -> None:
    """Close the W&B run so its files are complete on disk (an offline run is then ready to sync)."""
    if any(isinstance(logger, WandbLogger) for logger in trainer.loggers):
        import wandb

        if wandb.run is not None:
            wandb.finish(exit_code=exit_code)


def main(args: list[str] | None = None) -> XaiLightningCLI:
    """Entry point of ``train.py``."""
    cli = XaiLightningCLI(args=args)
    cli.fit_and_test()
    return cli
