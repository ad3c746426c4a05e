"""AttributionCallback: logged keys read back from W&B, failure isolation, resume, and DDP equality."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest
import pytorch_lightning as pl
import torch
import yaml

from conftest import smoke_args
from xai_lightning.callbacks import AttributionCallback
from xai_lightning.cli import main
from xai_lightning.data.datamodule import MVTecDataModule
from xai_lightning.data.splits import SplitConfig
from xai_lightning.explain import list_explainers, registered_explainers
from xai_lightning.explain.base import Explainer
from xai_lightning.models import MultiTaskClassifier
from xai_lightning.scoring import winners
from xai_lightning.tracking import read_wandb_history

pytestmark = pytest.mark.slow


class _AlwaysFails(Explainer):
    """A method that raises, as a buggy third-party explainer would."""

    name = "test_always_fails"
    reduction = "none"

    def attribute(self, images, targets):
        raise RuntimeError("boom")


class _ReturnsNaN(Explainer):
    name = "test_returns_nan"
    reduction = "none"

    def attribute(self, images, targets):
        return torch.full(images.shape[:1] + images.shape[-2:], float("nan"))


METHODS = {
    "gradcam": {},
    "saliency": {},
    "segmentation_head": {},
    "random": {},
    "test_always_fails": {},
    "test_returns_nan": {},
}


def _overlay(tmp_path: Path, **init_args) -> Path:
    args = {"methods": METHODS, "max_images_per_class": 2, "log_images": 3, **init_args}
    config = {"trainer": {"callbacks": [{"class_path": "xai_lightning.callbacks.AttributionCallback", "init_args": args}]}}
    path = tmp_path / "attribution.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture(scope="module")
def xai_run(smoke_root, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("xai")
    cli = main(smoke_args(smoke_root, tmp / "exp", "--config", str(_overlay(tmp))))
    run_dir = tmp / "exp" / "seed0"
    (wandb_dir,) = (run_dir / "wandb").glob("offline-run-*")
    return cli, run_dir, wandb_dir, read_wandb_history(wandb_dir)


def test_fit_logs_tko_win_rate_and_localisation_metrics_per_split_and_class(xai_run):
    _, _, _, history = xai_run
    working = ["gradcam", "saliency", "segmentation_head", "random"]
    for split in ("val", "test"):
        for method in working:
            for key in ("tko", "win_rate", "pointing_game", "relevance_mass", "otsu_iou", "pixel_auroc"):
                assert f"xai/{split}/{key}/{method}" in history.columns, f"xai/{split}/{key}/{method}"
            for defect in ("crack", "cut", "hole", "print"):
                assert f"xai/{split}/tko/{defect}/{method}" in history.columns
                assert f"xai/{split}/win_rate/{defect}/{method}" in history.columns
    val = history.dropna(subset=["xai/val/tko/gradcam"])
    assert len(val) == 2  # one pass per epoch, none in the sanity check
    rates = val[[f"xai/val/win_rate/{m}" for m in working]].sum(axis=1)
    assert rates.to_numpy() == pytest.approx([1.0, 1.0])
    assert (val["xai/val/n_images"] == 8).all()  # 2 images per defect class
    assert (val["xai/val/win_rate_n_images"] == 8).all() and (val["xai/val/win_rate_n_excluded"] == 0).all()
    # Below `<metric>/` there are only methods and classes: counts live beside the metrics.
    namespaces = {*working, "test_always_fails", "test_returns_nan", "crack", "cut", "hole", "print"}
    for key in (c for c in history.columns if c.startswith("xai/val/win_rate/")):
        assert key.split("/")[3] in namespaces, key
    assert (val["xai/val/n_empty_mask_skipped"] == 2).all()  # the 2 good images of the val split
    for key in (c for c in val.columns if c.startswith("xai/val/tko/")):
        assert val[key].between(0, 1).all()


def test_a_failing_method_is_reported_and_skipped_while_the_rest_goes_on(xai_run):
    cli, run_dir, _, history = xai_run
    val = history.dropna(subset=["xai/val/tko/gradcam"])
    assert (val["xai/val/failed/test_always_fails"] == 1).all()
    assert (val["xai/val/failed/test_returns_nan"] == 1).all()
    assert (val["xai/val/failed/gradcam"] == 0).all()
    assert "xai/val/tko/test_always_fails" not in history.columns
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()  # training finished
    callback = next(c for c in cli.trainer.callbacks if isinstance(c, AttributionCallback))
    assert "RuntimeError: boom" in callback.history[0]["failed"]["test_always_fails"]


def test_wandb_gets_heatmaps_and_a_per_image_table_and_the_run_dir_a_csv(xai_run):
    _, run_dir, wandb_dir, history = xai_run
    # Media records come back with their descriptor fields as nested keys.
    heatmaps = history.dropna(subset=["xai/val/heatmaps/_type"]).iloc[0]
    assert heatmaps["xai/val/heatmaps/_type"] == "images/separated" and heatmaps["xai/val/heatmaps/count"] == 3
    assert heatmaps["xai/val/heatmaps/width"] == 64 * 5  # the image and 4 working methods side by side
    assert all((wandb_dir / "files" / name).is_file() for name in heatmaps["xai/val/heatmaps/filenames"])
    assert len(heatmaps["xai/val/heatmaps/all_masks"]) == 3  # ground-truth mask layer on each panel
    table = history.dropna(subset=["xai/val/table/_type"]).iloc[0]
    assert table["xai/val/table/_type"] == "table-file" and table["xai/val/table/nrows"] == 8
    csv = pd.read_csv(run_dir / "xai" / "val_epoch001.csv")
    assert len(csv) == 8 and {"image_id", "class", "prediction", "winner", "tko/gradcam"} <= set(csv.columns)
    assert csv["winner"].notna().all()


def test_history_survives_checkpoint_and_resume(xai_run, smoke_root, tmp_path):
    cli, run_dir, _, _ = xai_run
    state = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)["callbacks"]
    (saved,) = [v for k, v in state.items() if k.startswith("AttributionCallback")]
    assert [entry["epoch"] for entry in saved["history"] if entry["split"] == "val"] == [0, 1]
    resumed = main(
        smoke_args(
            smoke_root, tmp_path, "--config", str(_overlay(tmp_path)), "--resume", str(run_dir / "checkpoints" / "last.ckpt"),
            "--trainer.max_epochs", "3", "--test_after_fit", "false",
        )
    )
    callback = next(c for c in resumed.trainer.callbacks if isinstance(c, AttributionCallback))
    assert [entry["epoch"] for entry in callback.history if entry["split"] == "val"] == [0, 1, 2]


def test_explaining_does_not_change_training(xai_run, smoke_root, tmp_path):
    _, _, _, with_callback = xai_run
    no_callback = tmp_path / "no_callback.yaml"
    no_callback.write_text(yaml.safe_dump({"trainer": {"callbacks": []}}))
    main(smoke_args(smoke_root, tmp_path, "--config", str(no_callback), "--test_after_fit", "false"))
    (wandb_dir,) = (tmp_path / "seed0" / "wandb").glob("offline-run-*")
    without = read_wandb_history(wandb_dir)
    columns = ["val/loss", "train/loss", "val/seg_iou"]
    pd.testing.assert_frame_equal(
        with_callback.dropna(subset=["val/loss"])[columns].reset_index(drop=True),
        without.dropna(subset=["val/loss"])[columns].reset_index(drop=True),
    )


def test_winners_share_ties_and_ignore_order():
    frame = pd.DataFrame({"tko/a": [0.5, 0.2, math.nan], "tko/b": [0.5, 0.7, 0.1]})
    assert winners(frame, ["a", "b"]) == ["a=b", "b", ""]


def test_image_set_is_seeded_and_capped_per_class(smoke_root):
    data = MVTecDataModule(root=str(smoke_root), source="mvtec", image_size=64, split=SplitConfig(0.34, 0.33))
    data.setup()
    callback = AttributionCallback(methods=["random"], max_images_per_class=1, seed=3)
    _, positions = callback.image_set(data, "val")
    labels = data.frame("val").reset_index(drop=True).loc[positions, "label"]
    assert sorted(labels) == ["crack", "cut", "hole", "print"]
    assert callback.image_set(data, "val")[1] == positions


class _FailsOnRankOne(Explainer):
    """Fails on the second process only: its error must still reach rank zero's report."""

    name = "test_fails_on_rank_one"
    reduction = "none"

    def attribute(self, images, targets):
        import torch.distributed as dist

        if dist.is_initialized() and dist.get_rank() == 1:
            raise RuntimeError("rank one says no")
        return torch.rand(images.shape[0], *images.shape[-2:])


