"""Faithfulness and robustness of attribution maps: does the map point at what the model uses?

Localisation metrics score a map against the defect mask; these score it against the *model*:

* :func:`deletion_curve` / :func:`insertion_curve` (Petsiuk et al., RISE, 2018): replace the pixels a
  map ranks highest with a baseline (or put them back onto a baseline) and follow the target's
  softmax probability. :func:`curve_area` turns a curve into one number per image: deletion area,
  lower is better; insertion area, higher is better.
* :func:`infidelity_score` and :func:`max_sensitivity_score`: thin, seeded wrappers around
  ``captum.metrics.infidelity`` (Yeh et al., 2019) and ``captum.metrics.sensitivity_max``.

Everything is batched, pure torch and device-agnostic: a curve is one flat list of (image, step)
points cut into chunks of ``batch_size`` forward passes, as integrated gradients cuts its path points,
so peak memory is set by one number whatever the number of images and steps; no value is read back
to the host per image.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from captum.metrics import infidelity, sensitivity_max
from torch import Tensor

from xai_lightning.errors import ConfigError
from xai_lightning.explain.base import Explainer
from xai_lightning.explain.baselines import CURVE_BASELINES, DEFAULT_BLUR_SIGMA, baseline_image
from xai_lightning.explain.integrated_gradients import (
    default_internal_batch,
    point_chunks,
)

Classify = Callable[[Tensor], Tensor]
ExplainFn = Callable[[Tensor, Tensor], Tensor]


# ---------------------------------------------------------------------------- deletion / insertion
def curve_baseline(
    images: Tensor, baseline: str = "blur", blur_sigma: float = DEFAULT_BLUR_SIGMA, normalized: bool = True
) -> Tensor:
    """The image that deleted pixels are replaced with (and that insertion starts from), (B, C, H, W).

    One of :data:`~xai_lightning.explain.baselines.CURVE_BASELINES`, made by
    :func:`~xai_lightning.explain.baselines.baseline_image`: ``"blur"``, a Gaussian-blurred copy of
    each image (sigma ``blur_sigma`` pixels), which removes a defect but keeps colour and brightness,
    so the curve does not measure the model's reaction to an out-of-distribution flat image;
    ``"mean"``, the dataset-mean image: zeros once normalised, the mean colour when ``normalized`` is false
    (the images are [0, 1] values, ``data.normalize: false``).
    """
    _check_baseline(baseline, blur_sigma)
    return baseline_image(baseline, images, blur_sigma, normalized=normalized)


def deletion_curve(
    classify: Classify,
    images: Tensor,
    targets: Tensor,
    maps: Tensor,
    steps: int = 20,
    baseline: str = "blur",
    blur_sigma: float = DEFAULT_BLUR_SIGMA,
    batch_size: int | None = None,
    endpoints: tuple[Tensor, Tensor] | None = None,
    normalized: bool = True,
    reference: Tensor | None = None,
) -> Tensor:
    """(B, steps + 1) target probabilities as the map's top pixels are replaced by the baseline.

    Point ``s`` has the ``floor(s · H·W / steps)`` highest-ranked pixels (all channels) replaced, so
    point 0 is the original image and point ``steps`` the baseline image. A faithful map makes the
    probability fall early: a low :func:`curve_area` is good.

    Pixels are ranked by decreasing map value with a stable sort, so ties keep row-major order (the
    pixel nearer the top-left goes first): a constant map deletes rows top to bottom, reproducibly on
    every device.

    Args:
        classify: images → (N, classes) logits, e.g. ``model.classify``. The caller puts the model
            in eval mode; the curve is computed without gradients.
        images: (B, C, H, W) images, as the model takes them.
        targets: (B,) class whose probability is followed.
        maps: (B, H, W) attribution maps, higher = more important; must be finite.
        steps: number of equal fractions of H·W removed one after the other.
        baseline: ``"blur"`` or ``"mean"`` (see :func:`curve_baseline`).
        blur_sigma: sigma in pixels of the ``"blur"`` baseline.
        batch_size: images per forward pass; bounds peak memory. Default: the device's IG chunk.
        endpoints: the target's (B,) probabilities on the original and on the baseline image, when the
            caller has them: every method's curve starts and ends on those two images, so a caller
            scoring several methods computes them once instead of twice per method.
        normalized: whether ``images`` are ImageNet-normalised (false: [0, 1] values), which decides
            what the ``"mean"`` baseline's values are.
        reference: the (B, C, H, W) baseline image itself, when the caller has it (``baseline``,
            ``blur_sigma`` and ``normalized`` are then not used): a caller scoring several methods
            makes it once instead of once per method and curve.
    """
    return _curve(
        classify, images, targets, maps, steps, batch_size, insert=False, endpoints=endpoints, reference=reference,
        baseline=baseline, blur_sigma=blur_sigma, normalized=normalized,
    )  # fmt: skip


def insertion_curve(
    classify: Classify,
    images: Tensor,
    targets: Tensor,
    maps: Tensor,
    steps: int = 20,
    baseline: str = "blur",
    blur_sigma: float = DEFAULT_BLUR_SIGMA,
    batch_size: int | None = None,
    endpoints: tuple[Tensor, Tensor] | None = None,
    normalized: bool = True,
    reference: Tensor | None = None,
) -> Tensor:
    """(B, steps + 1) target probabilities as the map's top pixels are put back onto the baseline.

    The mirror of :func:`deletion_curve` (same arguments, same ranking and tie-breaking): point 0 is
    the baseline image, point ``steps`` the original. A faithful map makes the probability rise
    early: a high :func:`curve_area` is good.
    """
    return _curve(
        classify, images, targets, maps, steps, batch_size, insert=True, endpoints=endpoints, reference=reference,
        baseline=baseline, blur_sigma=blur_sigma, normalized=normalized,
    )  # fmt: skip


def curve_area(curve: Tensor) -> Tensor:
    """(B,) trapezoid area under (B, steps + 1) curves over the fraction axis 0, 1/steps, …, 1.

    The fraction is the nominal one: with H·W not divisible by ``steps`` a point may hold up to one
    pixel less than ``s / steps`` of the image, a negligible difference at image sizes of interest.
    """
    if curve.dim() != 2 or curve.shape[1] < 2:
        raise ValueError(f"curve_area expects (B, steps + 1) curves with at least 2 points, got {tuple(curve.shape)}.")
    return torch.trapezoid(curve, dx=1.0 / (curve.shape[1] - 1), dim=1)


def _curve(
    classify: Classify,
    images: Tensor,
    targets: Tensor,
    maps: Tensor,
    steps: int,
    batch_size: int | None,
    *,
    insert: bool,
    endpoints: tuple[Tensor, Tensor] | None,
    reference: Tensor | None,
    baseline: str,
    blur_sigma: float,
    normalized: bool,
) -> Tensor:
    _check_int("steps", steps)
    if batch_size is None:
        batch_size = default_internal_batch(images.device)
    _check_int("batch_size", batch_size)
    _check_shapes(images, targets, maps)
    n_images, _, height, width = images.shape
    n_pixels = height * width
    n_points = steps + 1
    # Inference tensors (Lightning's test loop) work here: nothing is saved for backward.
    with torch.no_grad():
        if reference is None:
            reference = curve_baseline(images, baseline, blur_sigma, normalized)
        # Deletion moves from the image towards the reference; insertion from the reference back.
        start_image, end_image = (reference, images) if insert else (images, reference)
        order = torch.sort(maps.flatten(1), dim=1, descending=True, stable=True).indices
        # rank[b, p]: position of pixel p in image b's order, so "p is among the first k" is rank < k.
        rank = torch.empty_like(order)
        rank.scatter_(1, order, torch.arange(n_pixels, device=maps.device).expand_as(order))
        # Pixels switched at each point: floor(s · HW / steps), exact in integers (0 and HW included).
        switched = torch.arange(n_points, device=images.device) * n_pixels // steps
        curves = torch.empty(n_images, n_points, dtype=torch.float32, device=images.device)
        points = torch.arange(n_points, device=images.device)
        if endpoints is not None:
            # Points that are the whole start or end image take the caller's probabilities.
            original, reference_probability = (p.float().to(images.device) for p in endpoints)
            start_p, end_p = (reference_probability, original) if insert else (original, reference_probability)
            for point, value in ((switched == 0, start_p), (switched == n_pixels, end_p)):
                curves[:, point] = value[:, None]
            points = points[(switched > 0) & (switched < n_pixels)]
        for image, index in point_chunks(n_images, len(points), batch_size, images.device):
            step = points[index]
            moved = (rank[image] < switched[step, None]).view(-1, 1, height, width)
            inputs = torch.where(moved, end_image[image], start_image[image])
            # Softmax in float32 at least: half-precision logits would round small probabilities.
            logits = classify(inputs).float()
            curves[image, step] = logits.softmax(1).gather(1, targets[image].view(-1, 1))[:, 0]
    return curves


# ---------------------------------------------------------------------------- infidelity / sensitivity
def infidelity_score(
    classify: Classify,
    images: Tensor,
    targets: Tensor,
    attributions: Tensor,
    noise_std: float = 0.1,
    n_perturb_samples: int = 10,
    normalize: bool = True,
    seed: int = 0,
    max_examples_per_batch: int | None = None,
) -> Tensor:
    """(B,) infidelity (``captum.metrics.infidelity``): how badly ``attributions · I`` predicts ``f(x) − f(x − I)``.

    ``I`` is Gaussian noise of standard deviation ``noise_std`` (in normalised-image units, i.e.
    dataset standard deviations), drawn from a generator seeded with ``seed``: the same call gives
    the same score, and the global RNG is left untouched. Lower is better.

    Args:
        classify: images → (N, classes) logits; ``f`` is the target's logit, the quantity gradient
            methods explain. Pass a softmax wrapper to score against probabilities instead.
        images: (B, C, H, W) normalised images.
        targets: (B,) explained classes.
        attributions: (B, C, H, W) raw attributions, or (B, H, W) / (B, 1, H, W) maps, which are
            broadcast over the channels (each channel of a pixel gets the pixel's map value).
        noise_std: standard deviation of the perturbation noise.
        n_perturb_samples: noise draws per image.
        normalize: Captum's ``normalize``: rescale the attributions by the least-squares optimal
            factor first. On by default because maps are only defined up to scale (Grad-CAM is
            min-max normalised, reductions drop the sign), and an unscaled infidelity would rank
            methods by the scale of their output rather than by its shape.
        seed: seeds the noise.
        max_examples_per_batch: perturbed images per forward pass (at least B are always used, so
            each chunk holds a draw of every image); None: all ``B · n_perturb_samples`` at once.
    """
    _check_positive("noise_std", noise_std)
    _check_int("n_perturb_samples", n_perturb_samples)
    _check_int("max_examples_per_batch", max_examples_per_batch, optional=True)
    if attributions.dim() == 3:
        attributions = attributions.unsqueeze(1)
    _check_shapes(images, targets, attributions[:, 0])
    if attributions.shape[1] not in (1, images.shape[1]):
        raise ValueError(
            f"attributions must be (B, H, W), (B, 1, H, W) or {tuple(images.shape)}; got {tuple(attributions.shape)}."
        )
    attributions = attributions.expand_as(images).contiguous()
    generator = _generator(images.device, seed)

    def perturb(inputs: Tensor) -> tuple[Tensor, Tensor]:
        noise = torch.randn(inputs.shape, generator=generator, device=inputs.device, dtype=inputs.dtype)
        # Captum's convention: it compares f(x) − f(perturbed) with attributions · perturbation.
        return noise, inputs - noise

    with _forked_rng(images.device):
        scores = infidelity(
            classify,
            perturb,
            images.detach(),
            attributions.detach(),
            target=targets,
            n_perturb_samples=n_perturb_samples,
            max_examples_per_batch=_chunk(max_examples_per_batch, len(images)),
            normalize=normalize,
        )
    return scores.view(len(images))


def max_sensitivity_score(
    explain: Explainer | ExplainFn,
    images: Tensor,
    targets: Tensor,
    perturb_radius: float = 0.02,
    n_perturb_samples: int = 10,
    norm_ord: str = "fro",
    seed: int = 0,
    max_examples_per_batch: int | None = None,
) -> Tensor:
    """(B,) max-sensitivity (``captum.metrics.sensitivity_max``): the largest relative change of the map.

    ``max ‖Φ(x + δ) − Φ(x)‖ / ‖Φ(x)‖`` over ``n_perturb_samples`` draws of ``δ`` uniform in the
    L∞ ball of radius ``perturb_radius`` (normalised-image units), Φ being the explanation. The
    draws come from a generator seeded with ``seed``, and the global RNG state is restored after the
    call (stochastic explainers seed themselves inside it). Lower is better.

    Args:
        explain: an :class:`~xai_lightning.explain.base.Explainer` (its ``explain`` is used) or any
            function ``(images, targets) → (N, H, W)`` maps.
        images: (B, C, H, W) normalised images.
        targets: (B,) explained classes.
        perturb_radius: L∞ radius of the input perturbation.
        n_perturb_samples: perturbations per image.
        norm_ord: Captum's ``norm_ord`` (``"fro"``, ``"nuc"``, a number, ``inf``).
        seed: seeds the perturbations.
        max_examples_per_batch: perturbed images explained per call (at least B); None: all at once.
    """
    _check_positive("perturb_radius", perturb_radius)
    _check_int("n_perturb_samples", n_perturb_samples)
    _check_int("max_examples_per_batch", max_examples_per_batch, optional=True)
    if not isinstance(targets, Tensor) or targets.shape != (len(images),):
        raise ValueError(f"targets must be a (B,) tensor for {len(images)} images.")
    explain_fn: ExplainFn = explain.explain if isinstance(explain, Explainer) else explain
    generator = _generator(images.device, seed)

    def perturb(inputs: Tensor, radius: float) -> Tensor:
        noise = torch.rand(inputs.shape, generator=generator, device=inputs.device, dtype=inputs.dtype)
        return inputs + (2 * noise - 1) * radius

    def explanation(inputs: Tensor | tuple[Tensor, ...], target: Tensor) -> tuple[Tensor]:
        # Captum passes the unperturbed inputs as a 1-tuple and the perturbed ones as returned by
        # `perturb`, and expands the target only when it has more than one element.
        inputs = inputs[0] if isinstance(inputs, tuple) else inputs
        target = target.reshape(-1).expand(len(inputs)) if target.numel() == 1 else target
        # A 1-tuple: Captum iterates over the unperturbed explanation as a tuple of tensors (a bare
        # tensor would be iterated over its batch); .view inside Captum needs contiguous maps.
        return (explain_fn(inputs, target).contiguous(),)

    with _forked_rng(images.device):
        scores = sensitivity_max(
            explanation,
            images.detach(),
            perturb_func=perturb,
            perturb_radius=perturb_radius,
            n_perturb_samples=n_perturb_samples,
            norm_ord=norm_ord,
            max_examples_per_batch=_chunk(max_examples_per_batch, len(images)),
            target=targets,
        )
    return scores.view(len(images))


# ---------------------------------------------------------------------------- helpers
def _generator(device: torch.device, seed: int) -> torch.Generator:
    # A private generator on the images' device: draws are reproducible and never advance the
    # global RNG that training and other metrics rely on.
    return torch.Generator(device=device).manual_seed(seed)


def _forked_rng(device: torch.device):
    # Explainers or models may draw from the global RNG inside the metric (dropout in a model left in
    # train mode, a stochastic method); the metric must not shift the caller's random stream.
    return torch.random.fork_rng(devices=[device] if device.type == "cuda" else [])


def _chunk(max_examples_per_batch: int | None, n_images: int) -> int | None:
    # Captum needs every chunk to hold at least one draw per image; it warns and rounds up otherwise.
    return None if max_examples_per_batch is None else max(max_examples_per_batch, n_images)


def _check_baseline(baseline: str, blur_sigma: float) -> None:
    if baseline not in CURVE_BASELINES:
        raise ConfigError(f"`baseline` must be one of {', '.join(CURVE_BASELINES)}; got {baseline!r}.")
    if baseline == "blur":
        _check_positive("blur_sigma", blur_sigma)


def _check_int(name: str, value: object, optional: bool = False) -> None:
    if optional and value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"`{name}` must be a positive integer; got {value!r}.")


def _check_positive(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ConfigError(f"`{name}` must be a positive finite number; got {value!r}.")


def _check_shapes(images: Tensor, targets: Tensor, maps: Tensor) -> None:
    if images.dim() != 4:
        raise ValueError(f"images must be (B, C, H, W); got {tuple(images.shape)}.")
    if maps.shape != (images.shape[0], *images.shape[-2:]):
        raise ValueError(f"maps must be (B, H, W) = {(images.shape[0], *images.shape[-2:])}; got {tuple(maps.shape)}.")
    if targets.shape != (images.shape[0],):
        raise ValueError(f"targets must be (B,) = ({images.shape[0]},); got {tuple(targets.shape)}.")
