"""End to end: train.py on the smoke config writes checkpoints, a manifest and an offline W&B run."""

from __future__ import annotations

import importlib.metadata
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from conftest import SMOKE_COUNTS, smoke_args

from xai_lightning.cli import main
from xai_lightning.errors import ConfigError, DatasetError
from xai_lightning.models import MultiTaskClassifier
from xai_lightning.tracking import read_wandb_history

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def smoke_run(smoke_root, tmp_path_factory):
    """One smoke fit (+ test of the best checkpoint), shared by the checks below."""
    experiment = tmp_path_factory.mktemp("experiment")
    cli = main(smoke_args(smoke_root, experiment))
    return cli, experiment / "seed0"


def _history(run_dir: Path) -> pd.DataFrame:
    (wandb_dir,) = (run_dir / "wandb").glob("offline-run-*")
    return read_wandb_history(wandb_dir)


def test_fit_writes_checkpoints_config_split_and_manifest(smoke_run):
    cli, run_dir = smoke_run
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    assert Path(cli.trainer.checkpoint_callback.best_model_path).parent == run_dir / "checkpoints"
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert config["model"]["backbone"] == "resnet18" and config["seed_everything"] == 0
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["seed"] == 0
    assert manifest["data"]["kind"] == "synthetic"
    assert manifest["packages"]["torch"] == importlib.metadata.version("torch")
    assert manifest["packages"]["captum"] == importlib.metadata.version("captum")
    assert set(manifest["git"]) == {"commit", "dirty", "checkout"}
    split = pd.read_csv(run_dir / "split.csv")
    assert len(split) == 30 and set(split["split"]) == {"train", "val", "test"}
    assert manifest["data"]["split_counts"]["val"]["crack"] == 2


def test_offline_wandb_run_holds_the_metrics_of_every_split(smoke_run):
    _, run_dir = smoke_run
    history = _history(run_dir)
    for split in ("train", "val", "test"):
        for metric in ("loss", "loss_ce", "loss_bce", "acc", "balanced_acc", "seg_iou", "acc/crack", "acc/print"):
            assert f"{split}/{metric}" in history.columns, f"{split}/{metric} not logged"
    val = history.dropna(subset=["val/loss"])
    assert len(val) == 2  # one validation per epoch, the sanity check is not logged
    loss = val[["val/loss", "val/loss_ce", "val/loss_bce"]].to_numpy()
    assert loss[:, 0] == pytest.approx(loss[:, 1] + loss[:, 2], rel=1e-5)  # λ = 1 in the smoke config
    (wandb_dir,) = (run_dir / "wandb").glob("offline-run-*")
    assert {"config.yaml", "manifest.json", "split.csv"} <= {p.name for p in (wandb_dir / "files").iterdir()}


def test_logged_test_accuracy_matches_a_recomputation_from_the_best_checkpoint(smoke_run, smoke_root):
    cli, run_dir = smoke_run
    logged = _history(run_dir).dropna(subset=["test/acc"]).iloc[-1]
    model = MultiTaskClassifier.load_from_checkpoint(cli.trainer.checkpoint_callback.best_model_path).eval()
    data = cli.datamodule
    correct = total = 0
    with torch.no_grad():
        for batch in data.test_dataloader():
            correct += (model(batch["image"]).logits.argmax(1) == batch["label"]).sum().item()
            total += len(batch["label"])
    assert total == 10
    assert logged["test/acc"] == pytest.approx(correct / total)


def test_same_config_and_seed_give_the_same_numbers(smoke_run, smoke_root, tmp_path):
    _, run_dir = smoke_run
    main(smoke_args(smoke_root, tmp_path))
    columns = ["val/loss", "val/acc", "train/loss", "val/seg_iou"]
    first = _history(run_dir).dropna(subset=["val/loss"])[columns].reset_index(drop=True)
    again = _history(tmp_path / "seed0").dropna(subset=["val/loss"])[columns].reset_index(drop=True)
    pd.testing.assert_frame_equal(first, again)
    # Final metrics identical, and every per-image attribution table byte for byte.
    finished = [json.loads((d / "finished.json").read_text())["metrics"] for d in (run_dir, tmp_path / "seed0")]
    assert finished[0] == finished[1]
    tables = sorted(p.name for p in (run_dir / "xai").glob("*.csv"))
    assert "test_epoch002.csv" in tables and tables == sorted(
        p.name for p in (tmp_path / "seed0" / "xai").glob("*.csv")
    )
    for name in tables:
        assert (run_dir / "xai" / name).read_bytes() == (tmp_path / "seed0" / "xai" / name).read_bytes(), name


