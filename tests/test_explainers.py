"""Tests of the explainer registry and every attribution method against hand computations.

Small images (16–64 px) and one ResNet-18 per module keep the file within seconds on a CPU.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import TinyCNN
from torch import Tensor, nn

from xai_lightning.errors import ConfigError
from xai_lightning.explain import (
    REDUCTIONS,
    Explainer,
    attribution_mode,
    create_explainer,
    list_explainers,
    methods,
    reduce_attribution,
)
from xai_lightning.explain.methods import WeightedLinearRegression, make_baseline
from xai_lightning.explain.reduction import cam, max_abs, sum_abs
from xai_lightning.models import MultiTaskClassifier

#: The methods this package registers (other test modules add test doubles to the same registry).
ALL_EXPLAINERS = [
    "center_prior",
    "coarsened",
    "deeplift",
    "edge",
    "gradcam",
    "gradient_shap",
    "guided_backprop",
    "guided_gradcam",
    "input_x_gradient",
    "integrated_gradients",
    "kernel_shap",
    "lime",
    "occlusion",
    "random",
    "saliency",
    "segmentation_head",
    "smoothgrad",
]
STOCHASTIC = ["gradient_shap", "kernel_shap", "lime", "random", "smoothgrad"]
#: Fewer samples for the tests that only check validity, context and seeding (the defaults cost seconds).
CHEAP: dict[str, dict] = {
    "integrated_gradients": {"n_steps": 4},
    "smoothgrad": {"nt_samples": 4},
    "gradient_shap": {"n_samples": 4},
    "occlusion": {"stride": 16},
    "lime": {"n_samples": 16},
    "kernel_shap": {"n_samples": 16},
}



class LinearClassifier(nn.Module):
    """Logits linear in the pixels: Shapley values of superpixels are then exact per-cell sums."""

    def __init__(self, size: int, num_classes: int = 2) -> None:
        super().__init__()
        self.linear = nn.Linear(3 * size * size, num_classes)

    def classify(self, images: Tensor) -> Tensor:
        return self.linear(images.flatten(1))


@pytest.fixture(scope="module")
def resnet() -> MultiTaskClassifier:
    """ResNet-18 multi-task model with random BatchNorm statistics.

    A freshly initialised ResNet (BN mean 0, var 1, bias 0; bias-free convolutions) is positively
    homogeneous, where IG, DeepLIFT and input × gradient coincide and hide each other's bugs.
    """
    torch.manual_seed(0)
    model = MultiTaskClassifier(backbone="resnet18")
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.normal_(0.0, 0.2, generator=generator)
                module.running_var.uniform_(0.5, 2.0, generator=generator)
                module.weight.uniform_(0.5, 1.5, generator=generator)
                module.bias.normal_(0.0, 0.2, generator=generator)
    return model


@pytest.fixture(scope="module")
def tiny() -> TinyCNN:
    torch.manual_seed(0)
    return TinyCNN().eval()


def _batch(size: int, batch: int = 2, seed: int = 0) -> tuple[Tensor, Tensor]:
    generator = torch.Generator().manual_seed(seed)
    images = torch.randn(batch, 3, size, size, generator=generator)
    return images, torch.arange(batch) % 5


def _assert_valid_maps(maps: Tensor, images: Tensor) -> None:
    assert maps.shape == (images.shape[0], *images.shape[-2:])
    assert maps.dtype == torch.float32
    assert maps.device == images.device
    assert not maps.requires_grad
    assert torch.isfinite(maps).all()
    assert (maps >= 0).all()


# ---------------------------------------------------------------------------- every method
def test_registry_holds_every_method() -> None:
    defined = {
        cls.name
        for cls in vars(methods).values()
        if isinstance(cls, type) and issubclass(cls, Explainer) and "name" in vars(cls)
    }
    assert sorted(defined) == ALL_EXPLAINERS
    assert set(ALL_EXPLAINERS) <= set(list_explainers())
    stochastic = sorted(name for name in ALL_EXPLAINERS if create_explainer(name, TinyCNN()).stochastic)
    assert stochastic == STOCHASTIC


@pytest.mark.parametrize("name", ALL_EXPLAINERS)
def test_maps_are_valid_and_model_state_is_untouched(resnet: MultiTaskClassifier, name: str) -> None:
    images, targets = _batch(64)
    params = list(resnet.parameters())
    for index, param in enumerate(params):
        param.grad = torch.randn_like(param) if index % 2 else None
    before = [None if p.grad is None else p.grad.clone() for p in params]
    resnet.train()
    explainer = create_explainer(name, resnet, **CHEAP.get(name, {}))

    maps = explainer.explain(images, targets)

    _assert_valid_maps(maps, images)
    assert maps.max() > 0
    assert resnet.training
    assert all(m.training for m in resnet.modules())
    for param, grad in zip(params, before):
        assert (param.grad is None) if grad is None else torch.equal(param.grad, grad)
    assert explainer.config()["name"] == name
    assert explainer.config()["reduction"] in REDUCTIONS


@pytest.mark.parametrize("context", ["no_grad", "inference_mode"])
@pytest.mark.parametrize("name", ALL_EXPLAINERS)
def test_maps_are_the_same_inside_lightning_eval_loops(resnet: MultiTaskClassifier, name: str, context: str) -> None:
    images, targets = _batch(32)
    explainer = create_explainer(name, resnet, **CHEAP.get(name, {}))
    reference = explainer.explain(images, targets)
    if context == "no_grad":
        with torch.no_grad():
            maps = explainer.explain(images, targets)
    else:
        with torch.inference_mode():
            # Inference tensors, as Lightning's validate()/test() hand them to callbacks.
            images, targets = images.clone(), targets.clone()
            assert images.is_inference()
            maps = explainer.explain(images, targets)
    _assert_valid_maps(maps, images)
    torch.testing.assert_close(maps, reference)


def test_options_round_trip_through_the_run_record(resnet: MultiTaskClassifier) -> None:
    for name in ALL_EXPLAINERS:
        explainer = create_explainer(name, resnet)
        rebuilt = create_explainer(name, resnet, **explainer.options())
        assert rebuilt.config() == explainer.config()
    assert create_explainer("gradcam", resnet).options() == {"layer": "encoder.layer4"}
    assert create_explainer("integrated_gradients", resnet, n_steps=8).options()["n_steps"] == 8


# ---------------------------------------------------------------------------- hand computations
def test_gradcam_matches_a_hand_computation(tiny: TinyCNN) -> None:
    images, targets = _batch(16, batch=3)
    targets = torch.tensor([0, 2, 1])
    maps = create_explainer("gradcam", tiny).explain(images, targets)

    captured: list[Tensor] = []
    handle = tiny.features[2].register_forward_hook(lambda module, inputs, output: captured.append(output))
    logits = tiny.classify(images)
    handle.remove()
    activations = captured[0]  # (B, K, 8, 8)
    (grads,) = torch.autograd.grad(logits[torch.arange(3), targets].sum(), activations)
    alpha = grads.mean(dim=(2, 3), keepdim=True)
    layer_map = F.relu((alpha * activations).sum(dim=1, keepdim=True))
    expected = F.interpolate(layer_map, size=(16, 16), mode="bilinear", align_corners=False)[:, 0]

    assert (layer_map > 0).any() and (layer_map == 0).any()  # the ReLU matters in this case
    torch.testing.assert_close(maps, expected.detach(), rtol=1e-5, atol=1e-6)


def test_gradcam_upsamples_bilinearly(resnet: MultiTaskClassifier) -> None:
    images, targets = _batch(64)
    explainer = create_explainer("gradcam", resnet)
    with attribution_mode(resnet):
        layer_map = explainer.raw_attribution(images, targets)  # (B, 1, 2, 2) at stride 32
    maps = explainer.explain(images, targets)
    nearest = F.interpolate(layer_map, size=(64, 64), mode="nearest")[:, 0]
    for index in range(len(images)):
        assert maps[index].unique().numel() > 4 * layer_map[index].unique().numel()
        assert nearest[index].unique().numel() == layer_map[index].unique().numel()


def test_guided_gradcam_is_guided_backprop_times_bilinear_gradcam(resnet: MultiTaskClassifier) -> None:
    images, targets = _batch(64)
    with attribution_mode(resnet):
        guided = create_explainer("guided_backprop", resnet).raw_attribution(images, targets)
        layer_map = create_explainer("gradcam", resnet).raw_attribution(images, targets)
        combined = create_explainer("guided_gradcam", resnet).raw_attribution(images, targets)
    upsampled = F.interpolate(layer_map, size=(64, 64), mode="bilinear", align_corners=False)
    torch.testing.assert_close(combined, guided * upsampled)


class _GuidedReLU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, inputs: Tensor) -> Tensor:
        ctx.save_for_backward(inputs)
        return inputs.clamp_min(0)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        (inputs,) = ctx.saved_tensors
        return grad.clamp_min(0) * (inputs > 0)


def test_guided_backprop_matches_a_hand_written_guided_relu(resnet: MultiTaskClassifier, monkeypatch) -> None:
    # ResNet blocks call one in-place ReLU module twice: the case Captum's hooks must get right.
    images, targets = _batch(32)
    maps = create_explainer("guided_backprop", resnet).explain(images, targets)
    relus = [m for m in resnet.modules() if isinstance(m, nn.ReLU)]
    assert all(m.inplace for m in relus)  # restored after the call

    resnet.eval()
    monkeypatch.setattr(nn.ReLU, "forward", lambda self, x: _GuidedReLU.apply(x))
    inputs = images.clone().requires_grad_()
    (grads,) = torch.autograd.grad(resnet.classify(inputs)[torch.arange(2), targets].sum(), inputs)
    torch.testing.assert_close(maps, grads.abs().amax(dim=1))


def test_saliency_is_the_max_abs_gradient(tiny: TinyCNN) -> None:
    images, targets = _batch(16)
    inputs = images.clone().requires_grad_()
    (grads,) = torch.autograd.grad(tiny.classify(inputs)[torch.arange(2), targets].sum(), inputs)
    torch.testing.assert_close(create_explainer("saliency", tiny).explain(images, targets), grads.abs().amax(dim=1))


@pytest.mark.parametrize("baseline", ["zero", "black"])
def test_integrated_gradients_is_complete(tiny: TinyCNN, baseline: str) -> None:
    images, targets = _batch(16)
    explainer = create_explainer("integrated_gradients", tiny, n_steps=128, baseline=baseline)
    with attribution_mode(tiny):
        raw = explainer.raw_attribution(images, targets)
    with torch.no_grad():
        picked = torch.arange(2), targets
        difference = tiny.classify(images)[picked] - tiny.classify(make_baseline(baseline, images))[picked]
    assert raw.shape == images.shape
    assert difference.abs().min() > 1e-2  # a non-trivial case
    torch.testing.assert_close(raw.sum(dim=(1, 2, 3)), difference, rtol=1e-2, atol=1e-3)
    torch.testing.assert_close(explainer.explain(images, targets), raw.abs().sum(dim=1))


@pytest.mark.parametrize("baseline", ["zero", "black"])
def test_deeplift_sums_to_delta_on_a_resnet(resnet: MultiTaskClassifier, baseline: str) -> None:
    # Plain Captum raises on the reused ReLUs, and with those fixed misses this by ~20 %
    # (stem ReLU → MaxPool hook order, overlapping max-pool windows); the twin fixes all three.
    images, targets = _batch(64)
    explainer = create_explainer("deeplift", resnet, baseline=baseline)
    with attribution_mode(resnet):
        raw = explainer.raw_attribution(images, targets)
        picked = torch.arange(2), targets
        with torch.no_grad():
            difference = resnet.classify(images)[picked] - resnet.classify(make_baseline(baseline, images))[picked]
    torch.testing.assert_close(raw.sum(dim=(1, 2, 3)), difference, rtol=1e-4, atol=1e-5)


def test_deeplift_follows_the_live_weights(resnet: MultiTaskClassifier) -> None:
    images, targets = _batch(32)
    explainer = create_explainer("deeplift", resnet)
    explainer.explain(images, targets)
    head = resnet.classifier[3]
    original = head.weight
    try:
        # A new Parameter object (as load_state_dict(assign=True) or a device move may create).
        head.weight = nn.Parameter(torch.randn_like(original))
        with attribution_mode(resnet):
            raw = explainer.raw_attribution(images, targets)
            with torch.no_grad():
                picked = torch.arange(2), targets
                difference = resnet.classify(images)[picked] - resnet.classify(torch.zeros_like(images))[picked]
        torch.testing.assert_close(raw.sum(dim=(1, 2, 3)), difference, rtol=1e-4, atol=1e-5)
    finally:
        head.weight = original


def test_input_x_gradient_and_occlusion_by_hand() -> None:
    torch.manual_seed(0)
    model = LinearClassifier(8)
    images, targets = _batch(8)
    weights = model.linear.weight.detach()[targets].view(2, 3, 8, 8)
    torch.testing.assert_close(
        create_explainer("input_x_gradient", model).explain(images, targets), (images * weights).abs().sum(dim=1)
    )
    # Non-overlapping 4-px windows on a linear model: each window's drop is its own contribution,
    # given to all its pixels and channels.
    maps = create_explainer("occlusion", model, window=4, stride=4).explain(images, targets)
    cells = F.avg_pool2d((images * weights).sum(dim=1, keepdim=True), 4) * 16
    expected = 3 * F.interpolate(cells, scale_factor=4, mode="nearest")[:, 0].abs()
    torch.testing.assert_close(maps, expected)


@pytest.mark.parametrize("name", ["kernel_shap", "lime"])
def test_superpixel_surrogates_are_exact_on_a_linear_model(name: str) -> None:
    # The logit is additive over superpixels, so an exact least-squares surrogate recovers each
    # superpixel's contribution Σ w·x (the baseline is 0) whatever coalitions were sampled.
    torch.manual_seed(0)
    model = LinearClassifier(16)
    images, targets = _batch(16)
    options = {"alpha": 0.0} if name == "lime" else {}
    explainer = create_explainer(name, model, cell=8, n_samples=32, **options)
    with attribution_mode(model):
        raw = explainer.raw_attribution(images, targets)
    weights = model.linear.weight.detach()[targets].view(2, 3, 16, 16)
    cells = F.avg_pool2d((images * weights).sum(dim=1, keepdim=True), 8) * 64
    expected = F.interpolate(cells, scale_factor=8, mode="nearest").expand(-1, 3, -1, -1)
    torch.testing.assert_close(raw, expected, rtol=1e-4, atol=1e-4)


def test_weighted_linear_regression_solves_weighted_least_squares() -> None:
    from torch.utils.data import DataLoader, TensorDataset

    generator = torch.Generator().manual_seed(0)
    x = torch.bernoulli(torch.full((40, 5), 0.5), generator=generator)
    coef = torch.tensor([1.0, -2.0, 0.5, 0.0, 3.0])
    y = x @ coef + 0.7
    w = torch.rand(40, generator=generator) + 0.1
    exact = WeightedLinearRegression()
    exact.fit(DataLoader(TensorDataset(x, y, w), batch_size=40))
    torch.testing.assert_close(exact.representation(), coef.view(1, 5), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(exact(x), y.view(-1, 1), rtol=1e-4, atol=1e-4)
    ridge = WeightedLinearRegression(alpha=10.0)
    ridge.fit(DataLoader(TensorDataset(x, y, w), batch_size=40))
    assert ridge.representation().norm() < 0.9 * coef.norm()


def test_segmentation_head_is_the_predicted_mask(resnet: MultiTaskClassifier) -> None:
    images, targets = _batch(64)
    maps = create_explainer("segmentation_head", resnet).explain(images, targets)
    resnet.eval()
    with torch.no_grad():
        expected = torch.sigmoid(resnet(images).mask_logits)[:, 0]
    torch.testing.assert_close(maps, expected)


@pytest.mark.parametrize("name", STOCHASTIC)
def test_stochastic_methods_are_seeded(resnet: MultiTaskClassifier, name: str) -> None:
    images, targets = _batch(32)
    options = CHEAP.get(name, {})
    first = create_explainer(name, resnet, seed=3, **options).explain(images, targets)
    torch.manual_seed(123)  # the global RNG states must not matter
    np.random.seed(123)
    again = create_explainer(name, resnet, seed=3, **options).explain(images, targets)
    other = create_explainer(name, resnet, seed=4, **options).explain(images, targets)
    assert torch.equal(first, again)
    assert not torch.allclose(first, other)


@pytest.mark.parametrize("name", STOCHASTIC)
def test_stochastic_maps_do_not_depend_on_the_batch(resnet: MultiTaskClassifier, name: str) -> None:
    """An image's map is the same alone or in a batch, so DDP shards and batch sizes agree."""
    images, targets = _batch(32)
    explainer = create_explainer(name, resnet, seed=5, **CHEAP.get(name, {}))
    together = explainer.explain(images, targets)
    alone = explainer.explain(images[1:2], targets[1:2])
    torch.testing.assert_close(together[1:2], alone)
    assert not torch.equal(together[0], together[1])  # each image draws its own noise


