"""One training run on disk, and where each of its files lives: the only module that knows the run-folder layout.

The launcher (``--seeds``) asks a :class:`Run` whether it is new, interrupted or finished;
``evaluate.py`` finds finished runs and loads each one once (:meth:`Run.load`).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import yaml

from xai_lightning.errors import ConfigError, RunError

if TYPE_CHECKING:  # the launcher imports this module and must not pay for torch and Lightning
    from xai_lightning.data.datamodule import MVTecDataModule
    from xai_lightning.models.multitask import MultiTaskClassifier
    from xai_lightning.scoring import ScoringConfig

#: The run folder: ``<experiment_dir>/<run name>/`` holds these.
CONFIG_FILE = "config.yaml"
MANIFEST_FILE = "manifest.json"
SPLIT_FILE = "split.csv"
FINISHED_FILE = "finished.json"
CHECKPOINT_DIR = "checkpoints"
LAST_CHECKPOINT = "last.ckpt"
XAI_DIR = "xai"
EXPLAINERS_FILE = "explainers.json"
#: Held by the process training into the run folder (its pid and host), so a second one stops at once.
LOCK_FILE = "run.lock"
WANDB_DIR = "wandb"
#: Launcher logs of parallel seeds, in the experiment folder (not a run folder).
LOGS_DIR = "logs"

Checkpoint = Literal["best", "last"]


def seed_run_name(seed: int) -> str:
    """The default run name of a seed: ``seed<N>``."""
    return f"seed{seed}"


def checked_run_name(name: str) -> str:
    """``name`` when it is one folder name; a name that would place the run elsewhere is refused.

    ``<experiment_dir>/<run_name>`` must stay inside the experiment folder: no separators, no ``..``,
    no absolute path.

    >>> checked_run_name("seed0")
    'seed0'
    >>> checked_run_name("../elsewhere")
    Traceback (most recent call last):
    ...
    xai_lightning.errors.ConfigError: `run_name` is '../elsewhere': a run name is one folder name inside ...
    """
    if not name or name in (".", "..") or "/" in name or "\\" in name or Path(name).is_absolute():
        raise ConfigError(
            f"`run_name` is {name!r}: a run name is one folder name inside `experiment_dir` (no '/', '\\', '..' "
            "or absolute path); put the folder in `experiment_dir` instead."
        )
    return name


@dataclass(frozen=True)
class Run:
    """One training run: ``<experiment_dir>/<run_name>/`` with config.yaml, checkpoints/, xai/ and finished.json.

    ``planned_seed`` is the seed the launcher plans the run for, known before the run has a config.
    """

    path: Path
    planned_seed: int | None = field(default=None, compare=False)

    @classmethod
    def for_seed(cls, experiment_dir: str | Path, seed: int) -> Run:
        return cls(Path(experiment_dir) / seed_run_name(seed), planned_seed=seed)

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def config(self) -> dict:
        return yaml.safe_load((self.path / CONFIG_FILE).read_text())

    @property
    def seed(self) -> int | None:
        return self.planned_seed if self.planned_seed is not None else self.config.get("seed_everything")

    @property
    def xai_dir(self) -> Path:
        return self.path / XAI_DIR

    # ------------------------------------------------------------------ life cycle
    @property
    def finished(self) -> bool:
        return (self.path / FINISHED_FILE).is_file()

    @property
    def status(self) -> Literal["finished", "interrupted", "new"]:
        """``interrupted``: not finished, with a checkpoint to resume from (``last.ckpt`` or an epoch's)."""
        if self.finished:
            return "finished"
        return "interrupted" if any((self.path / CHECKPOINT_DIR).glob("*.ckpt")) else "new"

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Hold the run folder for this process: a second training into it stops at once, naming the holder.

        The lock file records the owner's pid and host; one left by a process that died on this host
        is stale and is taken over (a lock from another host is never guessed dead: delete it by hand).
        """
        self.path.mkdir(parents=True, exist_ok=True)
        lock = self.path / LOCK_FILE
        owner = {"pid": os.getpid(), "host": socket.gethostname()}
        for _ in range(2):
            try:
                with open(lock, "x") as file:  # exclusive create: atomic on every local file system
                    json.dump(owner, file)
                break
            except FileExistsError:
                holder = _lock_holder(lock)
                if holder is not None and _alive(holder):
                    raise RunError(
                        f"Run folder '{self.path}' is in use by process {holder.get('pid')} on "
                        f"{holder.get('host')} (lock file '{lock}'). Wait for it to end, or train into another "
                        "--run_name / --experiment_dir."
                    ) from None
                lock.unlink(missing_ok=True)  # stale: its process is gone
        try:
            yield
        finally:
            if _lock_holder(lock) == owner:
                lock.unlink(missing_ok=True)

    def mark_finished(self, metrics: dict[str, float]) -> None:
        """Mark the run as complete (``finished.json`` with its final metrics): re-runs skip it."""
        record = {"finished": time.strftime("%Y-%m-%dT%H:%M:%S"), "metrics": metrics}
        (self.path / FINISHED_FILE).write_text(json.dumps(record, indent=2))

    # ------------------------------------------------------------------ what it saved
    def checkpoint(self, which: Checkpoint = "best") -> Path:
        """Path of the best checkpoint (as the run's ModelCheckpoint ranked them) or of ``last.ckpt``."""
        folder = self.path / CHECKPOINT_DIR
        last = folder / LAST_CHECKPOINT
        if which == "last":
            if not last.is_file():
                raise RunError(f"Run '{self.path}' has no '{last}'; did it finish an epoch?")
            return last
        candidates = {p.name: p for p in folder.glob("*.ckpt") if p.name != LAST_CHECKPOINT}
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
        from xai_lightning.checkpoints import load_checkpoint

        state = load_checkpoint(last)
        for key, callback_state in state.get("callbacks", {}).items():
            if key.startswith("ModelCheckpoint") and callback_state.get("best_model_path"):
                return Path(callback_state["best_model_path"]).name
        return None

    def scoring(self) -> ScoringConfig | None:
        """The scoring configuration its AttributionCallback recorded (None: a run from before the record)."""
        from xai_lightning.scoring import ScoringConfig

        return ScoringConfig.read(self.xai_dir)

    def callback_options(self) -> dict[str, Any]:
        """The ``init_args`` of the run's AttributionCallback in its saved config ({} when it had none)."""
        callbacks = (self.config.get("trainer") or {}).get("callbacks") or []
        for callback in callbacks if isinstance(callbacks, list) else [callbacks]:
            if isinstance(callback, dict) and str(callback.get("class_path", "")).endswith("AttributionCallback"):
                return dict(callback.get("init_args") or {})
        return {}

    def load_model(self, which: Checkpoint = "best") -> MultiTaskClassifier:
        from xai_lightning.models.multitask import MultiTaskClassifier

        import pickle

        from xai_lightning.checkpoints import refusal

        path = self.checkpoint(which)
        try:
            return MultiTaskClassifier.load_from_checkpoint(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as error:  # more than tensors and plain data: it could run code
            raise refusal(path, error) from None
        except Exception as error:  # a checkpoint from another code version, a truncated file, ...
            raise RunError(f"Checkpoint '{path}' does not load ({type(error).__name__}: {error}).") from error

    @property
    def manifest(self) -> dict:
        """The run's ``manifest.json`` ({} for a run without one)."""
        path = self.path / MANIFEST_FILE
        return json.loads(path.read_text()) if path.is_file() else {}

    @property
    def backbone(self) -> str:
        """The run's ``model.backbone`` as its saved config records it (the model's default when it does not)."""
        from xai_lightning.models.backbones import DEFAULT_BACKBONE  # torchvision only when asked

        return (self.config.get("model") or {}).get("backbone") or DEFAULT_BACKBONE

    @property
    def weights(self) -> str | None:
        """What the encoder started from, as the manifest records it (``imagenet`` or ``scratch``; None: unknown)."""
        return (self.manifest.get("model") or {}).get("weights")

    def data_root(self) -> Path:
        """The run's dataset root; a relative one as seen from where the run was trained, not from here.

        Runs record their working directory in the manifest (older ones the resolved root itself).
        """
        root = Path(self.config["data"]["root"])
        if root.is_absolute():
            return root
        manifest = self.manifest
        if manifest.get("working_dir"):
            return Path(manifest["working_dir"]) / root
        recorded = (manifest.get("data") or {}).get("root")
        return Path(recorded) if recorded and Path(recorded).is_dir() else root

    def load_datamodule(self) -> MVTecDataModule:
        """The run's data module, rebuilt from its saved config, serving the split it was trained with.

        The split is read from the run's ``split.csv`` (not made anew from what is on disk now, which can
        differ once images were added); a run without one is split again from its config's split seed.
        """
        from pytorch_lightning.cli import LightningArgumentParser

        from xai_lightning.data.datamodule import MVTecDataModule

        parser = LightningArgumentParser(exit_on_error=False)
        parser.add_lightning_class_args(MVTecDataModule, "data", subclass_mode=False)
        data_config = parser.parse_object({"data": {**self.config["data"], "root": str(self.data_root())}})
        data = parser.instantiate_classes(data_config).data
        if (self.path / SPLIT_FILE).is_file():
            data.restore_split(self.path / SPLIT_FILE)
        return data

    def load(self, which: Checkpoint = "best") -> LoadedRun:
        """The checkpoint's model in eval mode and the data module set up: everything evaluation reads, once."""
        model = self.load_model(which).eval()
        data = self.load_datamodule()
        data.setup()
        return LoadedRun(self, model, data, which)


@dataclass
class LoadedRun:
    """A run with its model and data in memory, so each part of an evaluation reuses them (images decode once)."""

    run: Run
    model: MultiTaskClassifier
    data: MVTecDataModule
    checkpoint: Checkpoint

    @property
    def class_names(self) -> list[str]:
        return list(self.model.class_names)

    def sample(self, split: str, per_class: int | None, seed: int = 0) -> tuple[dict, list[str]] | None:
        """The seeded sample of at most ``per_class`` defect images per class of ``split`` as one batch, with
        their image ids (None when the split has none); see :func:`~xai_lightning.scoring.select_images`."""
        import torch

        from xai_lightning.scoring import select_images

        frame = self.data.frame(split)
        positions = select_images(frame, per_class, seed=seed)
        if not positions:
            return None
        subset = torch.utils.data.Subset(self.data.dataset(split), positions)
        batch = next(iter(torch.utils.data.DataLoader(subset, batch_size=len(positions))))
        return batch, frame.loc[batch["index"].tolist(), "image_id"].tolist()

    def sample_ids(self, split: str, per_class: int | None, seed: int = 0) -> list[str]:
        """The image ids of :meth:`sample`'s images, without loading them."""
        from xai_lightning.scoring import select_images

        frame = self.data.frame(split).reset_index(drop=True)
        return frame.loc[select_images(frame, per_class, seed=seed), "image_id"].tolist()


def _lock_holder(lock: Path) -> dict | None:
    try:
        return json.loads(lock.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None  # being written, or damaged: nobody can be said to hold it


def _alive(holder: dict) -> bool:
    """Whether the lock's process still runs (a lock from another host is assumed held)."""
    if holder.get("host") != socket.gethostname():
        return True
    try:
        os.kill(int(holder["pid"]), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, KeyError, ValueError, TypeError):
        return True
    return True


def as_loaded(run: Run | LoadedRun, checkpoint: Checkpoint = "best") -> LoadedRun:
    """A loaded run as it is; a run on disk loaded (for callers that use it once)."""
    return run if isinstance(run, LoadedRun) else run.load(checkpoint)


def find_runs(experiment_dir: str | Path) -> list[Run]:
    """Finished runs under ``experiment_dir`` (or the run itself when it is one), sorted by seed and name.

    A run is finished when it wrote ``finished.json`` (train.py does after fit and test); interrupted
    runs are left out with a note, and an experiment without any finished run is an error.
    """
    root = Path(experiment_dir)
    if not root.is_dir():
        raise RunError(f"Experiment directory '{root}' does not exist.")
    folders = [root] if (root / CONFIG_FILE).is_file() else sorted(p for p in root.iterdir() if p.is_dir())
    candidates = [Run(p) for p in folders if (p / CONFIG_FILE).is_file()]
    runs = [run for run in candidates if run.finished]
    unfinished = [run.name for run in candidates if run not in runs]
    # A run folder (it has checkpoints or is marked finished) that lost its config cannot be rebuilt: say so.
    configless = [
        p.name
        for p in folders
        if not (p / CONFIG_FILE).is_file() and ((p / CHECKPOINT_DIR).is_dir() or (p / FINISHED_FILE).is_file())
    ]
    if configless:
        print(
            f"[evaluate] leaving out run folders without {CONFIG_FILE} in {root}: {', '.join(configless)} "
            f"(the config is what rebuilds a run's model and data; restore it from the W&B run's files)"
        )
    if not runs:
        raise RunError(
            f"No finished run in '{root}' (a finished run folder holds {CONFIG_FILE}, {CHECKPOINT_DIR}/ "
            f"and {FINISHED_FILE})"
            + (f"; unfinished: {', '.join(unfinished)}" if unfinished else "")
            + (f"; without {CONFIG_FILE}: {', '.join(configless)}" if configless else "")
            + ". Train with `python train.py --config ... --experiment_dir "
            + str(root)
            + " --seeds 0-4`; "
            "re-running that command finishes interrupted seeds."
        )
    if unfinished:
        print(
            f"[evaluate] leaving out unfinished runs in {root}: {', '.join(unfinished)} "
            "(re-run the experiment to finish them)"
        )
    return sorted(runs, key=lambda run: (run.seed if run.seed is not None else -1, run.name))
