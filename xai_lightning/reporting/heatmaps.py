"""Heatmap overlays of attribution maps on their images, for W&B panels and figures.

Maps are min–max normalised per image for display only; no metric depends on that normalisation.
"""

from __future__ import annotations

import numpy as np
import torch
from matplotlib import colormaps


def normalize_map(attribution: torch.Tensor | np.ndarray) -> np.ndarray:
    """Min–max scale one (H, W) map to [0, 1]; a constant map becomes all zeros."""
    if isinstance(attribution, torch.Tensor):
        attribution = attribution.detach().cpu()
    a = np.asarray(attribution, dtype=np.float32)
    low, high = float(a.min()), float(a.max())
    return (a - low) / (high - low) if high > low else np.zeros_like(a)


def overlay(
    image: np.ndarray, attribution: torch.Tensor | np.ndarray, alpha: float = 0.5, cmap: str = "jet"
) -> np.ndarray:
    """Blend a coloured heatmap onto an RGB image in [0, 1] (H, W, 3); returns uint8 (H, W, 3)."""
    heat = colormaps[cmap](normalize_map(attribution))[..., :3]
    return (255 * ((1 - alpha) * image + alpha * heat)).clip(0, 255).astype(np.uint8)


def heatmap_strip(image: np.ndarray, maps: list[torch.Tensor | np.ndarray], alpha: float = 0.5) -> np.ndarray:
    """The image followed by one overlay per map, side by side: uint8 (H, W·(1 + len(maps)), 3)."""
    panels = [(255 * image).clip(0, 255).astype(np.uint8)] + [overlay(image, m, alpha) for m in maps]
    return np.concatenate(panels, axis=1)


def tiled_mask(mask: np.ndarray, n_panels: int) -> np.ndarray:
    """A (H, W) mask repeated under every panel of a strip, for W&B's mask overlay."""
    return np.tile(np.asarray(mask, dtype=np.uint8), (1, n_panels))
