"""The fast paths give the same maps as the plain ones: the shared-gradient pass and batched Integrated Gradients.

The references are Captum's own classes, called directly, so a change in either side shows here.
"""

from __future__ import annotations

import pytest
import torch
from captum.attr import InputXGradient, IntegratedGradients, LayerGradCam, Saliency
from torch import Tensor, nn

from xai_lightning.explain import attribution_mode, create_explainer
from xai_lightning.explain.engine import explain_batch, shared_group
from xai_lightning.explain.integrated_gradients import (
    adaptive_integrated_gradients,
    completeness_error,
    integrated_gradients,
)
from xai_lightning.explain.methods import make_baseline
from xai_lightning.explain.reduction import cam
from xai_lightning.models import MultiTaskClassifier

GROUP = ["gradcam", "saliency", "input_x_gradient", "segmentation_head"]


@pytest.fixture(scope="module")
def model() -> MultiTaskClassifier:
    torch.manual_seed(0)
    model = MultiTaskClassifier(backbone="resnet18").eval()
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():  # non-trivial BatchNorm statistics, as after training
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.normal_(0.0, 0.2, generator=generator)
                module.running_var.uniform_(0.5, 2.0, generator=generator)
    return model


def _batch(size: int = 64, batch: int = 3, seed: int = 0) -> tuple[Tensor, Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 3, size, size, generator=generator), torch.tensor([0, 3, 1, 4, 2][:batch])


def _captum_maps(model: MultiTaskClassifier, images: Tensor, targets: Tensor, layer: str) -> dict[str, Tensor]:
    """Each group method computed separately with Captum (and the model's own forward for the head)."""
    size = images.shape[-2:]
    with attribution_mode(model):
        x = images.clone()
        grad_cam = LayerGradCam(model.classify, model.get_submodule(layer)).attribute(x, target=targets, relu_attributions=True)
        saliency = Saliency(model.classify).attribute(x, target=targets, abs=True)
        input_x_gradient = InputXGradient(model.classify).attribute(x, target=targets)
        mask = torch.sigmoid(model(x).mask_logits)[:, 0]
    return {
        "gradcam": cam(grad_cam.detach(), size),
        "saliency": saliency.amax(dim=1),
        "input_x_gradient": input_x_gradient.detach().abs().sum(dim=1),
        "segmentation_head": mask.detach(),
    }


# ---------------------------------------------------------------------------- shared pass
@pytest.mark.parametrize("layer", ["encoder.layer4", "encoder.layer3"])
def test_shared_pass_equals_separate_captum_calls(model: MultiTaskClassifier, layer: str) -> None:
    images, targets = _batch()
    explainers = {name: create_explainer(name, model, **({"layer": layer} if name == "gradcam" else {})) for name in GROUP}
    result = explain_batch(explainers, images, targets)
    assert result.shared == tuple(GROUP) and not result.errors
    expected = _captum_maps(model, images, targets, layer)
    for name in GROUP:
        torch.testing.assert_close(result.maps[name], expected[name], rtol=1e-5, atol=1e-6, msg=name)
        torch.testing.assert_close(result.maps[name], explainers[name].explain(images, targets), rtol=1e-5, atol=1e-6)


def test_shared_pass_serves_two_layers_and_leaves_the_model_alone(model: MultiTaskClassifier) -> None:
    images, targets = _batch(batch=2)
    explainers = {
        "cam4": create_explainer("gradcam", model),
        "cam3": create_explainer("gradcam", model, layer="encoder.layer3"),
        "saliency": create_explainer("saliency", model),
    }
    model.train()
    model.encoder.layer1.eval()  # a frozen part stays frozen
    for p in model.parameters():
        p.grad = None
    result = explain_batch(explainers, images, targets)
    assert result.shared == ("cam4", "cam3", "saliency")
    assert not torch.equal(result.maps["cam4"], result.maps["cam3"])
    assert model.training and not model.encoder.layer1.training and model.encoder.layer2.training
    assert all(p.grad is None for p in model.parameters())
    model.eval()
    torch.testing.assert_close(result.maps["cam3"], _captum_maps(model, images, targets, "encoder.layer3")["gradcam"])


def test_a_single_group_member_keeps_its_own_computation(model: MultiTaskClassifier) -> None:
    explainers = {"saliency": create_explainer("saliency", model), "random": create_explainer("random", model)}
    assert shared_group(explainers) == ([], None)
    images, targets = _batch(batch=2)
    assert explain_batch(explainers, images, targets).shared == ()


def test_failures_are_reported_per_method(model: MultiTaskClassifier) -> None:
    images, targets = _batch(batch=2)
    explainers = {name: create_explainer(name, model) for name in ("gradcam", "saliency", "random")}

    def broken(gradients):
        raise RuntimeError("boom")

    explainers["saliency"].from_gradients = broken
    explainers["random"].attribute = lambda images, targets: torch.full(images.shape[:1] + images.shape[2:], float("nan"))
    result = explain_batch(explainers, images, targets)
    assert list(result.maps) == ["gradcam"]
    assert isinstance(result.errors["saliency"], RuntimeError) and "boom" in str(result.errors["saliency"])
    assert isinstance(result.errors["random"], FloatingPointError)
    assert set(result.seconds) == {"gradcam"}


