"""Write what a run needs to be reproduced into its directory: config, split, manifest.

Subclasses LightningCLI's ``SaveConfigCallback`` (its hook for saving the resolved config) so the
same object also records the data split, package versions and git commit, and logs them.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytorch_lightning as pl
from pytorch_lightning.cli import SaveConfigCallback
from pytorch_lightning.loggers import WandbLogger
from pytorch_lightning.utilities import rank_zero_only

from xai_lightning.provenance import git_state, machine, package_versions
from xai_lightning.runs import CONFIG_FILE, MANIFEST_FILE, SPLIT_FILE

__all__ = ["CONFIG_FILE", "MANIFEST_FILE", "SPLIT_FILE", "RunManifest"]


class RunManifest(SaveConfigCallback):
    """On ``setup``, writes ``config.yaml``, ``split.csv`` and ``manifest.json`` into the run directory.

    The run directory is ``trainer.default_root_dir``; files are overwritten on resume, so they always
    describe the latest invocation. The manifest and the split also go to every attached logger.
    """

    @rank_zero_only
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if self.already_saved:
            return
        run_dir = Path(trainer.default_root_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        self.parser.save(self.config, run_dir / CONFIG_FILE, overwrite=True, multifile=False)
        manifest = {
            "run_dir": str(run_dir.resolve()),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "seed": self.config.get("seed_everything"),
            "run_name": self.config.get("run_name"),
            # Relative paths of the config (data.root) are relative to this folder.
            "working_dir": os.getcwd(),
            "git": git_state(),
            "packages": package_versions(),
            "machine": machine(),
        }
        if getattr(pl_module, "weights_source", None):
            # `model.pretrained: if_available` decides at build time: say which it was.
            manifest["model"] = {"weights": pl_module.weights_source}
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                # Lets `--resume` continue the same W&B run instead of starting a second one.
                manifest["wandb"] = {"id": logger.experiment.id, "project": logger.experiment.project}
        datamodule = trainer.datamodule
        if datamodule is not None and getattr(datamodule, "split_frame", None) is not None:
            datamodule.split_frame.to_csv(run_dir / SPLIT_FILE, index_label="row")
            manifest["data"] = datamodule.describe()
            manifest["data"]["split_file"] = SPLIT_FILE
        (run_dir / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2, default=str))
        self._log(trainer, run_dir, manifest)
        self.already_saved = True

    @staticmethod
    def _log(trainer: pl.Trainer, run_dir: Path, manifest: dict) -> None:
        summary = {"seed": manifest["seed"], "git_commit": manifest["git"]["commit"], "packages": manifest["packages"]}
        if "model" in manifest:
            summary["model_weights"] = manifest["model"]["weights"]
        if "data" in manifest:
            summary["data"] = manifest["data"]
        for logger in trainer.loggers:
            logger.log_hyperparams(summary)
            if isinstance(logger, WandbLogger):
                # Files land in the W&B run (and are uploaded with it, also by a later `wandb sync`).
                for name in (CONFIG_FILE, MANIFEST_FILE, SPLIT_FILE):
                    if (run_dir / name).exists():
                        logger.experiment.save(str(run_dir / name), base_path=str(run_dir), policy="now")