def test_bad_input_stops_before_training(smoke_root, tmp_path):
    with pytest.raises(ConfigError, match="seg_loss_weight"):
        main(smoke_args(smoke_root, tmp_path, "--model.seg_loss_weight", "-1"))
    with pytest.raises(ConfigError, match="Unknown backbone"):
        main(smoke_args(smoke_root, tmp_path, "--model.backbone", "vgg0"))
    with pytest.raises(DatasetError, match="does not exist"):
        main(smoke_args(tmp_path / "missing", tmp_path, "--data.source", "mvtec"))
    assert not list(tmp_path.glob("*/checkpoints/*.ckpt"))


@pytest.mark.parametrize("name", ["../escaped", str(Path("/tmp") / "absolute-run"), "nested/run", ".."])
def test_a_run_name_that_leaves_the_experiment_folder_is_refused(smoke_root, tmp_path, name):
    experiment = tmp_path / "exp"
    with pytest.raises(ConfigError, match="`run_name`.*one folder name"):
        main(smoke_args(smoke_root, experiment, "--run_name", name))
    assert not list(tmp_path.rglob("*.ckpt")) and not (tmp_path / "escaped").exists()


def test_evaluate_rescores_the_best_checkpoint_like_the_training_run(smoke_run):
    from xai_lightning.evaluate import main as evaluate

    _, run_dir = smoke_run
    # Model metrics only (--methods with no names): attributions are tested on their own below.
    table = evaluate([str(run_dir.parent), "--out", str(run_dir.parent / "eval"), "--methods", "--no-wandb"])
    assert set(table["split"]) == {"train", "val", "test"}
    logged = _history(run_dir).dropna(subset=["test/acc"]).iloc[-1]
    test = table[table["split"] == "test"].set_index("metric")["value"]
    for metric in ("acc", "balanced_acc", "loss", "seg_iou", "acc/crack"):
        assert test[metric] == pytest.approx(logged[f"test/{metric}"], rel=1e-5, abs=1e-6)
    assert (run_dir.parent / "eval" / "metrics.csv").is_file()


def test_resume_continues_the_same_wandb_run_and_the_best_checkpoint_is_found(smoke_root, tmp_path):
    from xai_lightning.runs import find_runs

    args = smoke_args(smoke_root, tmp_path, "--test_after_fit", "false", "--trainer.callbacks", "[]")
    main([*args, "--trainer.max_epochs", "1"])
    run_dir = tmp_path / "seed0"
    first_id = json.loads((run_dir / "manifest.json").read_text())["wandb"]["id"]
    main([*args, "--trainer.max_epochs", "2", "--resume", str(run_dir / "checkpoints" / "last.ckpt")])
    runs = sorted((run_dir / "wandb").glob("offline-run-*"))
    assert len(runs) == 2 and all(path.name.endswith(first_id) for path in runs)
    (run,) = find_runs(tmp_path)
    best = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)
    (state,) = [v for k, v in best["callbacks"].items() if k.startswith("ModelCheckpoint")]
    assert run.checkpoint("best").name == Path(state["best_model_path"]).name
    assert run.checkpoint("last").name == "last.ckpt"