class _ShardedCallback(AttributionCallback):
    """Registers the test doubles in spawned DDP processes too (the fixture runs in the parent only)."""

    def setup(self, trainer, pl_module, stage):
        missing = [double for double in TEST_DOUBLES if double.name not in list_explainers()]
        self._doubles = registered_explainers(*missing)
        self._doubles.__enter__()
        super().setup(trainer, pl_module, stage)

    def teardown(self, trainer, pl_module, stage):
        self._doubles.__exit__(None, None, None)


EQUALITY_METHODS = ["gradcam", "saliency", "segmentation_head", "random"]
TEST_DOUBLES = (_AlwaysFails, _ReturnsNaN, _FailsOnRankOne)


def _validate(smoke_root, tmp_path, devices: int, strategy: str, methods: list[str]) -> dict[str, float]:
    pl.seed_everything(0)
    model = MultiTaskClassifier(backbone="resnet18")
    # val 3 images per class, and the 3 good ones: 15 images, so the two shards are uneven (8 / 7).
    data = MVTecDataModule(
        root=str(smoke_root), source="mvtec", image_size=64, batch_size=4, num_workers=0,
        split=SplitConfig(val_fraction=0.5, test_fraction=0.17),
    )
    callback = _ShardedCallback(methods=methods, max_images_per_class=None, include_good=True, batch_size=3)
    trainer = pl.Trainer(
        accelerator="cpu", devices=devices, strategy=strategy, callbacks=[callback], logger=False,
        enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False,
        default_root_dir=tmp_path,
    )
    (metrics,) = trainer.validate(model, datamodule=data, verbose=False)
    return {k: v for k, v in metrics.items() if k.startswith("xai/")}