@pytest.mark.parametrize("name", ["gradient_shap", "smoothgrad"])
def test_explaining_leaves_the_global_rngs_alone(resnet: MultiTaskClassifier, name: str) -> None:
    images, targets = _batch(32)
    torch.manual_seed(7)
    np.random.seed(7)
    expected = torch.rand(3), np.random.rand(3)
    torch.manual_seed(7)
    np.random.seed(7)
    create_explainer(name, resnet, **CHEAP[name]).explain(images, targets)
    assert torch.equal(torch.rand(3), expected[0])
    assert np.array_equal(np.random.rand(3), expected[1])


# ---------------------------------------------------------------------------- reductions
def test_reductions_on_hand_cases() -> None:
    attribution = torch.tensor([[[[1.0, -4.0]], [[-3.0, 2.0]], [[0.5, 0.0]]]])  # (1, 3, 1, 2)
    torch.testing.assert_close(max_abs(attribution), torch.tensor([[[3.0, 4.0]]]))
    torch.testing.assert_close(sum_abs(attribution), torch.tensor([[[4.5, 6.0]]]))
    torch.testing.assert_close(reduce_attribution("sum_abs", attribution, (1, 2)), torch.tensor([[[4.5, 6.0]]]))

    layer_map = torch.tensor([[[[1.0, -2.0], [0.0, 3.0]]]])  # (1, 1, 2, 2)
    upsampled = cam(layer_map, (4, 4))
    assert upsampled.shape == (1, 4, 4)
    assert (upsampled >= 0).all()
    # Bilinear with align_corners=False: corners copy the (ReLU-ed) cells, inner pixels blend.
    assert upsampled[0, 0, 0] == 1.0 and upsampled[0, 3, 3] == 3.0 and upsampled[0, 0, 3] == 0.0
    torch.testing.assert_close(upsampled[0, 1, 1], torch.tensor(0.75 * 0.75 * 1.0 + 0.25 * 0.25 * 3.0))

    maps = torch.rand(2, 5, 5)
    assert torch.equal(reduce_attribution("none", maps.unsqueeze(1), (5, 5)), maps)
    with pytest.raises(ValueError, match="Unknown reduction"):
        reduce_attribution("mean", maps, (5, 5))
    with pytest.raises(ValueError):
        max_abs(attribution, size=(4, 4))


