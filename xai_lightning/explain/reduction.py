"""Reductions of a raw attribution to one non-negative (B, H, W) map per image, one per method family.

Their names are what an explainer's ``reduction`` records in the run config (docs/metrics.md).
"""

from __future__ import annotations

from typing import Callable

import torch.nn.functional as F
from torch import Tensor

Reduction = Callable[[Tensor, "tuple[int, int] | None"], Tensor]


def max_abs(attribution: Tensor, size: tuple[int, int] | None = None) -> Tensor:
    """Input-gradient methods: max over channels of ``|a|``, (B, C, H, W) → (B, H, W)."""
    _check_input_shaped(attribution, size, "max_abs")
    return attribution.abs().amax(dim=1)


def sum_abs(attribution: Tensor, size: tuple[int, int] | None = None) -> Tensor:
    """Path and perturbation methods: sum over channels of ``|a|``, (B, C, H, W) → (B, H, W)."""
    _check_input_shaped(attribution, size, "sum_abs")
    return attribution.abs().sum(dim=1)


def cam(layer_map: Tensor, size: tuple[int, int] | None = None) -> Tensor:
    """Layer CAMs: ``ReLU`` of the (B, 1, h, w) layer map, bilinearly upsampled to ``size`` → (B, H, W).

    Bilinear, not nearest: nearest repeats each layer cell as a block of equal values, and those
    ties blur every rank-based metric. ``align_corners=False`` is what Captum's
    ``LayerAttribution.interpolate(..., interpolate_mode="bilinear")`` uses. Bilinear weights are
    non-negative, so the upsampled map stays non-negative.
    """
    if size is None:
        raise ValueError("The cam reduction needs the output size (H, W).")
    if layer_map.dim() == 3:
        layer_map = layer_map.unsqueeze(1)
    if layer_map.dim() != 4 or layer_map.shape[1] != 1:
        raise ValueError(f"cam expects a (B, 1, h, w) layer map, got shape {tuple(layer_map.shape)}.")
    upsampled = F.interpolate(layer_map.clamp_min(0), size=tuple(size), mode="bilinear", align_corners=False)
    return upsampled[:, 0]


def as_map(maps: Tensor, size: tuple[int, int] | None = None) -> Tensor:
    """Reference methods that already give one map per image (``none``): (B, [1,] H, W) → (B, H, W)."""
    if maps.dim() == 4 and maps.shape[1] == 1:
        maps = maps[:, 0]
    if maps.dim() != 3 or (size is not None and tuple(maps.shape[-2:]) != tuple(size)):
        raise ValueError(f"Expected (B, H, W) maps of size {size}, got shape {tuple(maps.shape)}.")
    return maps


#: Reduction name (as recorded in the run config) → function.
REDUCTIONS: dict[str, Reduction] = {"max_abs": max_abs, "sum_abs": sum_abs, "cam": cam, "none": as_map}


def reduce_attribution(name: str, attribution: Tensor, size: tuple[int, int]) -> Tensor:
    """Apply the reduction called ``name`` and return (B, H, W) maps of spatial ``size``."""
    if name not in REDUCTIONS:
        raise ValueError(f"Unknown reduction '{name}'. Available: {', '.join(REDUCTIONS)}.")
    return REDUCTIONS[name](attribution, size)


def _check_input_shaped(attribution: Tensor, size: tuple[int, int] | None, name: str) -> None:
    if attribution.dim() != 4:
        raise ValueError(f"{name} expects a (B, C, H, W) attribution, got shape {tuple(attribution.shape)}.")
    if size is not None and tuple(attribution.shape[-2:]) != tuple(size):
        raise ValueError(f"{name}: the attribution is {tuple(attribution.shape[-2:])}, expected {tuple(size)}.")