def test_ddp_with_two_processes_logs_the_same_win_rates_as_one(smoke_root, tmp_path):
    single = _validate(smoke_root, tmp_path / "one", 1, "auto", EQUALITY_METHODS)
    double = _validate(smoke_root, tmp_path / "two", 2, "ddp_spawn", EQUALITY_METHODS)
    assert single["xai/val/n_images"] == double["xai/val/n_images"] == 12
    assert single["xai/val/n_excluded"] == double["xai/val/n_excluded"] == 3  # the good images
    keys = [k for k in single if "/win_rate/" in k or "/tko/" in k or "/pixel_auroc/" in k]
    assert "xai/val/win_rate/gradcam" in keys and "xai/val/tko/random" in keys
    for key in keys:
        # Convolutions may pick other kernels for other batch shapes: float noise of ~1e-6 in the maps.
        # TKO and win-rate are rank-based and came out identical; AUROC gets a looser bound.
        assert double[key] == pytest.approx(single[key], abs=1e-4 if "auroc" in key else 1e-6), key
    csv = pd.read_csv(tmp_path / "two" / "xai" / "val_validate_epoch000.csv")
    assert len(csv) == 15 and csv["image_id"].is_monotonic_increasing


def test_failure_on_another_rank_is_reported_with_its_error(smoke_root, tmp_path, capfd):
    # Rank zero's history lives in the spawned process, but its printed pass report reaches our file
    # descriptors: it must carry rank 1's error text.
    metrics = _validate(smoke_root, tmp_path, 2, "ddp_spawn", [*EQUALITY_METHODS, "test_fails_on_rank_one"])
    out = capfd.readouterr()
    assert "rank 1: RuntimeError: rank one says no" in out.out + out.err
    # Dropped on both processes, so the win-rates are those of the methods that worked everywhere.
    assert metrics["xai/val/failed/test_fails_on_rank_one"] == 1
    assert "xai/val/win_rate/test_fails_on_rank_one" not in metrics
    assert sum(metrics[f"xai/val/win_rate/{m}"] for m in EQUALITY_METHODS) == pytest.approx(1.0)


