"""Layer sensitivity: a CAM per encoder stage, scored on a tiny trained smoke run, aggregated and drawn."""

from __future__ import annotations

import pandas as pd
import pytest
import torch
from conftest import smoke_args
from torch import nn

from xai_lightning.errors import ConfigError
from xai_lightning.evaluation.layers import LAYER_COLUMNS, LAYER_METRICS, layer_methods, layer_table
from xai_lightning.reporting.analysis_sections import layer_section
from xai_lightning.evaluation.layers import layer_sensitivity
from xai_lightning.metrics.names import OVERALL
from xai_lightning.models.backbones import create_backbone
from xai_lightning.reporting.figures.layers import layer_curves
from xai_lightning.reporting.report_sections import Report, ReportWriter
from xai_lightning.runs import Run

RESNET_STAGES = ["stem", "layer1", "layer2", "layer3", "layer4"]


def _encoder_only(backbone: str) -> nn.Module:
    """A module holding only the backbone's encoder as ``encoder``, as the multitask model does."""
    model = nn.Module()
    model.encoder = create_backbone(backbone).encoder
    return model


def test_layer_methods_cover_every_resnet18_stage_in_order():
    methods = layer_methods(_encoder_only("resnet18"))
    assert list(methods) == [f"gradcam@{stage}" for stage in RESNET_STAGES]
    assert [spec["layer"] for spec in methods.values()] == [f"encoder.{stage}" for stage in RESNET_STAGES]
    assert all(spec["method"] == "gradcam" for spec in methods.values())


def test_layer_methods_of_a_vit_hook_only_its_grid_stage():
    assert layer_methods(_encoder_only("vit_b_16"), method="guided_gradcam") == {
        "guided_gradcam@grid": {"method": "guided_gradcam", "layer": "encoder.grid"}
    }


def test_a_method_that_hooks_no_layer_is_refused_with_the_ones_that_do():
    """Only methods whose options take ``layer`` can be moved from stage to stage; the error lists them."""
    with pytest.raises(ConfigError, match="'saliency'.*gradcam, guided_gradcam"):
        layer_methods(_encoder_only("resnet18"), method="saliency")


def test_the_dry_pass_leaves_batchnorm_statistics_and_mode_alone():
    model = _encoder_only("resnet18").train()
    before = model.encoder.stem[1].running_mean.clone()
    layer_methods(model)
    assert model.training and torch.equal(model.encoder.stem[1].running_mean, before)


@pytest.mark.slow
def test_layer_sensitivity_on_a_smoke_run_scores_every_stage_and_draws_them(smoke_root, tmp_path):
    from xai_lightning.cli import main

    main(smoke_args(smoke_root, tmp_path / "exp", "--trainer.max_epochs", "1", "--trainer.callbacks", "[]"))
    loaded = Run(tmp_path / "exp" / "seed0").load()
    rows = layer_sensitivity(loaded, faithfulness_steps=3, max_images_per_class=1)
    assert list(rows.columns) == LAYER_COLUMNS
    assert rows.drop_duplicates("stage").sort_values("stage_index")["stage"].tolist() == RESNET_STAGES
    assert set(rows["metric"]) == set(LAYER_METRICS)
    # One row per image, stage and metric; the test split holds one image of each defect class here.
    assert not rows.duplicated(["image_id", "class", "stage", "metric"]).any()
    assert rows.groupby(["stage", "metric"]).size().nunique() == 1

    twice = pd.concat([rows, rows.assign(seed=1)], ignore_index=True)
    table = layer_table(twice)
    overall = table[(table["class"] == OVERALL) & (table["metric"] == "tko")]
    assert overall["stage"].tolist() == RESNET_STAGES and (overall["n_seeds"] == 2).all()
    assert set(table["class"]) == set(rows["class"]) | {OVERALL}

    path = layer_curves(table, tmp_path / "layers.png")
    assert path.is_file() and path.stat().st_size > 0
    writer = ReportWriter(Report(tmp_path / "report" / "report.md"), tmp_path / "report")
    text = "\n".join(layer_section(writer, table).render(6))
    assert "layer4" in text and "![layer_curves](figures/layer_curves.png)" in text
