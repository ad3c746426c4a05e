"""Tests of the model-free reference maps ``center_prior`` and ``edge``, and of evaluation always scoring them.

Both maps ignore the model, so a model that fails on any call proves they make no pass.
"""

from __future__ import annotations

import pytest
import torch
import yaml
from conftest import TinyCNN
from torch import Tensor, nn
from torchvision.transforms.functional import gaussian_blur

from xai_lightning.errors import ConfigError
from xai_lightning.evaluation.settings import REFERENCE_METHODS, methods_for
from xai_lightning.explain import create_explainer, explain_batch, list_explainers
from xai_lightning.explain.base import PassCount
from xai_lightning.explain.engine import floor_passes, shared_group
from xai_lightning.metrics import pointing_game, top_k_overlap
from xai_lightning.runs import Run

REFERENCES = ["center_prior", "edge"]


class NoModel(nn.Module):
    """A model that fails whenever it is called: a map made with it never ran the model."""

    def forward(self, images: Tensor) -> Tensor:
        raise AssertionError("the reference map ran the model")

    classify = forward


def _targets(batch: int) -> Tensor:
    return torch.zeros(batch, dtype=torch.long)


def _disk(size: int, centre: tuple[float, float], radius: float) -> Tensor:
    """(1, size, size) boolean disk of the pixel centres within ``radius`` of ``centre`` (row, column)."""
    rows = torch.arange(size, dtype=torch.float64)[:, None] - centre[0]
    columns = torch.arange(size, dtype=torch.float64)[None, :] - centre[1]
    return (rows**2 + columns**2 <= radius**2)[None]


def _centre_prior(size: int, batch: int = 1, **options) -> Tensor:
    images = torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(0))
    return create_explainer("center_prior", NoModel(), **options).explain(images, _targets(batch))


def _square_image() -> Tensor:
    """(1, 3, 24, 24): a flat 0.25 background and one bright (1.0) square, rows and columns 8–15, in every channel."""
    image = torch.full((1, 3, 24, 24), 0.25)
    image[..., 8:16, 8:16] = 1.0
    return image


# ---------------------------------------------------------------------------- centre prior
def test_center_prior_peaks_at_the_centre_and_is_symmetric() -> None:
    priors = _centre_prior(33, batch=2)
    assert torch.equal(priors[0], priors[1])  # whatever the image
    prior = priors[0]
    assert prior.argmax().item() == 16 * 33 + 16
    assert prior[16, 16].item() == 1.0
    assert torch.equal(prior, prior.flip(0)) and torch.equal(prior, prior.flip(1)) and torch.equal(prior, prior.T)
    assert (prior > 0).all()
    even = _centre_prior(32)[0]
    # An even side has four central pixels, tied at the maximum.
    assert (even == even.max()).nonzero().tolist() == [[15, 15], [15, 16], [16, 15], [16, 16]]


@pytest.mark.parametrize("sigma", [0.1, 0.25, 0.4])
def test_center_prior_is_a_gaussian_with_sigma_a_fraction_of_the_side(sigma: float) -> None:
    prior = _centre_prior(33, sigma=sigma)[0]
    offsets = torch.arange(33, dtype=torch.float64) - 16
    expected = torch.exp(-((offsets / 33) ** 2) / (2 * sigma**2)).float()
    torch.testing.assert_close(prior[16], expected)
    torch.testing.assert_close(prior[:, 16], expected)
    with pytest.raises(ConfigError, match="explainer center_prior: sigma is 0"):
        create_explainer("center_prior", NoModel(), sigma=0)


def test_center_prior_wins_on_a_centred_disk_and_loses_to_the_mask_elsewhere() -> None:
    prior = _centre_prior(32)
    centred = _disk(32, (15.5, 15.5), 6.0)
    assert top_k_overlap(prior, centred).item() == 1.0
    assert pointing_game(prior, centred).item() == 1.0

    corner = _disk(32, (5.0, 5.0), 4.0)
    assert top_k_overlap(prior, corner).item() == 0.0
    assert pointing_game(prior, corner).item() == 0.0
    assert top_k_overlap(corner.float(), corner).item() == 1.0
    assert pointing_game(corner.float(), corner).item() == 1.0


# ---------------------------------------------------------------------------- edge map
def test_edge_map_is_high_on_the_square_border_and_zero_in_flat_areas() -> None:
    edges = create_explainer("edge", NoModel()).explain(_square_image(), _targets(1))[0]
    border = torch.zeros(24, 24, dtype=torch.bool)
    border[7:17, 7:17] = True  # the square's outline and the pixels just outside it
    border[9:15, 9:15] = False
    # The weakest border response is an outside corner, which sees one bright pixel: 0.75 · √2.
    assert edges[border].min() > 1.0
    # Along a side the Sobel kernel's 1-2-1 weights see the 0.75 step in full: 4 · 0.75.
    assert edges[7, 12].item() == pytest.approx(3.0) and edges[12, 8].item() == pytest.approx(3.0)
    torch.testing.assert_close(edges[~border], torch.zeros_like(edges[~border]), rtol=0, atol=1e-6)


