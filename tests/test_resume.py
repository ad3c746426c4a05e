"""A resumed run is the same run: killed with SIGKILL mid-epoch and resumed, it ends as an uninterrupted one.

Compared bit for bit on the CPU: the final metrics, every per-image attribution table, every weight
tensor, the attribution callback's history; the W&B offline run continues under the same id.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
from conftest import REPO, smoke_args

from xai_lightning.checkpoints import AtomicCheckpointIO, DamagedCheckpointError, load_checkpoint
from xai_lightning.cli import main
from xai_lightning.errors import ConfigError
from xai_lightning.tracking import read_wandb_history

pytestmark = pytest.mark.slow

#: Epoch and batch the killed run dies at: mid-epoch, after a checkpoint (end of epoch 0) exists.
KILL = ["--trainer.callbacks+=faults.KillAt"]


@pytest.fixture(scope="module")
def uninterrupted(smoke_root, tmp_path_factory) -> Path:
    """The smoke config trained once without interruption: what every resumed run must equal."""
    experiment = tmp_path_factory.mktemp("uninterrupted")
    main(smoke_args(smoke_root, experiment))
    return experiment / "seed0"


def _subprocess_env() -> dict[str, str]:
    """The test process's environment for a training subprocess, which can import the fault callbacks.

    WANDB_SERVICE is left out: a child would otherwise log through this process's W&B service, which keeps
    a killed child's run open (and refuses its resumption as "run ID in use").
    """
    env = {key: value for key, value in os.environ.items() if key != "WANDB_SERVICE"}
    env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).parent), env.get("PYTHONPATH", "")])
    return env


def _train(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    command = [sys.executable, str(REPO / "train.py"), *args]
    return subprocess.run(command, capture_output=True, text=True, cwd=cwd, env=_subprocess_env(), timeout=600)


def _assert_same_run(resumed: Path, uninterrupted: Path) -> None:
    finished = [json.loads((run / "finished.json").read_text())["metrics"] for run in (resumed, uninterrupted)]
    assert finished[0] == finished[1]
    tables = sorted(p.name for p in (uninterrupted / "xai").glob("*.csv"))
    assert tables == sorted(p.name for p in (resumed / "xai").glob("*.csv")) and "test_epoch002.csv" in tables
    for name in tables:
        assert (resumed / "xai" / name).read_bytes() == (uninterrupted / "xai" / name).read_bytes(), name
    states = [load_checkpoint(run / "checkpoints" / "last.ckpt") for run in (resumed, uninterrupted)]
    weights = [state["state_dict"] for state in states]
    assert weights[0].keys() == weights[1].keys()
    different = [name for name in weights[0] if not torch.equal(weights[0][name], weights[1][name])]
    assert not different, f"{len(different)} of {len(weights[0])} weight tensors differ, e.g. {different[:3]}"
    histories = [next(v for k, v in s["callbacks"].items() if k.startswith("AttributionCallback")) for s in states]
    assert histories[0]["history"] == histories[1]["history"] and histories[0]["history"]


def _wandb_history(run_dir: Path) -> pd.DataFrame:
    (path,) = (run_dir / "wandb").glob("offline-run-*")
    return read_wandb_history(path)


def test_a_run_killed_mid_epoch_and_resumed_is_the_uninterrupted_run(smoke_root, uninterrupted, tmp_path):
    killed = _train([*smoke_args(smoke_root, tmp_path), *KILL], tmp_path)
    assert killed.returncode == -9, killed.stderr[-3000:]
    run_dir = tmp_path / "seed0"
    assert not (run_dir / "finished.json").exists() and (run_dir / "checkpoints" / "last.ckpt").is_file()

    main(smoke_args(smoke_root, tmp_path, "--resume", "last"))
    _assert_same_run(run_dir, uninterrupted)
    # The W&B offline run continues: one id for both processes, every epoch's validation loss as uninterrupted.
    wandb_runs = sorted((run_dir / "wandb").glob("offline-run-*"))
    wandb_id = json.loads((run_dir / "manifest.json").read_text())["wandb"]["id"]
    assert len(wandb_runs) == 2 and all(path.name.endswith(wandb_id) for path in wandb_runs)
    # The resumed process logs from the checkpoint's epoch on, the values the uninterrupted run logged. (What the
    # killed process logged is kept as far as W&B had flushed it: its service writes 32 KiB blocks.)
    resumed = read_wandb_history(wandb_runs[-1]).dropna(subset=["val/loss"]).set_index("epoch")["val/loss"]
    expected = _wandb_history(uninterrupted).dropna(subset=["val/loss"]).set_index("epoch")["val/loss"]
    assert resumed.index.tolist() == [1] and resumed.tolist() == expected.loc[[1]].tolist()


def test_a_killed_seed_rerun_by_the_launcher_is_the_uninterrupted_run(smoke_root, uninterrupted, tmp_path):
    killed = _train([*smoke_args(smoke_root, tmp_path), *KILL, "--seeds", "0"], tmp_path)
    assert killed.returncode == 1 and "seed 0: failed (exit -9)" in killed.stdout, killed.stdout[-3000:]
    again = _train([*smoke_args(smoke_root, tmp_path), "--seeds", "0"], tmp_path)
    assert again.returncode == 0 and "seed 0: resuming" in again.stdout, again.stdout[-3000:] + again.stderr[-3000:]
    _assert_same_run(tmp_path / "seed0", uninterrupted)


def test_a_truncated_last_checkpoint_falls_back_to_the_newest_that_loads(smoke_root, uninterrupted, tmp_path):
    run_dir = tmp_path / "seed0"
    shutil.copytree(uninterrupted, run_dir, ignore=shutil.ignore_patterns("wandb", "finished.json"))
    last = run_dir / "checkpoints" / "last.ckpt"
    data = last.read_bytes()
    last.write_bytes(data[: len(data) // 2])  # what a full disk left behind
    with pytest.raises(DamagedCheckpointError, match="last.ckpt.*damaged or incomplete"):
        load_checkpoint(last)
    (best,) = [p for p in run_dir.glob("checkpoints/epoch*.ckpt")]
    with pytest.warns(UserWarning, match=f"last.ckpt.*Resuming from '.*{best.name}' instead"):
        main(smoke_args(smoke_root, tmp_path, "--resume", "last", "--trainer.max_epochs", "3"))
    assert (run_dir / "finished.json").is_file() and load_checkpoint(last)["epoch"] == 2


def test_resume_last_without_a_checkpoint_is_refused(smoke_root, tmp_path):
    with pytest.raises(ConfigError, match="--resume last.*holds no checkpoint.*Leave out --resume"):
        main(smoke_args(smoke_root, tmp_path, "--resume", "last"))
    with pytest.raises(ConfigError, match="--resume .*missing.ckpt.*no such checkpoint file"):
        main(smoke_args(smoke_root, tmp_path, "--resume", str(tmp_path / "missing.ckpt")))


def test_a_full_disk_while_checkpointing_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    import errno

    from xai_lightning.atomic import WriteError

    path = tmp_path / "last.ckpt"
    AtomicCheckpointIO().save_checkpoint({"epoch": 1}, path)
    mode = path.stat().st_mode & 0o777

    def fills_the_disk(obj, file, *args, **kwargs):
        file.write(b"half a checkpoint")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", fills_the_disk)
    with pytest.raises(WriteError, match=r"last.ckpt' \(the disk is full\).*unchanged"):
        AtomicCheckpointIO().save_checkpoint({"epoch": 2}, path)
    assert load_checkpoint(path) == {"epoch": 1} and [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]
    umask = os.umask(0)
    os.umask(umask)
    assert mode == 0o666 & ~umask  # not mkstemp's owner-only mode
