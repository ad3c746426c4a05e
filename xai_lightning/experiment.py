"""Run one config over many seeds as an experiment: one run (and W&B run) per seed, one W&B group.

``python train.py --config configs/quickstart.yaml --seeds 0-9 --parallel 2`` plans the seeds in
``<experiment_dir>/seed<N>/``: finished ones are skipped, interrupted ones resume from ``last.ckpt``,
the rest start; each seed runs in its own process, so one failing seed never stops the others.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from xai_lightning.errors import ConfigError

# FINISHED_FILE is re-exported: callers of the launcher read it from here.
from xai_lightning.runs import CHECKPOINT_DIR, FINISHED_FILE, LOGS_DIR, Run  # noqa: F401

DEFAULT_EXPERIMENT_DIR = "runs/default"


def parse_seeds(spec: str) -> list[int]:
    """Seeds from ``"0-4"``, ``"0,3,7"`` or ``"0-2,10"`` (ranges inclusive), in order, without repeats.

    >>> parse_seeds("0-2,10")
    [0, 1, 2, 10]
    """
    seeds: list[int] = []
    try:
        for part in filter(None, (p.strip() for p in spec.split(","))):
            low, _, high = part.partition("-")
            values = range(int(low), int(high) + 1) if high else [int(low)]
            seeds += [s for s in values if s not in seeds]
    except ValueError:
        raise ConfigError(f"`--seeds {spec}`: write seeds as a range and/or list, e.g. 0-4 or 0,3,7.") from None
    if not seeds:
        raise ConfigError(f"`--seeds {spec}` names no seed; e.g. --seeds 0-4.")
    return seeds


def config_value(args: list[str], name: str, default: Any = None) -> Any:
    """The value the training CLI will give option ``name`` (dotted: ``model.backbone``): the last ``--config``
    or ``--<name>`` wins.

    Mirrors jsonargparse's left-to-right order for the few options the launcher and the ablation need,
    without building the model (which the seed processes do).
    """
    value = default
    for i, arg in enumerate(args):
        flag, _, inline = arg.partition("=")
        given = inline or (args[i + 1] if i + 1 < len(args) else None)
        if flag == "--config" and given:
            section = yaml.safe_load(Path(given).read_text()) or {}
            *parents, key = name.split(".")
            for parent in parents:
                section = section.get(parent) or {}
            value = section.get(key, value)
        elif flag == f"--{name}" and given:
            value = given
    return value


def resolve_experiment_dir(args: list[str]) -> Path:
    """The ``experiment_dir`` the training CLI will use (see :func:`config_value`)."""
    return Path(config_value(args, "experiment_dir", DEFAULT_EXPERIMENT_DIR))


def check_launcher_args(args: list[str], parallel: int) -> None:
    """Refuse the training options that cannot hold for every seed, naming where they were set."""
    if any(arg.partition("=")[0] == "--seed_everything" for arg in args):  # a config's seed is overridden per seed
        raise ConfigError("With --seeds, leave out --seed_everything: each seed process gets its seed from --seeds.")
    for name, why in (
        ("run_name", "each seed gets its own run folder, seed<N>"),
        ("resume", "each interrupted seed resumes from its own newest checkpoint"),
    ):
        if config_value(args, name) not in (None, "null"):
            raise ConfigError(f"With --seeds, leave out `{name}` (on the command line or in a --config file): {why}.")
    if parallel < 1:
        raise ConfigError(f"`--parallel {parallel}`: use 1 or more processes.")


def plan(experiment_dir: Path, seeds: list[int]) -> list[Run]:
    """One run per seed, in the experiment folder, each knowing whether it is new, interrupted or finished."""
    return [Run.for_seed(experiment_dir, seed) for seed in seeds]


def seed_command(train_script: str, args: list[str], run: Run) -> list[str]:
    """The command line of one seed's process (resuming from its newest intact checkpoint if it was interrupted)."""
    command = [sys.executable, train_script, *args, "--seed_everything", str(run.planned_seed)]
    if run.status == "interrupted":
        command += ["--resume", "last"]
    return command


