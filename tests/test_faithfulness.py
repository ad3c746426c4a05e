"""Deletion/insertion curves, their area, and the seeded Captum infidelity / max-sensitivity wrappers."""

from __future__ import annotations

import pytest
import torch
from conftest import TinyCNN
from torch import Tensor, nn

from xai_lightning.errors import ConfigError
from xai_lightning.explain.base import create_explainer
from xai_lightning.metrics.faithfulness import (
    curve_area,
    curve_baseline,
    deletion_curve,
    infidelity_score,
    insertion_curve,
    max_sensitivity_score,
)

SIZE = 16


class RegionReadout(nn.Module):
    """Class-1 logit = weight · (sum of the image over region R), class-0 logit = 0: the answer is known.

    Only pixels in R matter to the model, so a map that is 1 on R and 0 elsewhere is perfect.
    """

    def __init__(self, region: Tensor, weight: float) -> None:
        super().__init__()
        self.register_buffer("region", region.float())
        self.weight = weight

    def classify(self, images: Tensor) -> Tensor:
        evidence = self.weight * (images * self.region).sum(dim=(1, 2, 3))
        return torch.stack([torch.zeros_like(evidence), evidence], dim=1)



@pytest.fixture(scope="module")
def tiny() -> TinyCNN:
    torch.manual_seed(0)
    return TinyCNN().eval()


def _batch(batch: int = 3, seed: int = 0) -> tuple[Tensor, Tensor, Tensor]:
    generator = torch.Generator().manual_seed(seed)
    images = torch.randn(batch, 3, SIZE, SIZE, generator=generator)
    maps = torch.rand(batch, SIZE, SIZE, generator=generator)
    return images, torch.arange(batch) % 3, maps


def _region() -> Tensor:
    region = torch.zeros(SIZE, SIZE)
    region[3:7, 9:13] = 1.0
    return region


def test_a_perfect_map_beats_a_random_map_on_a_model_with_a_known_answer() -> None:
    region = _region()
    # Positive evidence everywhere, so every deleted R pixel lowers the class-1 logit; full logit ≈ 4 (not saturated).
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(4, 3, SIZE, SIZE, generator=generator) + 0.5
    model = RegionReadout(region, weight=4.0 / (3 * region.sum().item()))
    targets = torch.ones(4, dtype=torch.long)
    perfect = region.expand(4, SIZE, SIZE)
    random = torch.rand(4, SIZE, SIZE, generator=generator)

    def areas(curve) -> tuple[Tensor, Tensor]:
        options = {"steps": 20, "baseline": "mean"}
        return (
            curve_area(curve(model.classify, images, targets, perfect, **options)),
            curve_area(curve(model.classify, images, targets, random, **options)),
        )

    perfect_deletion, random_deletion = areas(deletion_curve)
    perfect_insertion, random_insertion = areas(insertion_curve)
    assert (perfect_deletion < random_deletion - 0.05).all()
    assert (perfect_insertion > random_insertion + 0.05).all()


@pytest.mark.parametrize("baseline", ["blur", "mean"])
def test_curve_endpoints_are_the_image_and_the_baseline(tiny: TinyCNN, baseline: str) -> None:
    images, targets, maps = _batch()
    picked = torch.arange(len(images)), targets
    with torch.no_grad():
        original = tiny.classify(images).softmax(1)[picked]
        reference = tiny.classify(curve_baseline(images, baseline, blur_sigma=2.0)).softmax(1)[picked]
    options = {"steps": 7, "baseline": baseline, "blur_sigma": 2.0}
    deletion = deletion_curve(tiny.classify, images, targets, maps, **options)
    insertion = insertion_curve(tiny.classify, images, targets, maps, **options)
    assert deletion.shape == insertion.shape == (len(images), 8)
    torch.testing.assert_close(deletion[:, 0], original)
    torch.testing.assert_close(deletion[:, -1], reference)
    torch.testing.assert_close(insertion[:, 0], reference)
    torch.testing.assert_close(insertion[:, -1], original)