def test_a_pass_at_the_end_of_training_leaves_the_trained_model_alone(smoke_root, tmp_path):
    data = MVTecDataModule(root=str(smoke_root), source="mvtec", image_size=64, num_workers=0, split=SplitConfig(0.34, 0.33))
    model = MultiTaskClassifier(backbone="resnet18")
    model.encoder.stem[1].eval()  # a user-frozen BatchNorm must stay frozen
    callback = AttributionCallback(
        methods=["gradcam", "saliency"], max_images_per_class=1, every_n_epochs=2, splits=["train", "val"],
        target="prediction",
    )
    trainer = pl.Trainer(
        accelerator="cpu", max_epochs=1, callbacks=[callback], logger=False, enable_progress_bar=False,
        enable_model_summary=False, enable_checkpointing=False, default_root_dir=tmp_path, limit_train_batches=1,
    )
    trainer.fit(model, datamodule=data)  # epoch 0 has no pass (every 2): on_train_end runs one per split
    assert [(entry["epoch"], entry["split"]) for entry in callback.history] == [(1, "train"), (1, "val")]
    for split in ("train", "val"):
        table = pd.read_csv(tmp_path / "xai" / f"{split}_epoch001.csv")
        assert len(table) == 4 and (table["target"] == table["prediction"]).all()
    model.train()
    model.encoder.stem[1].eval()
    buffers = {k: v.clone() for k, v in model.state_dict().items() if "running" in k}
    callback.run_pass(trainer, model, "val")
    assert model.training and not model.encoder.stem[1].training
    assert all(torch.equal(buffers[k], v) for k, v in model.state_dict().items() if "running" in k)


def test_explainers_follow_the_module_the_trainer_is_given(smoke_root, tmp_path):
    data = MVTecDataModule(root=str(smoke_root), source="mvtec", image_size=64, num_workers=0, split=SplitConfig(0.34, 0.33))
    callback = AttributionCallback(methods=["segmentation_head"], max_images_per_class=1)
    trainer = pl.Trainer(
        accelerator="cpu", callbacks=[callback], logger=False, enable_progress_bar=False,
        enable_model_summary=False, default_root_dir=tmp_path,
    )
    first, second = MultiTaskClassifier(), MultiTaskClassifier()
    trainer.validate(first, datamodule=data, verbose=False)
    assert callback.explainers["segmentation_head"].model is first
    trainer.validate(second, datamodule=data, verbose=False)
    assert callback.explainers["segmentation_head"].model is second
    record = (tmp_path / "xai" / "explainers.json").read_text()
    assert '"reduction": "none"' in record


@pytest.mark.parametrize(
    "options, option",
    [({"top_k": 0}, "top_k"), ({"top_k": 1.5}, "top_k"), ({"batch_size": 0}, "batch_size"),
     ({"pointing_tolerance": -1}, "pointing_tolerance"), ({"splits": ["test"]}, "splits"),
     ({"target": "truth"}, "target"), ({"methods": {}}, "methods"),
     ({"faithfulness_steps": -1}, "faithfulness_steps"), ({"faithfulness_steps": 2.5}, "faithfulness_steps"),
     ({"faithfulness_baseline": "zero"}, "faithfulness_baseline")],
)
def test_bad_callback_options_are_named(options, option):
    from xai_lightning.errors import ConfigError

    with pytest.raises(ConfigError, match=option):
        AttributionCallback(**options)


def test_unknown_method_stops_the_run_before_training(smoke_root, tmp_path):
    from xai_lightning.errors import ConfigError

    overlay = _overlay(tmp_path, methods={"gradcam": {}, "my_ig": {"method": "integrated_gradient"}})
    with pytest.raises(ConfigError, match=r"AttributionCallback.methods.my_ig.*Unknown explainer 'integrated_gradient'"):
        main(smoke_args(smoke_root, tmp_path, "--config", str(overlay)))
    assert not list(tmp_path.glob("**/*.ckpt"))


class _CurveFails(Explainer):
    """Valid maps (a constant 7) that the patched deletion curve below refuses, as a curve bug on one method would."""

    name = "test_curve_fails"
    reduction = "none"

    def attribute(self, images, targets):
        return torch.full(images.shape[:1] + images.shape[-2:], 7.0)


@pytest.fixture(scope="module", autouse=True)
def _test_doubles():
    """The test explainers exist for this module's tests only: the registry is as it was afterwards."""
    with registered_explainers(*TEST_DOUBLES, _CurveFails):
        yield


