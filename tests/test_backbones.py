"""Every backbone overlay in configs/backbones parses, builds and runs a smoke fit with Grad-CAM.

Plus the ViT specifics: its ``grid`` stage is the (B, 768, H/16, W/16) patch-token map, and Grad-CAM
on it from the shared gradient pass equals Captum's LayerGradCam on the same module.
"""

from __future__ import annotations

import json
import math

import pytest
import torch
import yaml
from captum.attr import LayerGradCam
from conftest import REPO, SMOKE_CONFIG

from xai_lightning.cli import main
from xai_lightning.errors import ConfigError
from xai_lightning.explain.base import (
    attribution_mode,
    build_explainers,
    explainer_specs,
)
from xai_lightning.explain.engine import explain_batch
from xai_lightning.explain.reduction import cam
from xai_lightning.models import MultiTaskClassifier, list_backbones
from xai_lightning.models.backbones import _vit_b_16

BACKBONE_CONFIGS = sorted((REPO / "configs" / "backbones").glob("*.yaml"))
BACKBONES = [path.stem for path in BACKBONE_CONFIGS]
QUICKSTART = REPO / "configs" / "quickstart.yaml"

#: The smoke fit's only callback: the two methods that share one gradient pass, on a handful of images.
XAI_CALLBACK = json.dumps(
    [
        {
            "class_path": "xai_lightning.callbacks.AttributionCallback",
            "init_args": {"methods": ["gradcam", "saliency"], "every_n_epochs": 1, "max_images_per_class": 1, "log_images": 0},
        }
    ]
)


def test_there_is_one_overlay_per_headline_backbone():
    assert BACKBONES == ["densenet121", "efficientnet_b0", "resnet18", "resnet50", "vit_b_16"]
    assert set(BACKBONES) <= set(list_backbones())


@pytest.mark.parametrize("name", BACKBONES)
def test_overlay_parses_on_top_of_the_quickstart(name, capsys):
    """The overlay goes through the real CLI parser (types checked), changing only what it sets."""
    with pytest.raises(SystemExit) as done:
        main(["--config", str(QUICKSTART), "--config", str(REPO / "configs" / "backbones" / f"{name}.yaml"), "--print_config"])
    assert done.value.code in (0, None)
    config = yaml.safe_load(capsys.readouterr().out)
    assert config["model"]["backbone"] == name
    assert config["experiment_dir"] == f"runs/backbones/{name}"
    assert config["data"]["image_size"] == 128 and config["trainer"]["max_epochs"] == 12  # the quickstart's
    assert config["model"]["lr"] == (1e-4 if name == "vit_b_16" else 1e-3)


@pytest.mark.slow
@pytest.mark.parametrize("name", BACKBONES)
def test_backbone_builds_and_runs_a_smoke_fit_with_gradcam(name, smoke_root, tmp_path):
    """One epoch at 64 pixels through the CLI, Grad-CAM + Saliency on the validation split."""
    args = [
        "--config", str(SMOKE_CONFIG),
        "--config", str(REPO / "configs" / "backbones" / f"{name}.yaml"),
        "--data.root", str(smoke_root),
        "--experiment_dir", str(tmp_path),
        "--trainer.max_epochs", "1",
        # One training step and no sanity check: the fit is about building and explaining, not learning.
        "--trainer.limit_train_batches", "1",
        "--trainer.num_sanity_val_steps", "0",
        "--trainer.callbacks", XAI_CALLBACK,
        "--test_after_fit", "false",
        # No checkpoint files: a ViT-B checkpoint with optimizer state is ~1 GB, and none is read here.
        "--checkpoint.save_top_k", "0",
        "--checkpoint.save_last", "false",
    ]  # fmt: skip
    cli = main(args)
    assert cli.model.hparams.backbone == name
    (callback,) = [c for c in cli.trainer.callbacks if type(c).__name__ == "AttributionCallback"]
    (summary,) = callback.history
    assert summary["split"] == "val" and summary["failed"] == {}
    assert summary["n_images"] >= 1
    assert math.isfinite(summary["tko"]["gradcam"]) and 0 <= summary["tko"]["gradcam"] <= 1
    logged = cli.fit_metrics["xai/val/tko/gradcam"]
    assert math.isfinite(logged) and logged == pytest.approx(summary["tko"]["gradcam"])
    assert (tmp_path / "seed0" / "finished.json").is_file()