def test_blur_baseline_blurs_and_mean_baseline_is_zero() -> None:
    images, _, _ = _batch()
    blurred = curve_baseline(images, "blur", blur_sigma=5.0)  # kernel truncated to the 16 px image
    assert blurred.shape == images.shape and blurred.var() < images.var() / 4
    assert torch.equal(curve_baseline(images, "mean"), torch.zeros_like(images))


def test_curves_use_the_baselines_the_explainers_use() -> None:
    """One owner names and makes each reference image; curves take its ``blur`` and ``mean``, not the alias."""
    from xai_lightning.explain import baselines
    from xai_lightning.metrics.faithfulness import CURVE_BASELINES

    images = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    assert CURVE_BASELINES is baselines.CURVE_BASELINES == ("blur", "mean")
    for name in CURVE_BASELINES:
        assert torch.equal(curve_baseline(images, name, blur_sigma=2.0), baselines.baseline_image(name, images, 2.0))
    with pytest.raises(ConfigError, match="`baseline`"):
        curve_baseline(images, "zero")


@pytest.mark.parametrize("curve", [deletion_curve, insertion_curve])
def test_batched_curves_equal_per_image_curves_for_any_chunk(tiny: TinyCNN, curve) -> None:
    images, targets, maps = _batch(batch=4)
    alone = torch.cat([curve(tiny.classify, images[i : i + 1], targets[i : i + 1], maps[i : i + 1], steps=5) for i in range(4)])
    for batch_size in (1, 3, 7, 1000):
        together = curve(tiny.classify, images, targets, maps, steps=5, batch_size=batch_size)
        torch.testing.assert_close(together, alone, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("curve", [deletion_curve, insertion_curve])
@pytest.mark.parametrize("steps", [1, 4])
def test_curves_from_given_endpoints_equal_curves_that_compute_them(tiny: TinyCNN, curve, steps: int) -> None:
    # The attribution pass computes the two ends once per batch and hands them to every method's curves.
    images, targets, maps = _batch(batch=4)
    with torch.no_grad():
        ends = tuple(
            tiny.classify(x).softmax(1).gather(1, targets[:, None])[:, 0] for x in (images, curve_baseline(images))
        )
    computed = curve(tiny.classify, images, targets, maps, steps=steps)
    given = curve(tiny.classify, images, targets, maps, steps=steps, endpoints=ends)
    torch.testing.assert_close(given, computed, rtol=1e-5, atol=1e-6)
    first, last = (ends[1], ends[0]) if curve is insertion_curve else ends
    assert torch.equal(given[:, 0], first) and torch.equal(given[:, -1], last)


def test_ties_are_broken_in_row_major_order() -> None:
    # A model that sees only the top-left pixel: with a constant map it is deleted first.
    region = torch.zeros(SIZE, SIZE)
    region[0, 0] = 1.0
    model = RegionReadout(region, weight=10.0)
    images = torch.ones(1, 3, SIZE, SIZE)
    curve = deletion_curve(model.classify, images, torch.ones(1, dtype=torch.long), torch.zeros(1, SIZE, SIZE), steps=SIZE * SIZE, baseline="mean")
    assert curve[0, 0] > 0.99
    torch.testing.assert_close(curve[0, 1:], torch.full((SIZE * SIZE,), 0.5))


def test_curve_area_of_a_constant_curve_is_the_constant() -> None:
    torch.testing.assert_close(curve_area(torch.full((1, 21), 0.3)), torch.tensor([0.3]))
    torch.testing.assert_close(curve_area(torch.full((2, 5), 0.8)), torch.tensor([0.8, 0.8]))
    torch.testing.assert_close(curve_area(torch.linspace(0, 1, 11).expand(1, 11)), torch.tensor([0.5]))


def test_infidelity_is_finite_reproducible_and_leaves_the_global_rng_alone(tiny: TinyCNN) -> None:
    images, targets, maps = _batch()
    torch.manual_seed(123)
    expected_next = torch.rand(1)
    torch.manual_seed(123)
    first = infidelity_score(tiny.classify, images, targets, maps, n_perturb_samples=6, seed=4)
    assert torch.equal(torch.rand(1), expected_next)
    again = infidelity_score(tiny.classify, images, targets, maps, n_perturb_samples=6, seed=4, max_examples_per_batch=3)
    other = infidelity_score(tiny.classify, images, targets, maps, n_perturb_samples=6, seed=5)
    assert first.shape == (3,) and torch.isfinite(first).all()
    # Chunking changes the order of the draws, hence the noise, but not the validity of the score.
    assert torch.isfinite(again).all()
    assert not torch.equal(other, first)
    torch.testing.assert_close(infidelity_score(tiny.classify, images, targets, maps, n_perturb_samples=6, seed=4), first)
    # Raw (B, C, H, W) attributions are accepted as they are.
    raw = infidelity_score(tiny.classify, images, targets, images.abs(), n_perturb_samples=6, normalize=False)
    assert raw.shape == (3,) and torch.isfinite(raw).all()


def test_infidelity_is_zero_for_exact_attributions_of_a_linear_model() -> None:
    # f linear in the pixels: f(x) − f(x − I) = w · I exactly, so the weights are a perfect attribution.
    region = _region()
    model = RegionReadout(region, weight=0.5)
    images, _, _ = _batch()
    targets = torch.ones(3, dtype=torch.long)
    exact = (0.5 * region).expand_as(images)
    scores = infidelity_score(model.classify, images, targets, exact, normalize=False)
    torch.testing.assert_close(scores, torch.zeros(3), atol=1e-8, rtol=0)


def test_max_sensitivity_is_finite_reproducible_and_zero_for_a_constant_explanation(tiny: TinyCNN) -> None:
    images, targets, _ = _batch()
    saliency = create_explainer("saliency", tiny)
    first = max_sensitivity_score(saliency, images, targets, n_perturb_samples=4, seed=1)
    assert first.shape == (3,) and torch.isfinite(first).all() and (first > 0).all()
    torch.testing.assert_close(max_sensitivity_score(saliency, images, targets, n_perturb_samples=4, seed=1), first)

    def constant(inputs: Tensor, targets: Tensor) -> Tensor:
        return torch.ones(len(inputs), SIZE, SIZE)

    assert torch.equal(max_sensitivity_score(constant, images, targets, n_perturb_samples=4), torch.zeros(3))
    # One image: Captum leaves a one-element target unexpanded; the wrapper expands it.
    single = max_sensitivity_score(saliency, images[:1], targets[:1], n_perturb_samples=3)
    assert single.shape == (1,) and torch.isfinite(single).all()


@pytest.mark.parametrize(
    ("option", "call"),
    [
        ("steps", lambda m, x, t, a: deletion_curve(m.classify, x, t, a, steps=0)),
        ("baseline", lambda m, x, t, a: insertion_curve(m.classify, x, t, a, baseline="zeros")),
        ("blur_sigma", lambda m, x, t, a: deletion_curve(m.classify, x, t, a, blur_sigma=-1.0)),
        ("batch_size", lambda m, x, t, a: deletion_curve(m.classify, x, t, a, batch_size=0)),
        ("noise_std", lambda m, x, t, a: infidelity_score(m.classify, x, t, a, noise_std=0)),
        ("n_perturb_samples", lambda m, x, t, a: infidelity_score(m.classify, x, t, a, n_perturb_samples=2.5)),
        ("max_examples_per_batch", lambda m, x, t, a: infidelity_score(m.classify, x, t, a, max_examples_per_batch=0)),
        ("perturb_radius", lambda m, x, t, a: max_sensitivity_score(lambda i, _: i[:, 0], x, t, perturb_radius=float("nan"))),
    ],
)
def test_bad_options_raise_a_config_error_naming_the_option(tiny: TinyCNN, option: str, call) -> None:
    images, targets, maps = _batch()
    with pytest.raises(ConfigError, match=f"`{option}`"):
        call(tiny, images, targets, maps)


def test_mismatched_shapes_are_rejected(tiny: TinyCNN) -> None:
    images, targets, maps = _batch()
    with pytest.raises(ValueError, match="maps"):
        deletion_curve(tiny.classify, images, targets, maps[:, :8])
    with pytest.raises(ValueError, match="targets"):
        insertion_curve(tiny.classify, images, targets[:2], maps)


def test_the_mean_baseline_of_unnormalised_images_is_the_mean_colour() -> None:
    """With [0, 1] inputs (``data.normalize: false``) the ``mean`` baseline is the ImageNet mean colour, not black."""
    from xai_lightning.data.transforms import IMAGENET_MEAN

    images = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    colour = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1).expand_as(images)
    assert torch.equal(curve_baseline(images, "mean", normalized=False), colour)
    readout = RegionReadout(torch.ones(1, 1, 8, 8), weight=1.0)
    maps = torch.rand(2, 8, 8, generator=torch.Generator().manual_seed(1))
    deleted = deletion_curve(readout.classify, images, torch.ones(2, dtype=torch.long), maps, steps=2, baseline="mean",
                             normalized=False)[:, -1]  # fmt: skip
    torch.testing.assert_close(deleted, readout.classify(colour).softmax(1)[:, 1])


