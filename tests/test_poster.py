"""The poster's pipeline as options, and its ablation: the tie rule, the IoU score, the model, and what retrains."""

from __future__ import annotations

import json

import albumentations as A
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from conftest import REPO, SMOKE_COUNTS

from xai_lightning.metrics import top_k_iou, top_k_overlap, win_credit
from xai_lightning.metrics.winrate import WinRate
from xai_lightning.reporting.seeds import win_credits

POSTER_CONFIG = REPO / "configs" / "poster.yaml"
SYNTHETIC_OVERLAY = REPO / "configs" / "poster_synthetic.yaml"


def test_a_three_way_tie_is_a_grad_cam_win_under_first_listed_and_a_third_under_the_fair_rule():
    tko = torch.tensor([[0.4, 0.4, 0.4], [0.2, 0.7, 0.7]], dtype=torch.float64)  # gradcam, saliency, ig
    assert win_credit(tko, ties="first_listed").tolist() == [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]
    assert win_credit(tko, ties="fair")[0].tolist() == pytest.approx([1 / 3] * 3)
    metric = WinRate(["gradcam", "saliency", "ig"], ties="first_listed")
    metric.update(tko[:1])
    assert {k: float(v) for k, v in metric.compute()["overall"].items()} == {"gradcam": 1.0, "saliency": 0.0, "ig": 0.0}
    # The report's credits follow the same rule, in the listed order.
    rows = pd.DataFrame({"experiment": "e", "seed": 0, "split": "test", "class": "crack", "image_id": "a",
                         "method": ["gradcam", "saliency", "ig"], "metric": "tko", "value": 0.4})  # fmt: skip
    first = win_credits(rows, methods=["gradcam", "saliency", "ig"], ties="first_listed")["value"].tolist()
    assert first == [1.0, 0.0, 0.0] and win_credits(rows)["value"].tolist() == pytest.approx([1 / 3] * 3)


def test_iou_of_the_top_k_set_is_tko_over_two_minus_tko_at_k_equal_to_the_mask():
    generator = torch.Generator().manual_seed(0)
    maps = torch.rand(16, 20, 20, generator=generator)
    maps[:4] = maps[:4].round(decimals=1)  # ties at the threshold too
    masks = torch.rand(16, 20, 20, generator=generator) > 0.85
    tko, iou = top_k_overlap(maps, masks), top_k_iou(maps, masks)
    torch.testing.assert_close(iou, tko / (2 - tko), rtol=0, atol=1e-12)
    assert (iou <= tko).all()


@pytest.fixture(scope="module")
def poster_cli(tmp_path_factory):
    """configs/poster.yaml built (model, data module, callback) as train.py would, on a synthetic stand-in."""
    from xai_lightning.cli import XaiLightningCLI

    root = tmp_path_factory.mktemp("poster-data")
    args = ["--config", str(POSTER_CONFIG), "--data.source", "synthetic", "--data.root", str(root),
            "--data.synthetic.counts", json.dumps(SMOKE_COUNTS), "--data.split.test_per_class", "2",
            "--experiment_dir", str(tmp_path_factory.mktemp("poster-runs"))]  # fmt: skip
    return XaiLightningCLI(args=args)


def test_the_poster_arm_is_the_model_the_poster_describes(poster_cli):
    from xai_lightning.models.multitask import TransposedDecoder

    model, data = poster_cli.model, poster_cli.datamodule
    assert model.hparams.backbone == "efficientnet_b0" and model.classifier[2].p == 0.2
    # The decoder reads the layer Grad-CAM explains, and upsamples it in five transposed-conv steps.
    assert isinstance(model.decoder, TransposedDecoder) and model.cam_layer_name == f"encoder.{model.decoder_stage}"
    widths = [m.out_channels for m in model.decoder.steps if isinstance(m, torch.nn.ConvTranspose2d)]
    assert widths == [16, 32, 16, 8, 4]
    out = model(torch.rand(2, 3, 224, 224))
    assert out.mask_logits.shape == (2, 1, 224, 224)
    # The segmentation loss is MSE on the raw logits; class weights are balanced; Adam without schedule.
    batch = {"label": torch.tensor([0, 1]), "mask": (torch.rand(2, 1, 224, 224) > 0.5).float()}
    parts = model.loss(out, batch)
    assert torch.allclose(parts.bce, F.mse_loss(out.mask_logits, batch["mask"]))
    assert model.hparams.class_weights == "balanced" and model.hparams.scheduler == "none"
    assert model.hparams.weight_decay == 0 and model.hparams.lr == 1e-3
    # No weights file here: trained from scratch, and labelled so.
    assert model.weights_source == "scratch"
    # Resize to 256, centre-crop 224, no ImageNet normalisation; the model knows it (baselines, displays).
    steps = data.transform(augment=False).transforms
    assert [type(t) for t in steps[:2]] == [A.Resize, A.CenterCrop] and (steps[0].height, steps[1].height) == (256, 224)
    assert not any(isinstance(t, A.Normalize) for t in steps) and model.hparams.normalize_input is False
    scoring = next(c for c in poster_cli.trainer.callbacks if type(c).__name__ == "AttributionCallback").scoring
    assert (scoring.target, scoring.only_correct, scoring.win_ties, scoring.top_k) == (
        "prediction",
        True,
        "first_listed",
        None,
    )
    assert scoring.top_k_iou and not scoring.include_good


@pytest.mark.slow
def test_scoring_factors_reuse_the_poster_checkpoints_and_training_factors_train_their_own(smoke_root, tmp_path):
    from xai_lightning.ablation.__main__ import main

    out = tmp_path / "ablation"
    args = ["--config", str(POSTER_CONFIG), "--config", str(SYNTHETIC_OVERLAY), "--data.root", str(smoke_root),
            "--data.synthetic.size", "96", "--data.synthetic.counts", json.dumps(SMOKE_COUNTS),
            "--data.split.test_per_class", "2", "--trainer.max_epochs", "1", "--trainer.callbacks", "[]",
            "--seeds", "0", "--out", str(out), "--no-wandb", "--bootstrap", "200"]  # fmt: skip
    table = main(args)
    trained = sorted(p.parent.parent.parent.name for p in out.glob("*/seed0/checkpoints/last.ckpt"))
    assert trained == ["bce", "decoder_early", "lambda_0", "poster"]
    assert set(table["factor"]) == {"poster", "lambda_0", "decoder_early", "bce", "ig_blur_64", "ig_mean_64",
                                    "coarsened", "fair_ties", "share_tko", "all_images", "gradcam_early"}  # fmt: skip
    # Every factor lists the references' score next to the compared methods.
    assert {"center_prior", "edge"} <= set(table.loc[table["factor"] == "fair_ties", "method"])
    assert (out / "report.md").is_file() and (out / "tables" / "ablation.tex").is_file()
    assert (out / "figures" / "ablation.png").is_file()
    # A second invocation trains nothing: every checkpoint is the one the first wrote.
    before = {p: p.stat().st_mtime_ns for p in out.glob("*/seed0/checkpoints/*.ckpt")}
    again = main(args)
    assert {p: p.stat().st_mtime_ns for p in out.glob("*/seed0/checkpoints/*.ckpt")} == before
    pd.testing.assert_frame_equal(again, table)