def test_evaluate_recomputes_attributions_per_image_deterministically(smoke_run, tmp_path):
    from xai_lightning.evaluate import explain_run
    from xai_lightning.runs import find_runs

    _, run_dir = smoke_run
    (run,) = find_runs(run_dir.parent)
    methods = {"gradcam": {"method": "gradcam"}, "random": {"method": "random"}}
    explained = explain_run(run, methods, splits=("test",))
    again = explain_run(run, methods, splits=("test",))
    first = explained.per_image
    timed = first["metric"] == "seconds"  # wall time differs from call to call; everything else must not
    pd.testing.assert_frame_equal(first[~timed], again.per_image[~timed])
    pd.testing.assert_frame_equal(explained.curves, again.curves)
    pd.testing.assert_frame_equal(explained.agreement, again.agreement)
    assert (first[timed]["value"] > 0).all() and timed.sum() == 16
    assert (first["backbone"] == "resnet18").all()
    # Mean curves: 11 points per curve from the full image to the baseline, over the 8 images.
    assert set(explained.curves["curve"]) == {"deletion", "insertion"} and (explained.curves["n_images"] == 8).all()
    assert len(explained.curves) == 2 * 2 * 11
    deletion_auc = first.query("metric == 'deletion_auc' and method == 'gradcam'")["value"].mean()
    mean_curve = explained.curves.query("curve == 'deletion' and method == 'gradcam'")["probability"].to_numpy()
    assert deletion_auc == pytest.approx(np.trapezoid(mean_curve, dx=0.1), abs=1e-6)  # float32 areas
    # One pair of methods, one IoU per image.
    assert len(explained.agreement) == 8 and explained.agreement["iou"].between(0, 1).all()
    assert set(first["method"]) == {"gradcam", "random"} and (first["split"] == "test").all()
    # Faithfulness curves come with every image and method; no marker masks on a plain set.
    curves = first[first["metric"].isin(["deletion_auc", "insertion_auc"])]
    assert len(curves) == 2 * len(first[first["metric"] == "tko"])
    assert curves["value"].between(0, 1).all()
    assert "tko_marker" not in set(first["metric"])
    assert first["image_id"].nunique() == 8  # the test split's defect images (2 per class)
    assert {"tko", "pointing_game", "pixel_auroc"} <= set(first["metric"])
    tko = first[(first["metric"] == "tko")]["value"]
    assert tko.between(0, 1).all() and len(tko) == 16
    # The same images and model as the callback's test pass: the recomputed TKO matches its CSV.
    logged = pd.read_csv(run_dir / "xai" / "test_epoch002.csv").set_index("image_id")["tko/gradcam"]
    recomputed = first[(first["metric"] == "tko") & (first["method"] == "gradcam")].set_index("image_id")["value"]
    pd.testing.assert_series_equal(recomputed.sort_index(), logged.sort_index(), check_names=False, atol=1e-6)


def test_evaluate_scores_attributions_against_the_planted_marker(tmp_path):
    from xai_lightning.data.synthetic import SyntheticConfig, generate_synthetic_mvtec
    from xai_lightning.evaluate import explain_run
    from xai_lightning.runs import find_runs

    root = tmp_path / "data"
    generate_synthetic_mvtec(root, SyntheticConfig(size=96, seed=0, counts=SMOKE_COUNTS, shortcut_fraction=1.0))
    main(
        smoke_args(
            root,
            tmp_path / "exp",
            "--data.synthetic.shortcut_fraction",
            "1",
            "--trainer.max_epochs",
            "1",
            "--test_after_fit",
            "false",
            "--trainer.callbacks",
            "[]",
        )
    )
    (run,) = find_runs(tmp_path / "exp")
    table = explain_run(run, {"saliency": {"method": "saliency"}}, splits=("test",), faithfulness_steps=0).per_image
    marker = table[table["metric"] == "tko_marker"]
    assert len(marker) == len(table[table["metric"] == "tko"]) > 0
    assert marker["value"].between(0, 1).all()


def test_evaluate_errors_name_what_is_wrong(smoke_run, tmp_path):
    import shutil

    from xai_lightning.errors import ConfigError, RunError
    from xai_lightning.evaluate import main as evaluate
    from xai_lightning.runs import find_runs

    _, run_dir = smoke_run
    with pytest.raises(RunError, match="does not exist"):
        find_runs(tmp_path / "nothing")
    copy = tmp_path / "exp" / "seed0"
    shutil.copytree(run_dir, copy, ignore=shutil.ignore_patterns("wandb"))
    (copy / "finished.json").unlink()
    with pytest.raises(RunError, match=r"No finished run.*unfinished: seed0"):
        find_runs(tmp_path / "exp")
    (copy / "finished.json").write_text("{}")
    for checkpoint in (copy / "checkpoints").glob("*.ckpt"):
        checkpoint.write_bytes(b"not a checkpoint")
    with pytest.raises(RunError, match="does not load"):
        find_runs(tmp_path / "exp")[0].load_model("last")
    with pytest.raises(ConfigError, match="--methods integrated_gradient"):
        evaluate([str(run_dir.parent), "--out", str(tmp_path / "e"), "--methods", "integrated_gradient", "--no-wandb"])


