"""Sanity checks (cascading randomisation, run-to-run stability) and cross-method agreement."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats

from xai_lightning.metrics.agreement import (
    agreement_matrix,
    top_fraction_count,
    top_fraction_iou,
    top_fraction_mask,
)
from xai_lightning.metrics.sanity import (
    cascading_randomization,
    default_randomization_layers,
    randomize_layer,
    sanity_verdict,
    spearman,
    stability,
)
from xai_lightning.models.multitask import MultiTaskClassifier


@pytest.fixture(scope="module")
def model() -> MultiTaskClassifier:
    torch.manual_seed(0)
    return MultiTaskClassifier(backbone="resnet18").train()


def _images(n: int, size: int, seed: int = 1) -> torch.Tensor:
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


# ----------------------------------------------------------------------------- spearman
def test_spearman_matches_scipy_with_ties():
    generator = torch.Generator().manual_seed(0)
    # Few distinct values: many ties in every row.
    a = torch.randint(0, 5, (6, 9, 11), generator=generator).float()
    b = torch.randint(0, 7, (6, 9, 11), generator=generator).float() + 0.3 * a
    rho = spearman(a, b)
    assert rho.dtype == torch.float64 and rho.shape == (6,)
    expected = [stats.spearmanr(x.flatten().numpy(), y.flatten().numpy())[0] for x, y in zip(a, b)]
    np.testing.assert_allclose(rho.numpy(), expected, rtol=0, atol=1e-12)


def test_spearman_identical_constant_and_nonfinite_rows():
    a = torch.rand(3, 8, 8)
    assert torch.equal(spearman(a, a), torch.ones(3, dtype=torch.float64))
    assert torch.allclose(spearman(a, -a), -torch.ones(3, dtype=torch.float64))
    b = a.clone()
    b[1] = 0.5  # constant row
    b[2, 0, 0] = float("nan")
    rho = spearman(a, b)
    assert rho[0] == 1.0 and rho[1:].isnan().all()


# ----------------------------------------------------------------------------- agreement
def test_top_fraction_mask_exact_count_and_tie_break():
    maps = torch.zeros(2, 10, 10)
    maps[1, 9, 9] = 1.0
    maps[1, 0, 5] = float("nan")
    mask = top_fraction_mask(maps, 0.05)
    assert top_fraction_count(10, 10, 0.05) == 5
    assert mask.flatten(1).sum(1).tolist() == [5, 5]
    # All tied: the lowest flat indices win; NaN is never preferred over a finite value.
    assert mask[0].flatten().nonzero().flatten().tolist() == [0, 1, 2, 3, 4]
    assert mask[1].flatten().nonzero().flatten().tolist() == [0, 1, 2, 3, 99]


def test_top_fraction_iou_identical_and_disjoint():
    a = torch.rand(3, 16, 16)
    assert torch.equal(top_fraction_iou(a, a, 0.1), torch.ones(3, dtype=torch.float64))
    assert torch.equal(top_fraction_iou(a, -a, 0.1), torch.zeros(3, dtype=torch.float64))
    left = torch.zeros(1, 4, 4)
    left[0, :, :2] = 1
    assert top_fraction_iou(left, 1 - left, 0.5).item() == 0.0


def test_agreement_matrix_symmetric_with_unit_diagonal_and_per_class():
    generator = torch.Generator().manual_seed(0)
    base = torch.rand(4, 12, 12, generator=generator)
    maps = {
        "a": base,
        "b": base + 0.3 * torch.rand(4, 12, 12, generator=generator),
        "c": torch.rand(4, 12, 12, generator=generator),
    }
    result = agreement_matrix(maps, labels=torch.tensor([0, 1, 0, 1]), class_names=["crack", "good"])
    matrix = result.overall.to_numpy()
    np.testing.assert_array_equal(matrix, matrix.T)
    np.testing.assert_array_equal(np.diag(matrix), np.ones(3))
    assert list(result.overall.index) == ["a", "b", "c"] == list(result.overall.columns)
    assert matrix[0, 1] > matrix[0, 2]  # a perturbed copy agrees more than an unrelated map
    expected_ab = top_fraction_iou(maps["a"], maps["b"]).mean().item()
    assert result.overall.loc["a", "b"] == pytest.approx(expected_ab)
    crack = result.per_class.loc["crack"]
    np.testing.assert_array_equal(crack.to_numpy(), crack.to_numpy().T)
    expected = top_fraction_iou(maps["a"][[0, 2]], maps["c"][[0, 2]]).mean().item()
    assert crack.loc["a", "c"] == pytest.approx(expected)
    assert agreement_matrix(maps).per_class is None


# ----------------------------------------------------------------------------- randomisation
def test_default_layers_and_randomize_layer(model):
    assert default_randomization_layers(model) == [
        "classifier",
        "encoder.layer4",
        "encoder.layer3",
        "encoder.layer2",
        "encoder.layer1",
        "encoder.stem",
    ]
    layer = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.LayerNorm(4))
    layer[1].weight.data.uniform_()
    state = torch.random.get_rng_state()
    randomize_layer(layer, seed=3)
    first = [p.clone() for p in layer.parameters()]
    randomize_layer(layer, seed=3)
    assert all(torch.equal(a, b) for a, b in zip(first, layer.parameters()))  # reproducible
    assert torch.equal(layer[1].weight, torch.ones(4))  # LayerNorm's own initialisation
    assert torch.equal(torch.random.get_rng_state(), state)  # the caller's RNG stream is untouched


def test_randomising_all_layers_gives_low_correlation_for_gradcam(model):
    before = {name: value.clone() for name, value in model.state_dict().items()}
    images, targets = _images(4, 96), torch.tensor([0, 1, 2, 3])
    frame = cascading_randomization(model, {"gradcam": {}, "random": None}, images, targets, seed=0)

    assert list(frame.columns) == ["method", "step", "layer", "image", "spearman"]
    layers = default_randomization_layers(model)
    assert frame["step"].max() == len(layers)
    assert frame.groupby("step")["layer"].first().tolist() == ["original", *layers]
    assert (frame[frame["step"] == 0]["spearman"] == 1.0).all()

    verdict = sanity_verdict(frame, threshold=0.5)
    final = frame[(frame["method"] == "gradcam") & (frame["step"] == len(layers))]["spearman"]
    assert final.notna().any()  # not every randomised map collapsed to a constant
    assert verdict.loc["gradcam", "n_images"] == 4
    assert verdict.loc["gradcam", "spearman"] < 0.5
    assert not verdict.loc["gradcam", "fails"]
    # Seeded random maps do not depend on the model at all: the check must catch them.
    assert verdict.loc["random", "spearman"] == 1.0 and verdict.loc["random", "fails"]

    # The caller's model is untouched: parameters, buffers and its training mode.
    after = model.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[name], after[name]) for name in before)
    assert model.training


# ----------------------------------------------------------------------------- stability
def test_stability_deterministic_is_one_stochastic_below(model):
    images, targets = _images(2, 64, seed=2), torch.tensor([1, 3])
    deterministic = stability("saliency", model, images, targets, seeds=(0, 1, 2))
    assert (deterministic["spearman"] == 1.0).all() and (deterministic["iou"] == 1.0).all()
    assert (deterministic["runs"] == 3).all() and (deterministic["method"] == "saliency").all()

    noisy = stability({"method": "smoothgrad", "nt_samples": 2}, model, images, targets, seeds=(0, 1))
    assert (noisy["method"] == "smoothgrad").all() and (noisy["runs"] == 2).all()
    assert (noisy["spearman"] < 1.0).all() and (noisy["iou"] < 1.0).all()
    assert (noisy["spearman"] > 0.0).all()  # same gradient signal underneath the noise

    with pytest.raises(ValueError, match="two distinct seeds"):
        stability("saliency", model, images, targets, seeds=(0,))