@pytest.fixture(scope="module")
def vit() -> MultiTaskClassifier:
    torch.manual_seed(0)
    return MultiTaskClassifier(backbone="vit_b_16").eval()


@pytest.mark.parametrize("size", [64, 128])
def test_vit_grid_stage_is_the_patch_token_map(vit, size):
    images = torch.randn(2, 3, size, size)
    with torch.no_grad():
        grid = vit.encoder(images)
        out = vit(images)
    assert vit.cam_layer_name == "encoder.grid"
    assert grid.shape == (2, 768, size // 16, size // 16)
    assert out.logits.shape == (2, 5) and out.mask_logits.shape == (2, 1, size, size)


def test_vit_at_224_matches_torchvisions_encoder_and_resamples_position_embeddings():
    import torchvision

    model = torchvision.models.vit_b_16().eval()
    spec = _vit_b_16(model)  # the registry's conversion, on a model whose weights we hold
    patchify, blocks, grid = spec.encoder.patchify, spec.encoder.blocks, spec.encoder.grid
    assert spec.stage_shapes() == {"grid": (768, 16)}  # the dry 64-pixel pass the model's heads are sized by
    images = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        reference = model.encoder(torch.cat([model.class_token, model._process_input(images)], dim=1))
        ours = blocks(patchify(images))
        assert torch.allclose(ours, reference, atol=1e-5)
        # The grid is the patch tokens (class token dropped) in row-major order.
        assert torch.equal(grid(ours)[0, :, 2, 3], ours[0, 1 + 2 * 14 + 3])
        # At 64 pixels the 14×14 embeddings are resampled to 4×4; the class token's is kept.
        pos = patchify.position_embedding((4, 4))
    assert pos.shape == (1, 17, 768) and torch.equal(pos[:, 0], model.encoder.pos_embedding[:, 0])
    with pytest.raises(ConfigError, match="multiples of 16"):
        patchify(torch.zeros(1, 3, 72, 72))


def test_vit_gradcam_from_the_shared_pass_equals_captum_layer_gradcam(vit):
    torch.manual_seed(1)
    images, targets = torch.randn(3, 3, 64, 64), torch.tensor([0, 2, 4])
    explainers = build_explainers(explainer_specs(["gradcam", "saliency"]), vit)
    result = explain_batch(explainers, images, targets)
    assert result.errors == {} and set(result.shared) == {"gradcam", "saliency"}
    with attribution_mode(vit):
        layer_map = LayerGradCam(vit.classify, vit.get_submodule("encoder.grid")).attribute(
            images, target=targets, relu_attributions=True
        )
    assert layer_map.shape == (3, 1, 4, 4)
    expected = cam(layer_map.detach(), (64, 64))
    assert result.maps["gradcam"].shape == (3, 64, 64)
    assert expected.abs().amax() > 0  # a non-trivial map, so equality is not vacuous
    torch.testing.assert_close(result.maps["gradcam"], expected, rtol=1e-4, atol=1e-6)


def test_backbone_names_are_registered_once_and_scoped_registration_cleans_up():
    from xai_lightning.models import register_backbone, registered_backbones, unregister_backbone
    from xai_lightning.models.backbones import _resnet

    before = list_backbones()
    with pytest.raises(ValueError, match="'resnet18' is registered twice"):
        register_backbone("resnet18")(_resnet)
    with registered_backbones(resnet152=_resnet):
        assert "resnet152" in list_backbones()
    assert list_backbones() == before
    with pytest.raises(ValueError, match="'resnet18' is registered twice"):
        with registered_backbones(resnet152=_resnet, resnet18=_resnet):
            pass
    assert list_backbones() == before  # the failed scope removed resnet152 again and kept resnet18
    with pytest.raises(ValueError, match="not registered"):
        unregister_backbone("resnet152")