class ClassifierOnly(nn.Module):
    """A model without a segmentation head: the shared pass cannot serve ``segmentation_head``."""

    cam_layer_name = "features.0"

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU())
        self.head = nn.Linear(4, 5)

    def classify(self, images: Tensor) -> Tensor:
        return self.head(self.features(images).mean(dim=(2, 3)))

    def forward(self, images: Tensor) -> Tensor:
        return self.classify(images)


def test_a_failing_shared_pass_falls_back_to_each_method_alone() -> None:
    torch.manual_seed(0)
    model = ClassifierOnly().eval()
    explainers = {name: create_explainer(name, model) for name in ("gradcam", "saliency", "segmentation_head")}
    images, targets = _batch(size=16, batch=2)
    result = explain_batch(explainers, images, targets)
    assert result.shared == ()
    assert set(result.maps) == {"gradcam", "saliency"}
    assert "mask_logits" in str(result.errors["segmentation_head"])


# ---------------------------------------------------------------------------- integrated gradients
def test_batched_integrated_gradients_equals_captum_and_unbatched(model: MultiTaskClassifier) -> None:
    images, targets = _batch(size=32, batch=3)
    baselines = make_baseline("black", images)
    with attribution_mode(model):
        reference = IntegratedGradients(model.classify).attribute(
            images.clone(), baselines=baselines, target=targets, n_steps=10, method="gausslegendre"
        )
        by_chunk = {
            size: integrated_gradients(model.classify, images, baselines, targets, 10, "gausslegendre", size)
            for size in (1, 7, 30, 64)
        }
    for size, found in by_chunk.items():
        torch.testing.assert_close(found, reference, rtol=1e-4, atol=1e-6, msg=f"internal batch {size}")
    explainer = create_explainer("integrated_gradients", model, n_steps=10, baseline="black", internal_batch_size=7)
    torch.testing.assert_close(explainer.explain(images, targets), reference.detach().abs().sum(dim=1), rtol=1e-4, atol=1e-6)


def test_integrated_gradients_never_runs_more_than_the_internal_batch(model: MultiTaskClassifier) -> None:
    images, targets = _batch(size=16, batch=3)
    seen: list[int] = []

    def forward(x: Tensor) -> Tensor:
        seen.append(len(x))
        return model.classify(x)

    with attribution_mode(model):
        integrated_gradients(forward, images, torch.zeros_like(images), targets, n_steps=50, internal_batch_size=4)
    assert max(seen) == 4 and sum(seen) == 3 * 50


def test_adaptive_steps_meet_the_tolerance_with_fewer_steps(model: MultiTaskClassifier) -> None:
    images, targets = _batch(size=16, batch=3)
    baselines = torch.zeros_like(images)
    with attribution_mode(model):
        fixed = integrated_gradients(model.classify, images, baselines, targets, n_steps=64, internal_batch_size=64)
        fixed_error = completeness_error(model.classify, images, baselines, targets, fixed)
        tolerance = float(fixed_error.max()) * 4 + 1e-4
        _, steps, error = adaptive_integrated_gradients(
            model.classify, images, baselines, targets, tolerance, min_steps=4, max_steps=64, internal_batch_size=64
        )
        # Tolerance 0 refines every image to the cap: exactly the fixed computation.
        capped, capped_steps, _ = adaptive_integrated_gradients(
            model.classify, images, baselines, targets, 0.0, min_steps=4, max_steps=64, internal_batch_size=64
        )
    assert (error <= tolerance).all()
    assert steps.max() <= 64 and steps.sum() < 3 * 64
    assert set(steps.tolist()) <= {4, 8, 16, 32, 64}
    assert (capped_steps == 64).all()
    torch.testing.assert_close(capped, fixed)


def test_integrated_gradients_explainer_adaptive_option(model: MultiTaskClassifier) -> None:
    images, targets = _batch(size=32, batch=2)
    explainer = create_explainer("integrated_gradients", model, n_steps=16, completeness_tolerance=1e9, min_steps=2)
    explainer.explain(images, targets)
    assert explainer.last_steps.tolist() == [2, 2]  # any error is within a huge tolerance
    assert explainer.options()["completeness_tolerance"] == 1e9


def test_gradient_pass_takes_no_weight_gradients(model: MultiTaskClassifier) -> None:
    # Outside attribution_mode, which would restore .grad and hide a leak.
    from xai_lightning.explain.shared import GradientRequest, gradient_pass

    images, targets = _batch(batch=2)
    for p in model.parameters():
        p.grad = None
    with torch.enable_grad():
        gradient_pass(model, images, targets, GradientRequest(input_gradient=True, layers=("encoder.layer4",)))
    assert all(p.grad is None for p in model.parameters())


def test_shared_pass_works_with_frozen_layers_before_the_cam_layer(model: MultiTaskClassifier) -> None:
    images, targets = _batch(batch=2)
    explainers = {name: create_explainer(name, model) for name in ("gradcam", "segmentation_head")}
    frozen = list(model.encoder.parameters())  # the CAM layer's output then needs no gradient by itself
    for p in frozen:
        p.requires_grad_(False)
    try:
        result = explain_batch(explainers, images, targets)
    finally:
        for p in frozen:
            p.requires_grad_(True)
    assert result.shared == ("gradcam", "segmentation_head") and not result.errors
    torch.testing.assert_close(result.maps["gradcam"], _captum_maps(model, images, targets, "encoder.layer4")["gradcam"])