class _RecordingReadout(RegionReadout):
    """A RegionReadout that says whether it takes normalised inputs, and keeps every batch it is shown."""

    def __init__(self, normalize_input: bool) -> None:
        super().__init__(torch.ones(1, 1, SIZE, SIZE), weight=0.1)
        self.hparams = {"normalize_input": normalize_input}
        self.seen: list[Tensor] = []

    def classify(self, images: Tensor) -> Tensor:
        self.seen.append(images.detach().clone())
        return super().classify(images)


@pytest.mark.parametrize("normalize_input", [True, False])
def test_scoring_deletes_towards_the_mean_image_of_the_models_input_space(normalize_input: bool) -> None:
    """The attribution pass follows the model's ``normalize_input``: every image its curves show the model is made of
    the image's own pixels and the mean image, zeros for a model that takes normalised images and the mean colour
    for one that takes [0, 1] values; the end points (the whole image replaced) and the inner points alike."""
    from xai_lightning.data.transforms import IMAGENET_MEAN
    from xai_lightning.scoring import ScoringConfig
    from xai_lightning.scoring.batch import score_batch

    model = _RecordingReadout(normalize_input)
    images = torch.rand(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(0)) * 0.5 + 0.25
    masks = torch.zeros(2, SIZE, SIZE, dtype=torch.bool)
    masks[:, :4, :4] = True
    explainers = {"random": create_explainer("random", model)}
    config = ScoringConfig(faithfulness_steps=4, faithfulness_baseline="mean")
    scores = score_batch(model, explainers, images, masks, torch.ones(2, dtype=torch.long), config)
    assert not scores.errors, scores.errors
    mean = (torch.zeros(3) if normalize_input else torch.tensor(IMAGENET_MEAN)).view(1, 3, 1, 1)
    shown = torch.cat(model.seen)  # single images, whichever batches the pass made of them
    mean_image = mean.expand(1, 3, SIZE, SIZE)
    # Per shown image and source image b: which pixels are b's own and which the mean image's.
    from_image = shown[:, None] == images[None]  # (N, 2, 3, H, W)
    from_mean = (shown == mean_image)[:, None].expand_as(from_image)
    made_of = (from_image | from_mean).flatten(2).all(2).any(1)
    assert made_of.all()  # nothing but an image's own pixels and the mean image
    whole = (shown == mean_image).flatten(1).all(1)
    mixed = ~whole & (shown == mean_image).flatten(1).any(1)
    assert whole.any() and mixed.any()  # the end point and the inner points