def test_edge_map_takes_the_strongest_channel_and_can_be_blurred() -> None:
    image = _square_image()
    image[:, 0] = 0.25  # the square only in channels 1 and 2, brighter in channel 2
    image[:, 2, 8:16, 8:16] = 2.0
    edges = create_explainer("edge", NoModel()).explain(image, _targets(1))
    only_channel_2 = create_explainer("edge", NoModel()).explain(image[:, 2:].expand(-1, 3, -1, -1), _targets(1))
    torch.testing.assert_close(edges, only_channel_2)

    blurred = create_explainer("edge", NoModel(), blur_sigma=1.5).explain(image, _targets(1))
    torch.testing.assert_close(blurred, gaussian_blur(edges[:, None], [11, 11], [1.5, 1.5])[:, 0])
    assert blurred.max() < edges.max() and (blurred > 0).sum() > (edges > 0).sum()


# ---------------------------------------------------------------------------- both references
@pytest.mark.parametrize("name", REFERENCES)
def test_reference_maps_are_deterministic_and_batch_independent(name: str) -> None:
    images = torch.randn(3, 3, 20, 20, generator=torch.Generator().manual_seed(1))
    explainer = create_explainer(name, NoModel())
    maps = explainer.explain(images, _targets(3))
    assert maps.shape == (3, 20, 20) and maps.dtype == torch.float32
    assert torch.isfinite(maps).all() and (maps >= 0).all() and not maps.requires_grad
    assert torch.equal(explainer.explain(images, _targets(3)), maps)
    for index in range(3):
        alone = create_explainer(name, NoModel()).explain(images[index : index + 1], _targets(1))
        torch.testing.assert_close(alone[0], maps[index], rtol=0, atol=1e-6)
    with torch.inference_mode():
        torch.testing.assert_close(explainer.explain(images.clone(), _targets(3)), maps)


@pytest.mark.parametrize("name", REFERENCES)
def test_reference_maps_cost_no_pass_and_stay_out_of_the_shared_pass(name: str) -> None:
    model = TinyCNN()
    explainers = {method: create_explainer(method, model) for method in ("gradcam", "saliency", name)}
    assert explainers[name].passes((32, 32)) == PassCount()
    assert not explainers[name].stochastic and explainers[name].gradient_request() is None
    assert shared_group(explainers)[0] == ["gradcam", "saliency"]
    assert floor_passes(explainers, (32, 32)) == PassCount(forward_backward=1)
    result = explain_batch(explainers, torch.randn(2, 3, 32, 32), _targets(2))
    assert not result.errors and list(result.maps) == ["gradcam", "saliency", name]
    assert explainers[name].config() == create_explainer(name, model, **explainers[name].options()).config()


def test_reference_maps_are_registered() -> None:
    assert set(REFERENCES) <= set(list_explainers())
    assert list(REFERENCE_METHODS) == REFERENCES


# ---------------------------------------------------------------------------- every evaluation scores them
def _run(tmp_path, methods: dict | None) -> Run:
    """A run folder whose config.yaml holds an AttributionCallback with ``methods`` (None: no callback)."""
    callbacks = []
    if methods is not None:
        callback = {"class_path": "xai_lightning.callbacks.AttributionCallback", "init_args": {"methods": methods}}
        callbacks.append(callback)
    tmp_path.mkdir(exist_ok=True)
    (tmp_path / "config.yaml").write_text(yaml.safe_dump({"trainer": {"callbacks": callbacks}}))
    return Run(tmp_path)


def test_methods_for_adds_the_references_to_configured_and_requested_methods(tmp_path) -> None:
    run = _run(tmp_path, {"gradcam": {}, "ig_8": {"method": "integrated_gradients", "n_steps": 8}})
    assert methods_for(run, None) == {
        "gradcam": {"method": "gradcam"},
        "ig_8": {"method": "integrated_gradients", "n_steps": 8},
        "center_prior": {"method": "center_prior"},
        "edge": {"method": "edge"},
    }
    assert list(methods_for(run, ["ig_8", "saliency"])) == ["ig_8", "saliency", "center_prior", "edge"]
    assert methods_for(run, ["edge"]) == {"edge": {"method": "edge"}, "center_prior": {"method": "center_prior"}}


def test_methods_for_keeps_a_configured_reference_and_an_empty_method_set(tmp_path) -> None:
    run = _run(tmp_path, {"prior_10": {"method": "center_prior", "sigma": 0.1}, "random": {}})
    assert methods_for(run, None) == {
        "prior_10": {"method": "center_prior", "sigma": 0.1},
        "random": {"method": "random"},
        "edge": {"method": "edge"},
    }
    assert methods_for(run, []) == {}
    assert methods_for(_run(tmp_path / "no_callback", None), None) == {}