def _validate_small(smoke_root, tmp_path, **options) -> tuple:
    """(callback, trainer, model, xai scalars) of one validation pass over one 32² image per defect class.

    Each faithfulness step is a forward pass per image and method, so the images are kept small.
    """
    pl.seed_everything(0)
    model = MultiTaskClassifier(backbone="resnet18")
    data = MVTecDataModule(
        root=str(smoke_root), source="mvtec", image_size=32, num_workers=0, split=SplitConfig(0.34, 0.33)
    )
    callback = AttributionCallback(max_images_per_class=1, log_images=0, **options)
    trainer = pl.Trainer(
        accelerator="cpu", callbacks=[callback], logger=False, enable_progress_bar=False,
        enable_model_summary=False, enable_checkpointing=False, default_root_dir=tmp_path,
    )
    (metrics,) = trainer.validate(model, datamodule=data, verbose=False)
    return callback, trainer, model, {k: v for k, v in metrics.items() if k.startswith("xai/")}


def test_faithfulness_areas_are_logged_per_method_and_class_on_request(smoke_root, tmp_path):
    methods = ["saliency"]  # every method costs the same 2 · (steps − 1) forward passes per image
    callback, trainer, model, metrics = _validate_small(
        smoke_root, tmp_path, methods=methods, faithfulness_steps=4, faithfulness_baseline="mean"
    )
    for method in methods:
        keys = [f"xai/val/{area}/{method}" for area in ("deletion_auc", "insertion_auc")]
        keys += [f"xai/val/{area}/{defect}/{method}" for area in ("deletion_auc", "insertion_auc")
                 for defect in ("crack", "cut", "hole", "print")]
        for key in keys:
            assert 0 <= metrics[key] <= 1, key  # areas under probability curves over [0, 1]
        assert metrics[f"xai/val/faithfulness_sec_per_image/{method}"] > 0
        assert metrics[f"xai/val/failed/{method}"] == 0
    csv = pd.read_csv(tmp_path / "xai" / "val_validate_epoch000.csv")
    assert csv[[f"{area}/{m}" for area in ("deletion_auc", "insertion_auc") for m in methods]].notna().all().all()
    assert set(callback.history[-1]["deletion_auc"]) == set(methods)
    # The curves run inside the pass's forked RNG: the global stream is where it was.
    before = torch.get_rng_state()
    callback.run_pass(trainer, model, "val")
    assert torch.equal(torch.get_rng_state(), before)


def test_faithfulness_is_off_by_default(smoke_root, tmp_path):
    callback, _, _, metrics = _validate_small(smoke_root, tmp_path, methods=["random"])
    assert callback.faithfulness_steps == 0
    assert "xai/val/tko/random" in metrics
    assert not [k for k in metrics if "deletion_auc" in k or "insertion_auc" in k or "faithfulness" in k]
    csv = pd.read_csv(tmp_path / "xai" / "val_validate_epoch000.csv")
    assert not [c for c in csv.columns if "_auc/" in c]


def test_a_method_whose_curves_fail_is_dropped_while_the_others_go_on(smoke_root, tmp_path, monkeypatch):
    from xai_lightning.scoring import batch

    real = batch.CURVES["deletion"]

    def refuses_sevens(classify, images, targets, maps, *args, **kwargs):
        if bool((maps == 7.0).all()):
            raise RuntimeError("curve says no")
        return real(classify, images, targets, maps, *args, **kwargs)

    monkeypatch.setitem(batch.CURVES, "deletion", refuses_sevens)
    with pytest.warns(UserWarning, match="test_curve_fails: deletion / insertion curves failed"):
        callback, _, _, metrics = _validate_small(
            smoke_root, tmp_path, methods=["saliency", "test_curve_fails", "random"], faithfulness_steps=1
        )
    assert metrics["xai/val/failed/test_curve_fails"] == 1
    assert not [k for k in metrics if k.endswith("/test_curve_fails") and "/failed/" not in k]
    for method in ("saliency", "random"):
        assert metrics[f"xai/val/failed/{method}"] == 0
        assert math.isfinite(metrics[f"xai/val/deletion_auc/{method}"])
        assert math.isfinite(metrics[f"xai/val/tko/{method}"])
    assert metrics["xai/val/win_rate/saliency"] + metrics["xai/val/win_rate/random"] == pytest.approx(1.0)
    assert "RuntimeError: curve says no" in callback.history[-1]["failed"]["test_curve_fails"]