# ---------------------------------------------------------------------------- registry errors
def test_registry_errors_and_filtering(resnet: MultiTaskClassifier) -> None:
    with pytest.raises(ConfigError, match="Unknown explainer 'gradcam\\+\\+'.*integrated_gradients"):
        create_explainer("gradcam++", resnet)
    with pytest.raises(ConfigError, match="explainer integrated_gradients: n_steps"):
        create_explainer("integrated_gradients", resnet, n_steps=0)
    with pytest.raises(ConfigError, match="explainer integrated_gradients: baseline"):
        create_explainer("integrated_gradients", resnet, baseline="white")
    with pytest.raises(ConfigError, match="explainer smoothgrad: stdevs"):
        create_explainer("smoothgrad", resnet, stdevs=-0.1)
    with pytest.raises(ConfigError, match="explainer occlusion: window"):
        create_explainer("occlusion", resnet, window=True)
    with pytest.raises(ConfigError, match="explainer gradcam: layer 'encoder.layer9'"):
        create_explainer("gradcam", resnet, layer="encoder.layer9")
    with pytest.raises(ConfigError, match="Bad options for explainer 'saliency'.*n_steps"):
        create_explainer("saliency", resnet, n_steps=4)
    images, targets = _batch(16)
    with pytest.raises(ConfigError, match="explainer occlusion: window 32"):
        create_explainer("occlusion", resnet, window=32).explain(images, targets)
    assert create_explainer("gradcam", resnet, layer="encoder.layer3").options() == {"layer": "encoder.layer3"}
    assert list_explainers("*grad*") == [
        "gradcam",
        "gradient_shap",
        "guided_gradcam",
        "input_x_gradient",
        "integrated_gradients",
        "smoothgrad",
    ]