def seed_environment(parallel: int) -> dict[str, str]:
    """The seed processes' environment: this one's, without a W&B service to share, with a fair thread count."""
    # An inherited WANDB_SERVICE would make every seed log through one foreign W&B service, which keeps a killed
    # seed's run open and then refuses to resume it ("run ID in use"); each seed starts its own.
    env = {key: value for key, value in os.environ.items() if key != "WANDB_SERVICE"}
    if parallel > 1:
        # Processes sharing a CPU: one thread pool each of (cores / processes), not all cores each.
        env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // parallel)))
    return env


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """Linux: the seed process gets SIGTERM when the launcher dies, even by SIGKILL (``PR_SET_PDEATHSIG``)."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG
    except OSError:
        pass  # not Linux: the signal handlers of run_experiment still stop the seeds on SIGINT / SIGTERM


@contextlib.contextmanager
def _seeds_stop_with_launcher(running: list) -> Iterator[None]:
    """On SIGINT or SIGTERM to the launcher, stop its seed processes before it exits (they resume on a re-run)."""

    def stop(signum, frame):
        for _, process, _ in running:
            process.terminate()
        for _, process, _ in running:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
        raise SystemExit(128 + signum)

    if threading.current_thread() is not threading.main_thread():  # only the main thread may set handlers
        yield
        return
    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def run_experiment(train_script: str, args: list[str], seeds: list[int], parallel: int = 1) -> dict[int, str]:
    """Run the seeds that still need it, ``parallel`` processes at a time; return each seed's outcome."""
    check_launcher_args(args, parallel)
    experiment_dir = resolve_experiment_dir(args)
    runs = plan(experiment_dir, seeds)
    outcome: dict[int, str] = {}
    pending = []
    for run in runs:
        if run.finished:
            outcome[run.seed] = "already finished (skipped)"
            print(f"[experiment] seed {run.seed}: already finished in {run.path}, skipping", flush=True)
        else:
            pending.append(run)
    env = seed_environment(parallel)
    logs = experiment_dir / LOGS_DIR
    running: list[tuple[Run, subprocess.Popen, object]] = []
    with _seeds_stop_with_launcher(running):
        _run_pending(pending, running, train_script, args, env, parallel, logs, outcome)
    _print_summary(experiment_dir, seeds, outcome)
    return outcome


def _run_pending(pending, running, train_script, args, env, parallel, logs, outcome) -> None:
    """Start the pending seeds, ``parallel`` at a time, and record each one's outcome as it ends."""
    start = {"env": env, "preexec_fn": _die_with_parent if sys.platform.startswith("linux") else None}
    while pending or running:
        while pending and len(running) < parallel:
            run = pending.pop(0)
            verb = f"resuming from {run.path / CHECKPOINT_DIR}" if run.status == "interrupted" else "starting"
            print(f"[experiment] seed {run.seed}: {verb}", flush=True)
            command = seed_command(train_script, args, run)
            if parallel > 1:
                logs.mkdir(parents=True, exist_ok=True)
                log = open(logs / f"{run.name}.log", "a")
                running.append((run, subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, **start), log))
            else:
                running.append((run, subprocess.Popen(command, **start), None))
        for item in list(running):
            run, process, log = item
            if process.poll() is None:
                continue
            running.remove(item)
            if log is not None:
                log.close()
            outcome[run.seed] = _outcome(run, process.returncode)
            print(f"[experiment] seed {run.seed}: {outcome[run.seed]}", flush=True)
        time.sleep(0.2)


def _outcome(run: Run, returncode: int) -> str:
    if run.finished:
        return "finished" if returncode == 0 else f"failed (exit {returncode}) after marking {run.path} finished"
    if returncode == 0:
        return f"failed: exited 0 but {run.path} was not marked finished (see its output)"
    return f"failed (exit {returncode})"


def write_finished(run_dir: Path, metrics: dict[str, float]) -> None:
    """Mark a run as complete (``finished.json`` with its final metrics): re-runs skip it."""
    Run(Path(run_dir)).mark_finished(metrics)


def _print_summary(experiment_dir: Path, seeds: list[int], outcome: dict[int, str]) -> None:
    done = sum(state.startswith(("finished", "already")) for state in outcome.values())
    lines = [f"[experiment] {experiment_dir}: {done} of {len(seeds)} seeds finished"]
    lines += [f"  seed {seed}: {outcome.get(seed, 'not run')}" for seed in seeds]
    failed = [seed for seed, state in outcome.items() if state.startswith("failed")]
    if failed:
        lines.append(f"  re-run the same command to retry seeds {failed} (finished seeds are skipped).")
    lines.append(f"  evaluate with: python evaluate.py {experiment_dir}")
    print("\n".join(lines), flush=True)


def split_launcher_args(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    """Separate ``--seeds`` / ``--parallel`` (the launcher's) from the training CLI's own arguments."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--seeds", default=None)
    parser.add_argument("--parallel", type=int, default=1)
    return parser.parse_known_args(argv)
