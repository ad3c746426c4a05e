"""The multi-task model: loss = CE + λ·BCE, backbones by name, pretrained weights through torchvision."""

from __future__ import annotations

import math
from urllib.error import URLError

import pytest
import torch
import torchvision

from xai_lightning.errors import ConfigError
from xai_lightning.models import MultiTaskClassifier, create_backbone, list_backbones
from xai_lightning.models.losses import multitask_loss


def test_loss_is_ce_plus_lambda_bce_on_hand_made_tensors():
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.5, 0.5, 1.0]])
    labels = torch.tensor([0, 2])
    mask_logits = torch.tensor([[[[0.0, 3.0], [-2.0, 1.0]]], [[[1.0, -1.0], [0.0, 0.0]]]])
    masks = torch.tensor([[[[0.0, 1.0], [0.0, 1.0]]], [[[1.0, 0.0], [0.0, 0.0]]]])

    def log_softmax(row, i):
        return row[i] - math.log(sum(math.exp(v) for v in row))

    ce = -(log_softmax([2.0, 0.0, -1.0], 0) + log_softmax([0.5, 0.5, 1.0], 2)) / 2

    def bce(z, y):
        p = 1 / (1 + math.exp(-z))
        return -(y * math.log(p) + (1 - y) * math.log(1 - p))

    pairs = zip(mask_logits.flatten().tolist(), masks.flatten().tolist())
    bce_mean = sum(bce(z, y) for z, y in pairs) / masks.numel()
    for lam in (0.0, 0.3, 2.0):
        out = multitask_loss(logits, mask_logits, labels, masks, lam)
        assert out.ce.item() == pytest.approx(ce, rel=1e-6)
        assert out.bce.item() == pytest.approx(bce_mean, rel=1e-6)
        assert out.loss.item() == pytest.approx(ce + lam * bce_mean, rel=1e-6)


def test_class_weights_enter_the_cross_entropy():
    logits, labels = torch.tensor([[1.0, 0.0], [0.0, 1.0]]), torch.tensor([0, 0])
    masks = torch.zeros(2, 1, 2, 2)
    plain = multitask_loss(logits, masks, labels, masks, 0.0).ce
    weighted = multitask_loss(logits, masks, labels, masks, 0.0, torch.tensor([3.0, 1.0])).ce
    assert weighted.item() == pytest.approx(plain.item())  # one class present: the weights cancel in the mean
    mixed = multitask_loss(logits, masks, torch.tensor([0, 1]), masks, 0.0, torch.tensor([3.0, 1.0])).ce
    expected = (3 * -math.log(math.e / (math.e + 1)) + -math.log(math.e / (math.e + 1))) / 4
    assert mixed.item() == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("backbone", ["resnet18", "resnet50", "densenet121", "efficientnet_b0"])
def test_backbones_give_logits_and_full_resolution_mask_logits(backbone):
    model = MultiTaskClassifier(backbone=backbone).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, 64, 64))
    assert out.logits.shape == (2, 5) and out.mask_logits.shape == (2, 1, 64, 64)
    assert isinstance(model.cam_layer, torch.nn.Module)


def test_bad_model_options_are_named():
    with pytest.raises(ConfigError, match="Unknown backbone 'resnet7'.*resnet18"):
        MultiTaskClassifier(backbone="resnet7")
    with pytest.raises(ConfigError, match="seg_loss_weight"):
        MultiTaskClassifier(seg_loss_weight=-0.1)
    with pytest.raises(ConfigError, match="class_weights"):
        MultiTaskClassifier(class_weights=[1.0, 2.0])
    assert {"resnet18", "resnet50", "densenet121", "efficientnet_b0"} <= set(list_backbones())
    assert list_backbones("resnet*") == ["resnet101", "resnet18", "resnet34", "resnet50"]


def test_pretrained_weights_load_through_torchvisions_cache(tmp_path, monkeypatch):
    """`pretrained: true` takes torchvision's weights API; a cached file is used as a download would be."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    weights = torchvision.models.ResNet18_Weights.DEFAULT
    reference = torchvision.models.resnet18()
    checkpoints = tmp_path / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    torch.save(reference.state_dict(), checkpoints / weights.url.rsplit("/", 1)[-1])
    backbone = create_backbone("resnet18", pretrained=True)
    assert torch.equal(backbone.encoder.layer4[1].conv2.weight, reference.layer4[1].conv2.weight)
    assert torch.equal(backbone.encoder.stem[0].weight, reference.conv1.weight)


def test_pretrained_without_network_says_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))

    def no_network(*args, **kwargs):
        raise URLError("no route to host")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    with pytest.raises(ConfigError, match="model.pretrained: false") as error:
        create_backbone("resnet18", pretrained=True)
    assert "resnet18-" in str(error.value) and str(tmp_path) in str(error.value)