# ---------------------------------------------------------------------------- run record and options
#: What explainers.json records for each method with its defaults (on TinyCNN), in this key order:
#: the record of an existing config must not change when the code moves.
DEFAULT_RECORDS = {
    "center_prior": {"sigma": 0.25},
    "coarsened": {"inner": "saliency", "inner_options": None, "grid": None},
    "deeplift": {"baseline": "zero"},
    "edge": {"blur_sigma": 0.0},
    "gradcam": {"layer": "features.2"},
    "gradient_shap": {"n_samples": 16, "stdevs": 0.1},
    "guided_backprop": {},
    "guided_gradcam": {"layer": "features.2"},
    "input_x_gradient": {},
    "integrated_gradients": {
        "n_steps": 32,
        "baseline": "zero",
        "internal_batch_size": None,
        "method": "gausslegendre",
        "completeness_tolerance": None,
        "min_steps": 8,
    },
    "kernel_shap": {"cell": 16, "n_samples": 64, "perturbations_per_eval": 16, "baseline": "zero"},
    "lime": {"cell": 16, "n_samples": 64, "perturbations_per_eval": 16, "baseline": "zero", "alpha": 1.0},
    "occlusion": {"window": 16, "stride": 8, "baseline": "zero", "perturbations_per_eval": 16},
    "random": {},
    "saliency": {},
    "segmentation_head": {},
    "smoothgrad": {"nt_samples": 16, "stdevs": 0.15, "nt_samples_batch_size": 8},
}