def test_checks_score_robustness_randomisation_and_stability_on_a_fixed_sample(smoke_run, monkeypatch):
    import xai_lightning.checks as checks
    from xai_lightning.runs import find_runs

    _, run_dir = smoke_run
    (run,) = find_runs(run_dir.parent)
    methods = {"gradcam": {"method": "gradcam"}, "saliency": {"method": "saliency"}, "random": {"method": "random"}}
    settings = checks.CheckSettings(images_per_class=1, robustness_samples=2, stability_runs=3)
    real = checks.max_sensitivity_score

    def broken_for_saliency(explainer, *args, **kwargs):
        if explainer.name == "saliency":
            raise RuntimeError("perturbation failed")
        return real(explainer, *args, **kwargs)

    monkeypatch.setattr(checks, "max_sensitivity_score", broken_for_saliency)
    with pytest.warns(UserWarning, match="max_sensitivity of saliency failed"):
        found = checks.check_run(run, methods, "test", settings, experiment="smoke")

    # One image per defect class, the same sample whichever check.
    robustness = found.per_image
    assert set(robustness["image_id"]) == set(found.randomization["image_id"]) and robustness["image_id"].nunique() == 4
    # A failing metric of one method costs that metric of that method only.
    assert set(robustness.query("method == 'saliency'")["metric"]) == {"infidelity"}
    assert set(robustness.query("method == 'gradcam'")["metric"]) == {"infidelity", "max_sensitivity"}
    assert (robustness["value"] >= 0).all() and (robustness["experiment"] == "smoke").all()
    # Randomisation: the intact model (step 0) and every layer top-down; the random map ignores the model.
    steps = found.randomization.groupby("method")["layer"].unique()
    assert list(steps["gradcam"]) == [
        "original",
        "classifier",
        "encoder.layer4",
        "encoder.layer3",
        "encoder.layer2",
        "encoder.layer1",
        "encoder.stem",
    ]
    assert (found.randomization.query("step == 0")["spearman"].dropna() == 1).all()
    assert (found.randomization.query("method == 'random'")["spearman"] == 1).all()
    # Stability: only the stochastic method is run, and unseeded noise does not repeat.
    assert set(found.stability["method"]) == {"random"} and (found.stability["runs"] == 3).all()
    assert found.stability["spearman"].abs().max() < 0.2
    # The same run, settings and seed give the same numbers.
    monkeypatch.setattr(checks, "max_sensitivity_score", real)
    again = checks.check_run(run, {"gradcam": methods["gradcam"]}, "test", settings, experiment="smoke")
    pd.testing.assert_frame_equal(
        again.randomization.reset_index(drop=True),
        found.randomization.query("method == 'gradcam'").reset_index(drop=True),
    )
    assert checks.check_run(run, methods, "test", checks.CheckSettings(images_per_class=0)).randomization.empty
    with pytest.raises(ValueError, match="stability_runs"):
        checks.CheckSettings(stability_runs=-1)


class _RunsCode:
    """What a crafted checkpoint holds: unpickling it calls ``Path.touch`` on a file of the attacker's choice."""

    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self):
        return (Path.touch, (self.target,))


