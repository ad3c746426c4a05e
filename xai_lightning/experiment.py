"""Run one config over many seeds as an experiment: one run (and W&B run) per seed, one W&B group.

``python train.py --config configs/quickstart.yaml --seeds 0-9 --parallel 2`` plans the seeds in
``<experiment_dir>/seed<N>/``: finished ones are skipped, interrupted ones resume from ``last.ckpt``,
the rest start; each seed runs in its own process, so one failing seed never stops the others.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import yaml

from xai_lightning.errors import ConfigError
# FINISHED_FILE is re-exported: callers of the launcher read it from here.
from xai_lightning.runs import FINISHED_FILE, LOGS_DIR, Run  # noqa: F401

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


def resolve_experiment_dir(args: list[str]) -> Path:
    """The ``experiment_dir`` the training CLI will use: the last ``--config`` or ``--experiment_dir`` wins.

    Mirrors jsonargparse's left-to-right order for the one option the launcher needs, without
    building the model (which the seed processes do).
    """
    experiment_dir = DEFAULT_EXPERIMENT_DIR
    for i, arg in enumerate(args):
        name, _, inline = arg.partition("=")
        value = inline or (args[i + 1] if i + 1 < len(args) else None)
        if name == "--config" and value:
            config = yaml.safe_load(Path(value).read_text()) or {}
            experiment_dir = config.get("experiment_dir", experiment_dir)
        elif name == "--experiment_dir" and value:
            experiment_dir = value
    return Path(experiment_dir)


def plan(experiment_dir: Path, seeds: list[int]) -> list[Run]:
    """One run per seed, in the experiment folder, each knowing whether it is new, interrupted or finished."""
    return [Run.for_seed(experiment_dir, seed) for seed in seeds]


def seed_command(train_script: str, args: list[str], run: Run) -> list[str]:
    """The command line of one seed's process (resuming from its last checkpoint if it was interrupted)."""
    command = [sys.executable, train_script, *args, "--seed_everything", str(run.planned_seed)]
    if run.status == "interrupted":
        command += ["--resume", str(run.last_checkpoint)]
    return command


def run_experiment(train_script: str, args: list[str], seeds: list[int], parallel: int = 1) -> dict[int, str]:
    """Run the seeds that still need it, ``parallel`` processes at a time; return each seed's outcome."""
    if any(a.partition("=")[0] in ("--run_name", "--seed_everything") for a in args):
        raise ConfigError("With --seeds, leave out --run_name and --seed_everything: each seed gets its own run.")
    if parallel < 1:
        raise ConfigError(f"`--parallel {parallel}`: use 1 or more processes.")
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
    env = dict(os.environ)
    if parallel > 1:
        # Processes sharing a CPU: one thread pool each of (cores / processes), not all cores each.
        env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // parallel)))
    logs = experiment_dir / LOGS_DIR
    running: list[tuple[Run, subprocess.Popen, object]] = []
    while pending or running:
        while pending and len(running) < parallel:
            run = pending.pop(0)
            verb = "resuming from " + str(run.last_checkpoint) if run.status == "interrupted" else "starting"
            print(f"[experiment] seed {run.seed}: {verb}", flush=True)
            command = seed_command(train_script, args, run)
            if parallel > 1:
                logs.mkdir(parents=True, exist_ok=True)
                log = open(logs / f"{run.name}.log", "a")
                running.append((run, subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT), log))
            else:
                running.append((run, subprocess.Popen(command, env=env), None))
        for item in list(running):
            run, process, log = item
            if process.poll() is None:
                continue
            running.remove(item)
            if log is not None:
                log.close()
            outcome[run.seed] = (
                "finished" if process.returncode == 0 and run.finished else f"failed (exit {process.returncode})"
            )
            print(f"[experiment] seed {run.seed}: {outcome[run.seed]}", flush=True)
        time.sleep(0.2)
    _print_summary(experiment_dir, seeds, outcome)
    return outcome


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