@pytest.mark.parametrize("name", ALL_EXPLAINERS)
def test_the_run_record_of_default_options_is_unchanged(name: str) -> None:
    explainer = create_explainer(name, TinyCNN())
    expected = {"name": name, "reduction": explainer.reduction, "stochastic": name in STOCHASTIC}
    expected.update(DEFAULT_RECORDS[name])
    assert list(explainer.config().items()) == list(expected.items())
    # The options are stated once, as the fields of the explainer's Options dataclass.
    assert type(explainer).Options.names() == tuple(DEFAULT_RECORDS[name])
    assert explainer.options() == explainer.settings.as_dict()


def test_options_dataclasses_check_and_normalise_their_values() -> None:
    from dataclasses import FrozenInstanceError

    from xai_lightning.explain.methods import IntegratedGradientsOptions, LimeOptions, SmoothGradOptions

    assert SmoothGradOptions(stdevs=1).stdevs == 1.0 and isinstance(SmoothGradOptions(stdevs=1).stdevs, float)
    assert LimeOptions().as_dict() == DEFAULT_RECORDS["lime"]
    with pytest.raises(ConfigError, match=r"^n_steps is 0; it must be a positive integer\.$"):
        IntegratedGradientsOptions(n_steps=0)  # the explainer adds its own name to the message
    with pytest.raises(ConfigError, match="min_steps \\(16\\) is above n_steps \\(8\\)"):
        IntegratedGradientsOptions(n_steps=8, min_steps=16, completeness_tolerance=0.1)
    assert IntegratedGradientsOptions(n_steps=8, min_steps=16).min_steps == 16  # only the adaptive mode needs it
    with pytest.raises(FrozenInstanceError):
        IntegratedGradientsOptions().n_steps = 4  # type: ignore[misc]
    with pytest.raises(ConfigError, match="^explainer integrated_gradients: min_steps \\(16\\)"):
        create_explainer("integrated_gradients", TinyCNN(), n_steps=8, min_steps=16, completeness_tolerance=0.1)
    with pytest.raises(ConfigError, match="^explainer gradcam: layer is 3; give a dotted module path"):
        create_explainer("gradcam", TinyCNN(), layer=3)
    with pytest.raises(ConfigError, match="Bad options for explainer 'random': .* unexpected keyword argument 'x'"):
        create_explainer("random", TinyCNN(), x=1)