def test_a_checkpoint_that_would_run_code_is_refused_everywhere(smoke_run, smoke_root, tmp_path):
    import shutil

    from xai_lightning.errors import RunError
    from xai_lightning.runs import find_runs

    _, run_dir = smoke_run
    copy = tmp_path / "exp" / "seed0"
    shutil.copytree(run_dir, copy, ignore=shutil.ignore_patterns("wandb"))
    marker = tmp_path / "code-ran"
    state = torch.load(copy / "checkpoints" / "last.ckpt", weights_only=True)
    torch.save({**state, "payload": _RunsCode(marker)}, copy / "checkpoints" / "last.ckpt")
    (run,) = find_runs(tmp_path / "exp")
    with pytest.raises(RunError, match="could run code.*If you trust it"):
        run.checkpoint("best")  # reads last.ckpt for the best checkpoint's name
    with pytest.raises(RunError, match="could run code"):
        run.load_model("last")
    with pytest.raises(RunError, match="could run code"):
        main(smoke_args(smoke_root, tmp_path / "resumed", "--resume", str(copy / "checkpoints" / "last.ckpt")))
    assert not marker.exists()


def test_a_second_training_into_a_held_run_folder_stops_at_once_and_a_stale_lock_is_taken_over(smoke_root, tmp_path):
    import socket
    import subprocess
    import sys

    from xai_lightning.errors import RunError
    from xai_lightning.runs import LOCK_FILE

    run_dir = tmp_path / "seed0"
    run_dir.mkdir()
    lock = run_dir / LOCK_FILE
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        lock.write_text(json.dumps({"pid": holder.pid, "host": socket.gethostname()}))
        args = smoke_args(
            smoke_root, tmp_path, "--trainer.max_epochs", "1", "--test_after_fit", "false", "--trainer.callbacks", "[]"
        )
        with pytest.raises(RunError, match=rf"'{run_dir}' is in use by process {holder.pid}"):
            main(args)
        assert not (run_dir / "checkpoints").exists() and lock.is_file()
    finally:
        holder.kill()
        holder.wait()
    # The holder is gone: its lock is stale, taken over, and released when the run ends.
    main(args)
    assert (run_dir / "finished.json").is_file() and not lock.exists()


def test_evaluate_adds_the_layer_sensitivity_the_radar_and_tcav_to_the_report(smoke_run, tmp_path):
    from xai_lightning.evaluate import main as evaluate

    _, run_dir = smoke_run
    out = tmp_path / "eval"
    args = [str(run_dir.parent), "--out", str(out), "--methods", "gradcam", "saliency", "--check-images-per-class", "0"]
    # A backbone's own --tcav-layer entry wins over the entry for every backbone.
    tcav_layers = ["--tcav-layer", "encoder.layer1", "--tcav-layer", "resnet18=encoder.layer2"]
    analyses = ["--layer-sensitivity", "--layer-method", "guided_gradcam", "--tcav", *tcav_layers]
    evaluate([*args, *analyses, "--no-wandb", "--bootstrap", "200", "--xai-splits", "test"])
    report = (out / "report.md").read_text()
    assert "Which layer to explain" in report and "Methods on every metric at once" in report
    assert "guided_gradcam hooked at each encoder stage" in report
    assert "TCAV: do the defect concepts drive their classes?" in report
    tcav = pd.read_csv(out / "tcav.csv")
    assert set(tcav["concept"]) == {"crack", "cut", "hole", "print"} and tcav["p_value"].between(0, 1).all()
    assert set(tcav["layer"]) == {"encoder.layer2"}
    # A backbone that no run uses (a typo) and a path outside the encoder are refused before any run is evaluated.
    for wrong, named in ((["resnet81=encoder.layer2"], "'resnet81'"), (["decoder.deep"], "'decoder.deep'")):
        with pytest.raises(ConfigError, match=named):
            evaluate([*args, "--tcav", "--tcav-layer", *wrong, "--no-wandb", "--out", str(tmp_path / "refused")])
    assert not (tmp_path / "refused").exists()
    assert {"gradcam", "saliency"} <= set(pd.read_csv(out / "tables" / "tcav_maps.csv").columns)
    layers = pd.read_csv(out / "layer_sensitivity.csv")
    assert set(layers["stage"]) == {"stem", "layer1", "layer2", "layer3", "layer4"}  # every stage of resnet18
    assert {"tko", "pointing_game", "deletion_auc"} <= set(layers["metric"])
    radar = pd.read_csv(out / "tables" / "radar_ranks.csv")
    assert {"gradcam", "saliency", "center_prior", "edge"} <= set(radar["method"]) and radar["area"].between(0, 1).all()
    assert (out / "figures" / "radar_ranks.png").is_file()
