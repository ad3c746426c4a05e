"""Multi-seed experiments: seeds parsed, finished seeds skipped, interrupted seeds resumed."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from conftest import REPO, smoke_args
from xai_lightning.errors import ConfigError
from xai_lightning.experiment import FINISHED_FILE, parse_seeds, resolve_experiment_dir, run_experiment


def test_parse_seeds():
    assert parse_seeds("0-4") == [0, 1, 2, 3, 4]
    assert parse_seeds("3,1,1,7-8") == [3, 1, 7, 8]
    for bad in ("", "a-b", "1,,x"):
        with pytest.raises(ConfigError, match="--seeds"):
            parse_seeds(bad)


def test_experiment_dir_follows_the_last_config_or_flag(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({"experiment_dir": "runs/from_yaml"}))
    assert str(resolve_experiment_dir(["--config", str(config)])) == "runs/from_yaml"
    assert str(resolve_experiment_dir(["--config", str(config), "--experiment_dir", "x"])) == "x"
    assert str(resolve_experiment_dir(["--experiment_dir=x", "--config", str(config)])) == "runs/from_yaml"
    assert str(resolve_experiment_dir([])) == "runs/default"


@pytest.mark.parametrize(
    "extra, yaml_options, option",
    [
        ([], {"run_name": "shared"}, "run_name"),
        (["--run_name", "shared"], {}, "run_name"),
        (["--resume", "runs/x/seed0/checkpoints/last.ckpt"], {}, "resume"),
        ([], {"resume": "last"}, "resume"),
        (["--seed_everything", "3"], {}, "--seed_everything"),
    ],
)
def test_options_that_cannot_hold_for_every_seed_are_refused(tmp_path, extra, yaml_options, option):
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({"experiment_dir": str(tmp_path / "exp"), "seed_everything": 0, **yaml_options}))
    with pytest.raises(ConfigError, match=f"With --seeds, leave out `?{option}"):
        run_experiment("train.py", ["--config", str(config), *extra], [0, 1])
    assert not (tmp_path / "exp").exists()


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGKILL])
def test_killing_the_launcher_stops_its_seed_processes(smoke_root, tmp_path, signum):
    args = smoke_args(smoke_root, tmp_path, "--trainer.max_epochs", "1000", "--trainer.callbacks", "[]")
    launcher = subprocess.Popen(
        [sys.executable, str(REPO / "train.py"), *args, "--seeds", "0"],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    lock = tmp_path / "seed0" / "run.lock"
    deadline = time.monotonic() + 120
    while not (lock.is_file() and lock.read_text()) and time.monotonic() < deadline:
        time.sleep(0.2)
    seed_pid = json.loads(lock.read_text())["pid"]  # the seed process holds its run folder
    launcher.send_signal(signum)
    launcher.wait(timeout=60)
    deadline = time.monotonic() + 60
    while _alive(seed_pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _alive(seed_pid), f"seed process {seed_pid} still trains after the launcher got signal {signum}"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with contextlib.suppress(FileNotFoundError):  # a zombie has ended: it waits only to be reaped by its parent
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z"
    return False


@pytest.mark.slow
def test_two_seeds_run_then_rerun_skips_finished_and_resumes_interrupted(smoke_root, tmp_path):
    args = smoke_args(
        smoke_root, tmp_path, "--trainer.max_epochs", "1", "--trainer.callbacks", "[]", "--test_after_fit", "false"
    )
    command = [sys.executable, str(REPO / "train.py"), *args, "--seeds", "0-1"]
    first = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    for seed in (0, 1):
        run_dir = tmp_path / f"seed{seed}"
        assert (run_dir / FINISHED_FILE).is_file()
        assert json.loads((run_dir / "manifest.json").read_text())["seed"] == seed
    # Seed 1 "interrupted": its marker gone, its last checkpoint still there.
    (tmp_path / "seed1" / FINISHED_FILE).unlink()
    wandb_id = json.loads((tmp_path / "seed1" / "manifest.json").read_text())["wandb"]["id"]
    again = subprocess.run(
        [*command[:-1], "0-1", "--trainer.max_epochs", "2"], capture_output=True, text=True, cwd=tmp_path, timeout=600
    )
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert "seed 0: already finished" in again.stdout
    assert "seed 1: resuming from" in again.stdout
    assert (tmp_path / "seed1" / FINISHED_FILE).is_file()
    runs = sorted((tmp_path / "seed1" / "wandb").glob("offline-run-*"))
    assert len(runs) == 2 and all(run.name.endswith(wandb_id) for run in runs)
    assert len(list((tmp_path / "seed0" / "wandb").glob("offline-run-*"))) == 1  # not retrained


def test_sweep_config_names_real_options(capsys):
    """Every parameter of the W&B sweep must be an option the training CLI accepts."""
    from xai_lightning.cli import XaiLightningCLI

    sweep = yaml.safe_load((REPO / "configs" / "sweep_seeds.yaml").read_text())
    config = sweep["command"][sweep["command"].index("--config") + 1]
    assert (REPO / config).is_file() and (REPO / sweep["program"]).is_file()
    args = ["--config", str(REPO / config)]
    args += [f"--{name}={spec['values'][-1]}" for name, spec in sweep["parameters"].items()]
    with pytest.raises(SystemExit) as done:
        XaiLightningCLI(args=[*args, "--print_config"])
    assert done.value.code in (0, None)
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["seed_everything"] == sweep["parameters"]["seed_everything"]["values"][-1]


@pytest.mark.slow
def test_evaluate_a_two_seed_experiment_into_tables_figures_and_report(smoke_root, tmp_path):
    import pandas as pd

    from xai_lightning.evaluate import main as evaluate

    args = smoke_args(smoke_root, tmp_path, "--trainer.max_epochs", "2", "--test_after_fit", "false")
    done = subprocess.run(
        [sys.executable, str(REPO / "train.py"), *args, "--seeds", "0-1", "--parallel", "2"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert (tmp_path / "logs" / "seed1.log").is_file()
    out = tmp_path / "evaluation"
    checks = [
        "--faithfulness-steps",
        "4",
        "--check-images-per-class",
        "1",
        "--robustness-samples",
        "2",
        "--stability-runs",
        "2",
    ]
    metrics = evaluate([str(tmp_path), "--out", str(out), "--bootstrap", "200", *checks])
    assert set(metrics["seed"]) == {0, 1}

    # Table 1 agrees with the per-seed model metrics: mean and sample std over the two seeds.
    table = pd.read_csv(out / "tables" / "model_metrics.csv").set_index("split")
    test_acc = metrics[(metrics["split"] == "test") & (metrics["metric"] == "acc")]["value"]
    assert table.loc["test", "acc"] == f"{test_acc.mean():.3f} ± {test_acc.std(ddof=1):.3f}"

    # Table 2: rows split × class, one column per method the runs' callback used; values from per_seed.csv.
    win = pd.read_csv(out / "tables" / "win_rate.csv")
    assert {"gradcam", "saliency", "segmentation_head", "random"} <= set(win.columns)
    assert set(win["split"]) == {"train", "test"} and {"overall", "crack", "print"} <= set(win["class"])
    per_seed = pd.read_csv(out / "tables" / "per_seed.csv")
    seeds = per_seed.query("metric == 'win_rate' and split == 'test' and `class` == 'overall' and method == 'gradcam'")[
        "value"
    ]
    cell = win.query("split == 'test' and `class` == 'overall'")["gradcam"].item()
    assert cell == f"{seeds.mean():.3f} ± {seeds.std(ddof=1):.3f}"
    overall = per_seed.query("metric == 'win_rate' and `class` == 'overall'")
    assert (overall.groupby(["seed", "split"])["value"].sum() - 1).abs().max() < 1e-9

    # Does the explanation tell the truth: each check's tidy table, its section and its figure.
    randomization = pd.read_csv(out / "randomization.csv")
    assert set(randomization["seed"]) == {0, 1} and randomization["image_id"].nunique() == 4
    assert set(pd.read_csv(out / "stability.csv")["method"]) == {"random"}  # the smoke config's one stochastic method
    assert set(pd.read_parquet(out / "agreement.parquet")["method_a"]) <= set(win.columns)
    faithfulness = pd.read_csv(out / "faithfulness_curves.csv")
    assert set(faithfulness["curve"]) == {"deletion", "insertion"} and faithfulness["probability"].between(0, 1).all()
    cost = pd.read_csv(out / "tables" / "cost_quality.csv")
    assert {"ms / image", "TKO", "deletion AUC", "infidelity", "max-sensitivity", "randomisation |ρ|"} <= set(
        cost.columns
    )
    names = (
        "win_rate_bars",
        "tko_distributions",
        "heatmap_grid",
        "training_curves",
        "faithfulness_curves",
        "randomization_curves",
        "agreement_heatmap",
    )
    for name in names:
        assert (out / "figures" / f"{name}.png").stat().st_size > 10_000, name
    report = (out / "report.md").read_text()
    assert "mean ± std over 2 seeds" in report and "SYNTHETIC" in report and "Wilcoxon" in report
    for heading in (
        "Deletion and insertion curves",
        "cascading randomisation",
        "Run-to-run stability",
        "Cross-method agreement",
        "Cost and quality",
    ):
        assert heading in report, heading
    for suffix in ("csv", "md", "tex"):
        assert (out / "tables" / f"tko.{suffix}").is_file()
    assert list((out / "wandb").glob("offline-run-*"))  # the summary run