# ---------------------------------------------------------------------------- baselines
def test_mean_is_the_one_name_of_the_dataset_mean_baseline_and_zero_its_alias(tiny: TinyCNN) -> None:
    from xai_lightning.explain.baselines import CURVE_BASELINES, EXPLAINER_BASELINES, baseline_image, canonical_baseline

    images, targets = _batch(16)
    assert torch.equal(make_baseline("mean", images), torch.zeros_like(images))
    assert torch.equal(make_baseline("zero", images), make_baseline("mean", images))
    assert canonical_baseline("zero") == "mean" and set(EXPLAINER_BASELINES) - {"zero"} <= {"mean", "black", "blur"}
    assert CURVE_BASELINES == ("blur", "mean")
    assert torch.equal(baseline_image("blur", images, 2.0), baseline_image("blur", images, blur_sigma=2.0))
    with pytest.raises(ValueError, match="Unknown baseline 'white'"):
        baseline_image("white", images)
    for name in ("integrated_gradients", "deeplift", "occlusion"):
        options = CHEAP.get(name, {})
        by_alias = create_explainer(name, tiny, baseline="zero", **options)
        by_name = create_explainer(name, tiny, baseline="mean", **options)
        # Each name is recorded as given, so a config saying `zero` keeps the record it had.
        assert by_alias.options()["baseline"] == "zero" and by_name.options()["baseline"] == "mean"
        torch.testing.assert_close(by_alias.explain(images, targets), by_name.explain(images, targets))


