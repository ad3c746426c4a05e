"""The attribution pass: its scoring record, and training and evaluation scoring the same images the same way."""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest
import yaml

from conftest import smoke_args
from xai_lightning.errors import ConfigError
from xai_lightning.evaluation.settings import REFERENCE_METHODS
from xai_lightning.scoring import SCORING_FILE, ScoringConfig

#: Non-default scoring in every option evaluation must read back from the run.
SCORING = {
    "top_k": 0.05,
    "pointing_tolerance": 3,
    "pointing_ties": "any",
    "faithfulness_steps": 3,
    "faithfulness_baseline": "mean",
    "seed": 4,
}
METHODS = ["gradcam", "saliency", "segmentation_head", "random"]


def test_scoring_config_round_trips_through_its_file_and_names_bad_options(tmp_path):
    config = ScoringConfig(**SCORING)
    path = config.write(tmp_path)
    assert path.name == SCORING_FILE and ScoringConfig.read(tmp_path) == config
    assert ScoringConfig.read(tmp_path / "missing") is None
    assert config.differences(ScoringConfig()) == {k: (v, getattr(ScoringConfig(), k)) for k, v in SCORING.items()}
    assert "deletion_auc" in config.metrics and "deletion_auc" not in ScoringConfig().metrics
    # K = 1 (one pixel) and K = 1.0 (every pixel) are different settings although 1 == 1.0.
    assert ScoringConfig(top_k=1).differences(ScoringConfig(top_k=1.0)) == {"top_k": (1, 1.0)}
    with pytest.raises(ConfigError, match=r"`where.top_k` is 2.0"):
        ScoringConfig.named("where", top_k=2.0)
    with pytest.raises(ConfigError, match=r"`where.pointing_ties` is 'first'"):
        ScoringConfig.named("where", pointing_ties="first")
    (tmp_path / SCORING_FILE).write_text(json.dumps({"top_k": None, "k": 3}))
    with pytest.raises(ConfigError, match="unknown scoring option.*k"):
        ScoringConfig.read(tmp_path)


@pytest.fixture(scope="module")
def scored_run(smoke_root, tmp_path_factory):
    """A smoke run whose callback scores with non-default settings, evaluated with the run's own record."""
    from xai_lightning.cli import main
    from xai_lightning.evaluate import main as evaluate

    tmp = tmp_path_factory.mktemp("scored")
    args = {"methods": METHODS, "max_images_per_class": 2, "log_images": 0, **SCORING}
    overlay = tmp / "scoring.yaml"
    overlay.write_text(
        yaml.safe_dump(
            {
                "trainer": {
                    "callbacks": [{"class_path": "xai_lightning.callbacks.AttributionCallback", "init_args": args}]
                }
            }
        )
    )
    main(smoke_args(smoke_root, tmp / "exp", "--config", str(overlay), "--trainer.max_epochs", "1"))
    out = tmp / "evaluation"
    evaluate(
        [
            str(tmp / "exp"),
            "--out",
            str(out),
            "--xai-splits",
            "test",
            "--max-images-per-class",
            "2",
            "--check-images-per-class",
            "0",
            "--bootstrap",
            "50",
            "--no-wandb",
        ]
    )
    return tmp / "exp" / "seed0", out


def test_the_run_records_its_scoring_next_to_its_explainers(scored_run):
    run_dir, _ = scored_run
    assert ScoringConfig.read(run_dir / "xai") == ScoringConfig(**SCORING)
    assert set(json.loads((run_dir / "xai" / "explainers.json").read_text())) == set(METHODS)


def test_evaluation_scores_exactly_what_the_callback_scored_on_the_test_split(scored_run):
    run_dir, out = scored_run
    (csv,) = run_dir.glob("xai/test_epoch*.csv")
    logged = pd.read_csv(csv).set_index("image_id")
    per_image = pd.read_parquet(out / "per_image.parquet")
    per_image = per_image[(per_image["split"] == "test") & (per_image["metric"] != "seconds")]
    recomputed = per_image.pivot_table(index="image_id", columns=["metric", "method"], values="value", dropna=False)
    # Evaluation adds the model-free references, which the callback did not score: compare the callback's methods.
    assert set(recomputed.columns.get_level_values("method")) == {*METHODS, *REFERENCE_METHODS}
    recomputed = recomputed.loc[:, recomputed.columns.get_level_values("method").isin(METHODS)]
    metrics = set(recomputed.columns.get_level_values("metric"))
    assert {"tko", "pointing_game", "pixel_auroc", "deletion_auc", "insertion_auc"} <= metrics
    assert sorted(recomputed.index) == sorted(logged.index) and len(logged) == 8
    compared = 0
    for metric, method in recomputed.columns:
        ours, theirs = recomputed[(metric, method)], logged.loc[recomputed.index, f"{metric}/{method}"]
        both_nan = ours.isna() & theirs.isna()
        assert (both_nan | (ours == theirs)).all(), (metric, method)  # exactly, not approximately
        compared += int((~both_nan).sum())
    assert compared >= 8 * len(METHODS) * 8
    # The same targets and predictions, and the report says the scoring is the training's.
    ids = per_image.drop_duplicates("image_id").set_index("image_id")
    assert (ids.loc[logged.index, "prediction"] == logged["prediction"]).all()
    assert "as each run's training passes scored" in (out / "report.md").read_text()


def test_an_override_is_used_and_named_in_the_report(scored_run, tmp_path):
    from xai_lightning.evaluate import main as evaluate

    run_dir, _ = scored_run
    evaluate(
        [
            str(run_dir),
            "--out",
            str(tmp_path),
            "--xai-splits",
            "test",
            "--max-images-per-class",
            "1",
            "--check-images-per-class",
            "0",
            "--faithfulness-steps",
            "0",
            "--top-k",
            "20",
            "--bootstrap",
            "20",
            "--no-wandb",
            "--methods",
            "saliency",
            "random",
        ]
    )
    report = (tmp_path / "report.md").read_text()
    assert "`top_k` 0.05 in training, 20 here" in report and "`faithfulness_steps` 3 in training, 0 here" in report
    scoring = pd.read_csv(tmp_path / "scoring.csv")
    assert scoring.loc[0, "top_k"] == 20 and scoring.loc[0, "pointing_tolerance"] == 3
    per_image = pd.read_parquet(tmp_path / "per_image.parquet")
    assert "deletion_auc" not in set(per_image["metric"])
    for bad, flag in ((["--top-k", "1.5"], "--top-k"), (["--faithfulness-steps", "-1"], "--faithfulness-steps"),
                      (["--batch-size", "0"], "--batch-size"), (["--tcav-layer", "encoder.layer3"], "--tcav-layer"),
                      (["--layer-method", "guided_gradcam"], "--layer-method"),
                      (["--tcav", "--tcav-layer", "resnet18="], "--tcav-layer")):
        with pytest.raises(ConfigError, match=flag):  # before any run is loaded
            evaluate([str(tmp_path / "no-such-experiment"), "--out", str(tmp_path), *bad, "--no-wandb"])
    assert not math.isnan(per_image.query("metric == 'tko'")["value"].mean())
