"""Find finished runs in an experiment directory and load what they saved (config, data, checkpoint)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import yaml
from pytorch_lightning.cli import LightningArgumentParser

from xai_lightning.callbacks.run_manifest import CONFIG_FILE
from xai_lightning.data.datamodule import MVTecDataModule
from xai_lightning.errors import RunError
from xai_lightning.models.multitask import MultiTaskClassifier


@dataclass(frozen=True)
class Run:
    """One training run on disk: ``<experiment_dir>/<run_name>/`` with config.yaml and checkpoints/."""

    path: Path

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def config(self) -> dict:
        return yaml.safe_load((self.path / CONFIG_FILE).read_text())

    @property
    def seed(self) -> int | None:
        return self.config.get("seed_everything")

    def checkpoint(self, which: Literal["best", "last"] = "best") -> Path:
        """Path of the best checkpoint (as the run's ModelCheckpoint ranked them) or of ``last.ckpt``."""
        folder = self.path / "checkpoints"
        last = folder / "last.ckpt"
        if which == "last":
            if not last.is_file():
                raise RunError(f"Run '{self.path}' has no '{last}'; did it finish an epoch?")
            return last
        candidates = {p.name: p for p in folder.glob("*.ckpt") if p.name != "last.ckpt"}
        best = self._best_from(last) if last.is_file() else None
        if best is not None and best in candidates:
            return candidates[best]
        if len(candidates) == 1:
            return next(iter(candidates.values()))
        raise RunError(
            f"Run '{self.path}' records no best checkpoint (`checkpoint.monitor` was never logged: is the "
            "validation split empty?). Use `--checkpoint last`, or train with a validation split."
        )

    @staticmethod
    def _best_from(last: Path) -> str | None:
        import torch

        state = torch.load(last, map_location="cpu", weights_only=False)
        for key, callback_state in state.get("callbacks", {}).items():
            if key.startswith("ModelCheckpoint") and callback_state.get("best_model_path"):
                return Path(callback_state["best_model_path"]).name
        return None

    def load_model(self, which: Literal["best", "last"] = "best") -> MultiTaskClassifier:
        path = self.checkpoint(which)
        try:
            return MultiTaskClassifier.load_from_checkpoint(path, map_location="cpu")
        except Exception as error:  # a checkpoint from another code version, a truncated file, ...
            raise RunError(f"Checkpoint '{path}' does not load ({type(error).__name__}: {error}).") from error

    def load_datamodule(self) -> MVTecDataModule:
        """The run's data module, rebuilt from its saved config (same root, split seed and sizes)."""
        parser = LightningArgumentParser(exit_on_error=False)
        parser.add_lightning_class_args(MVTecDataModule, "data", subclass_mode=False)
        data_config = parser.parse_object({"data": self.config["data"]})
        return parser.instantiate_classes(data_config).data


def find_runs(experiment_dir: str | Path) -> list[Run]:
    """Finished runs under ``experiment_dir`` (or the run itself when it is one), sorted by name.

    A run is finished when it wrote ``finished.json`` (train.py does after fit and test); interrupted
    runs are left out with a note, and an experiment without any finished run is an error.
    """
    from xai_lightning.experiment import FINISHED_FILE

    root = Path(experiment_dir)
    if not root.is_dir():
        raise RunError(f"Experiment directory '{root}' does not exist.")
    folders = [root] if (root / CONFIG_FILE).is_file() else sorted(p for p in root.iterdir() if p.is_dir())
    candidates = [Run(p) for p in folders if (p / CONFIG_FILE).is_file()]
    runs = [run for run in candidates if (run.path / FINISHED_FILE).is_file()]
    unfinished = [run.name for run in candidates if run not in runs]
    if not runs:
        raise RunError(
            f"No finished run in '{root}' (a finished run folder holds config.yaml, checkpoints/ and {FINISHED_FILE})"
            + (f"; unfinished: {', '.join(unfinished)}" if unfinished else "")
            + ". Train with `python train.py --config ... --experiment_dir " + str(root) + " --seeds 0-4`; "
            "re-running that command finishes interrupted seeds."
        )
    if unfinished:
        print(f"[evaluate] leaving out unfinished runs in {root}: {', '.join(unfinished)} (re-run the experiment to finish them)")
    return sorted(runs, key=lambda run: (run.seed if run.seed is not None else -1, run.name))