# ---------------------------------------------------------------------------- registry rules
class _Constant(Explainer):
    """A test double: the same map for every image."""

    name = "test_constant"
    reduction = "none"

    def attribute(self, images: Tensor, targets: Tensor) -> Tensor:
        return images.new_ones(len(images), *images.shape[-2:])


def test_scoped_registration_leaves_the_registry_as_it_was() -> None:
    from xai_lightning.explain import registered_explainers, unregister_explainer

    before = list_explainers()
    with registered_explainers(_Constant):
        assert "test_constant" in list_explainers()
        maps = create_explainer("test_constant", TinyCNN()).explain(*_batch(8))
        assert maps.shape == (2, 8, 8) and create_explainer("test_constant", TinyCNN()).options() == {}
    assert list_explainers() == before
    with pytest.raises(RuntimeError, match="inside"):
        with registered_explainers(_Constant):
            raise RuntimeError("inside")
    assert list_explainers() == before
    with pytest.raises(ValueError, match="not registered"):
        unregister_explainer("test_constant")


def test_a_name_is_registered_once() -> None:
    from xai_lightning.explain import register_explainer, registered_explainers, unregister_explainer

    class _Gradcam(_Constant):
        name = "gradcam"

    before = list_explainers()
    with pytest.raises(ValueError, match="'gradcam' is registered twice"):
        register_explainer(_Gradcam)
    with pytest.raises(ValueError, match="'gradcam' is registered twice"):
        with registered_explainers(_Constant, _Gradcam):
            pass
    # The failed scope removed what it had added, and left the built-in entry in place.
    assert list_explainers() == before
    assert type(create_explainer("gradcam", TinyCNN())).__name__ == "GradCAMExplainer"
    register_explainer(_Constant)
    try:
        with pytest.raises(ValueError, match="registered twice"):
            register_explainer(_Constant)
    finally:
        assert unregister_explainer("test_constant") is _Constant


def test_the_interface_module_does_not_import_the_methods() -> None:
    """The package import fills the registry; ``base`` imports no method module (no import cycle)."""
    import ast
    import inspect

    from xai_lightning.explain import base

    imported = set()
    for node in ast.walk(ast.parse(inspect.getsource(base))):
        if isinstance(node, ast.ImportFrom):
            imported.add(node.module)
        elif isinstance(node, ast.Import):
            imported.update(alias.name for alias in node.names)
    assert not {module for module in imported if module.startswith("xai_lightning.explain.methods")}
    assert not hasattr(base, "_load_builtin_explainers")
