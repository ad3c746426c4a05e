"""Integrated Gradients batched over (image, step) pairs, with memory bounded by one internal batch.

Captum's ``IntegratedGradients`` chunks its work by whole steps across the batch: an
``internal_batch_size`` below the number of images is raised to it (with a warning), so peak memory
grows with the image batch, and the size of a chunk cannot be tuned independently of it. Here the
B × n_steps points of all paths form one flat list cut into chunks of exactly
``internal_batch_size`` points, whatever B and n_steps are, so peak memory is set by that one
number and the chunk size that runs fastest on the device can be used as is. The quadrature
(Gauss–Legendre or Riemann points and weights) is Captum's.

The optional adaptive mode refines each image's path integral only as far as its completeness
error requires: ``|Σ attributions − (f(x) − f(x'))|`` is the error of the quadrature, known for free
from two forward passes, so an image whose integral has converged stops early.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch
from captum.attr._utils.approximation_methods import approximation_parameters
from torch import Tensor

#: Internal batch per device type. CPU: the fastest chunk measured with
#: ``benchmarks/integrated_gradients.py`` on a 2-core machine at 128² (16 points; 8 and 32 were 3–9 %
#: slower, larger chunks fall out of the cache). CUDA: not measured here (no GPU was available); large
#: chunks keep a GPU busy, and the same script finds the best value on one.
DEFAULT_INTERNAL_BATCH = {"cpu": 16, "cuda": 128}


def point_chunks(n_images: int, n_points: int, chunk: int, device: torch.device) -> Iterator[tuple[Tensor, Tensor]]:
    """``(image, point)`` index tensors of at most ``chunk`` pairs, covering all n_images × n_points pairs.

    The flat list of pairs is what bounds peak memory by ``chunk`` alone, whatever the batch and the
    number of points per image (IG's path steps, a deletion curve's steps).
    """
    total = n_images * n_points
    for start in range(0, total, chunk):
        pair = torch.arange(start, min(start + chunk, total), device=device)
        yield pair // n_points, pair % n_points


def default_internal_batch(device: torch.device) -> int:
    """The measured default chunk size for ``device`` (unknown device types use the GPU value)."""
    return DEFAULT_INTERNAL_BATCH.get(device.type, DEFAULT_INTERNAL_BATCH["cuda"])


def integrated_gradients(
    forward: Callable[[Tensor], Tensor],
    images: Tensor,
    baselines: Tensor,
    targets: Tensor,
    n_steps: int = 50,
    method: str = "gausslegendre",
    internal_batch_size: int = 8,
) -> Tensor:
    """Signed (B, C, H, W) attributions ``(x − x') · Σ_s w_s ∂f_c/∂x(x' + α_s (x − x'))``.

    Args:
        forward: images → (N, classes) logits.
        images, baselines: (B, C, H, W) inputs and reference inputs.
        targets: (B,) class explained per image.
        n_steps: quadrature points per path.
        method: Captum's quadrature rule (``gausslegendre``, ``riemann_trapezoid``, …).
        internal_batch_size: path points per forward/backward; bounds peak memory.
    """
    step_sizes_fn, alphas_fn = approximation_parameters(method)
    # Quadrature nodes, weights and the running sum in float32 at least: half-precision inputs would
    # round the nodes and add up n_steps gradients in 16 bits.
    accumulate = torch.promote_types(images.dtype, torch.float32)
    alphas = torch.tensor(alphas_fn(n_steps), dtype=accumulate, device=images.device)
    weights = torch.tensor(step_sizes_fn(n_steps), dtype=accumulate, device=images.device)
    delta = images - baselines
    total = torch.zeros_like(images, dtype=accumulate)
    for image, step in point_chunks(len(images), n_steps, internal_batch_size, images.device):
        scale = alphas[step].view(-1, *([1] * (images.dim() - 1)))
        path = (baselines[image] + scale * delta[image]).to(images.dtype).requires_grad_(True)
        score = forward(path).gather(1, targets[image].view(-1, 1)).sum()
        (gradient,) = torch.autograd.grad(score, path)
        total.index_add_(0, image, gradient.to(accumulate) * weights[step].view_as(scale))
    return (total * delta).to(images.dtype)


def logit_gap(
    forward: Callable[[Tensor], Tensor],
    images: Tensor,
    baselines: Tensor,
    targets: Tensor,
    internal_batch_size: int = 8,
) -> Tensor:
    """(B,) ``f_c(x) − f_c(x')``: what the attributions of each image must sum to (completeness)."""
    gaps = []
    with torch.no_grad():
        for start in range(0, len(images), internal_batch_size):
            chunk = slice(start, start + internal_batch_size)
            index = targets[chunk].view(-1, 1)
            gaps.append((forward(images[chunk]).gather(1, index) - forward(baselines[chunk]).gather(1, index))[:, 0])
    return torch.cat(gaps) if gaps else images.new_zeros(0)


def completeness_error(
    forward: Callable[[Tensor], Tensor],
    images: Tensor,
    baselines: Tensor,
    targets: Tensor,
    attributions: Tensor,
    gap: Tensor | None = None,
) -> Tensor:
    """(B,) ``|Σ attributions − (f_c(x) − f_c(x'))|``, in logit units: the quadrature's error."""
    if gap is None:
        gap = logit_gap(forward, images, baselines, targets)
    return (attributions.flatten(1).sum(1, dtype=torch.float64) - gap.double()).abs()


def adaptive_integrated_gradients(
    forward: Callable[[Tensor], Tensor],
    images: Tensor,
    baselines: Tensor,
    targets: Tensor,
    tolerance: float,
    min_steps: int = 8,
    max_steps: int = 128,
    method: str = "gausslegendre",
    internal_batch_size: int = 8,
) -> tuple[Tensor, Tensor, Tensor]:
    """Integrated Gradients with the number of steps chosen per image from its completeness error.

    Each image starts at ``min_steps``; those whose error is above ``tolerance`` are recomputed with
    twice the steps, until ``max_steps``. Gauss–Legendre points of different orders do not nest,
    so a refinement recomputes that image's path; the saving comes from the images that stop early.

    Returns:
        ``(attributions, steps, error)``: (B, C, H, W) attributions, (B,) steps used per image and
        (B,) the final completeness error.
    """
    attributions = torch.zeros_like(images)
    steps = torch.zeros(len(images), dtype=torch.long, device=images.device)
    error = torch.full((len(images),), float("inf"), dtype=torch.float64, device=images.device)
    gap = logit_gap(forward, images, baselines, targets, internal_batch_size)  # once: it does not depend on the steps
    todo = torch.arange(len(images), device=images.device)
    n_steps = min_steps
    while len(todo):
        n_steps = min(n_steps, max_steps)
        found = integrated_gradients(
            forward, images[todo], baselines[todo], targets[todo], n_steps, method, internal_batch_size
        )
        attributions[todo] = found
        steps[todo] = n_steps
        error[todo] = completeness_error(forward, images[todo], baselines[todo], targets[todo], found, gap[todo])
        if n_steps >= max_steps:
            break
        todo = todo[error[todo] > tolerance]
        n_steps *= 2
    return attributions, steps, error
