"""Run a set of explainers on one batch as cheaply as possible, without one failure stopping the rest.

Methods that can share a forward/backward pass (their ``gradient_request``) are served by one
:func:`~xai_lightning.explain.shared.gradient_pass`; every other method runs its own
:meth:`~xai_lightning.explain.base.Explainer.explain`. A method that raises, or returns a map that is
not finite, is reported in ``errors`` and the others go on: a crash in one attribution method must not
cost a training run or the other methods' results.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Mapping

import torch
from torch import Tensor

from xai_lightning.explain.base import Explainer, PassCount, attribution_mode
from xai_lightning.explain.shared import GradientRequest, gradient_pass


@dataclass
class BatchExplanation:
    """Maps of one batch: ``maps[name]`` is (B, H, W); a failed method is in ``errors`` instead.

    ``seconds[name]`` is the method's wall time on this batch. Methods served by one shared pass
    split that pass's time equally, plus the time of their own reduction.
    """

    maps: dict[str, Tensor] = field(default_factory=dict)
    errors: dict[str, BaseException] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    shared: tuple[str, ...] = ()


def shared_group(explainers: Mapping[str, Explainer]) -> tuple[list[str], GradientRequest | None]:
    """The methods one shared pass serves, and the merged request; empty when fewer than two could share.

    A single method gains nothing from the shared pass, so it keeps its own (Captum) computation.
    Stochastic methods never share: they are seeded per image by their own ``explain``.
    """
    names, request = [], None
    for name, explainer in explainers.items():
        wanted = None if explainer.stochastic else explainer.gradient_request()
        if wanted is None:
            continue
        names.append(name)
        request = wanted if request is None else request.merge(wanted)
    if len(names) < 2 or len({id(explainers[name].model) for name in names}) > 1:
        return [], None
    return names, request


def floor_passes(
    explainers: Mapping[str, Explainer], image_size: tuple[int, int], share_gradients: bool = True
) -> PassCount:
    """Passes per image that explaining with every method cannot avoid, counting a shared pass once."""
    group, request = shared_group(explainers) if share_gradients else ([], None)
    total = PassCount()
    if group:
        total += PassCount(forward_backward=1) if request.needs_backward else PassCount(forward=1)
    for name, explainer in explainers.items():
        if name not in group:
            total += explainer.passes(image_size)
    return total


def explain_batch(
    explainers: Mapping[str, Explainer], images: Tensor, targets: Tensor, share_gradients: bool = True
) -> BatchExplanation:
    """Maps of ``images`` for ``targets`` from every explainer (display name → explainer).

    Args:
        explainers: the methods, in the order results should appear.
        images: (B, 3, H, W) normalised images (inference tensors are fine: they are cloned).
        targets: (B,) classes to explain.
        share_gradients: serve Grad-CAM, Saliency, Input×Gradient and the segmentation head from one
            forward/backward pass when two or more of them are present. False runs each on its own
            (what the benchmarks compare against).
    """
    result = BatchExplanation()
    group, request = shared_group(explainers) if share_gradients else ([], None)
    if group and not _run_shared(explainers, group, request, images, targets, result):
        group = []
    for name, explainer in explainers.items():
        if name in group:
            continue
        start = device_clock(images.device)
        try:
            result.maps[name] = _checked(explainer.name, explainer.explain(images, targets), images)
        except Exception as error:  # one method's failure must not stop the others
            result.errors[name] = error
            continue
        result.seconds[name] = device_clock(images.device) - start
    # Report in the order the explainers were given.
    result.maps = {name: result.maps[name] for name in explainers if name in result.maps}
    return result


def _run_shared(explainers, group, request, images, targets, result: BatchExplanation) -> bool:
    """Serve ``group`` from one pass; False (nothing recorded) when the pass itself fails."""
    model = explainers[group[0]].model
    start = device_clock(images.device)
    try:
        with attribution_mode(model):
            gradients = gradient_pass(model, images.detach().clone(), targets.detach().clone(), request)
    except Exception:
        # The shared pass failed (e.g. a model without a segmentation head): let each method run on
        # its own, so only the method that cannot work fails, with its own error.
        return False
    share = (device_clock(images.device) - start) / len(group)
    result.shared = tuple(group)
    for name in group:
        explainer = explainers[name]
        start = device_clock(images.device)
        try:
            with torch.no_grad():
                result.maps[name] = _checked(explainer.name, explainer.from_gradients(gradients), images)
        except Exception as error:
            result.errors[name] = error
            continue
        result.seconds[name] = share + device_clock(images.device) - start
    return True


def _checked(method: str, maps: Tensor, images: Tensor) -> Tensor:
    maps = maps.detach()
    if maps.shape != (images.shape[0], *images.shape[-2:]):
        raise RuntimeError(f"{method} returned maps of shape {tuple(maps.shape)}, expected (B, H, W).")
    # A sum is NaN or infinite when any element is, and reads the map once without a (B, H, W) mask.
    if not torch.isfinite(maps.sum(dtype=torch.float64)):
        raise FloatingPointError(f"{method}: the map holds NaN or infinite values")
    return maps


def device_clock(device: torch.device) -> float:
    """Wall-clock seconds, after waiting for the device's queued work: what timing a method needs."""
    # CUDA kernels run asynchronously: without a sync the clock would time the launches only.
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()
