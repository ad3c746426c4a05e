"""The defect-free nut: a shaded, streaked hazelnut-like shell on a near-black background, and its geometry.

Defects (:mod:`.defects`) are painted onto it afterwards, at points the returned :class:`Nut` places on the shell.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image


@dataclass
class Nut:
    """Pose and outline of one rendered nut, used to place defects on it."""

    size: int
    cx: float
    cy: float
    radius: float  # half the tip-to-base length, in pixels
    cos: float
    sin: float
    bend: float
    width_table: np.ndarray  # half-width along the axis (fraction of radius), sampled at _U_TABLE
    alpha: np.ndarray  # (H, W) float32 coverage of the nut, anti-aliased at the outline
    inside: np.ndarray  # (H, W) bool, the nut well inside its outline: where defects may be drawn

    def to_pixel(self, u: float, s: float) -> tuple[float, float]:
        """Pixel (x, y) of nut coordinates: ``u`` base (-1) to tip (+1), ``s`` across the nut (-1..1)."""
        v = s * float(np.interp(u, _U_TABLE, self.width_table)) + self.bend * ((u + 1) / 2) ** 2
        return (
            self.cx + self.radius * (u * self.cos - v * self.sin),
            self.cy + self.radius * (u * self.sin + v * self.cos),
        )

    def sample_point(self, rng: np.random.Generator, spread: float) -> tuple[float, float]:
        """A random pixel on the nut, at most ``spread`` (0..1) of the way from the centre to the outline."""
        u, s = rng.uniform(-spread, spread, 2)
        return self.to_pixel(float(u), float(s))


_U_TABLE = np.linspace(-1.0, 1.0, 4097)
_SHELL_BROWN = np.array([152, 100, 58], dtype=np.float32)
_STREAK_BROWN = np.array([82, 48, 26], dtype=np.float32)
_HIGHLIGHT = np.array([235, 215, 190], dtype=np.float32)
_HILUM_BEIGE = np.array([178, 150, 112], dtype=np.float32)


def _smooth_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Smooth zero-mean noise of about unit amplitude whose features are ``size / cells`` pixels wide.

    A small random grid upsampled bicubically costs a fraction of a full-resolution filter, and as
    ``cells`` is fixed the texture looks the same at every image size.
    """
    cells = min(cells, size)
    grid = rng.standard_normal((cells, cells), dtype=np.float32)
    return np.asarray(Image.fromarray(grid).resize((size, size), Image.Resampling.BICUBIC), dtype=np.float32)


def _outline_table(rng: np.random.Generator) -> np.ndarray:
    """Half-width of the nut along its axis (fraction of the radius): a round body ending in a short point.

    The body is a lopsided ellipse, broad at the base end; a soft minimum with a cone at the far
    end gives the pointed tip without turning the whole nut into a teardrop.
    """
    u = _U_TABLE
    body = (1 + u) ** rng.uniform(0.40, 0.50) * (1 - u) ** rng.uniform(0.38, 0.50)
    body *= rng.uniform(0.80, 0.95) / body.max()
    cone = rng.uniform(1.6, 2.4) * (1 - u)
    width = np.maximum(-0.1 * np.logaddexp(-body / 0.1, -cone / 0.1), 0)
    harmonics = np.arange(2, 6)[:, None]
    amplitude = rng.uniform(0.0, 0.03, (4, 1)) / harmonics * 2
    phase = rng.uniform(0, 2 * np.pi, (4, 1))
    lumps = 1 + (amplitude * np.sin(harmonics * np.pi * (u + 1) / 2 + phase)).sum(axis=0)
    return width * lumps


def render_nut(rng: np.random.Generator, size: int) -> tuple[np.ndarray, Nut]:
    """Draw one defect-free nut on a near-black background; returns the image and the nut's geometry."""
    radius = size * rng.uniform(0.30, 0.42)
    slack = max(0.0, 0.47 - radius / size)  # keep most of the nut inside the frame
    cx, cy = (float(c) for c in size * (0.5 + rng.uniform(-slack, slack, 2)))
    angle = rng.uniform(0, 2 * np.pi)
    bend = rng.uniform(-0.08, 0.08)
    table_pos, table_neg = _outline_table(rng), _outline_table(rng)

    coords = np.arange(size, dtype=np.float32) + 0.5
    dx, dy = coords[None, :] - cx, coords[:, None] - cy
    cos, sin = math.cos(angle), math.sin(angle)
    u = (dx * cos + dy * sin) / radius
    v = (dy * cos - dx * sin) / radius - bend * ((u + 1) / 2) ** 2
    width, mean_width = _lookup_width(u, v, table_pos, table_neg)
    across = v / np.maximum(width, 1e-4)
    # across**2 is < 1 inside the outline and > 1 outside it (huge beyond the ends, where width is 0).
    across2 = np.where(width > 1e-4, across * across, np.float32(4))

    grad_y, grad_x = np.gradient(across2)
    edge_distance = (across2 - 1) / np.maximum(np.hypot(grad_x, grad_y), 1e-6)
    alpha = np.where(across2 < 1.5, np.clip(0.5 - edge_distance, 0, 1), np.float32(0))

    # The nut as a solid of revolution about its axis: the cross-section at u is a circle of radius width(u).
    height = (radius * mean_width) * np.sqrt(np.clip(1 - across2, 0, 1))
    shade, highlight = _lighting(rng, height)
    albedo = _shell_albedo(rng, size, u, np.clip(across, -1, 1))
    grain = rng.standard_normal((size, size), dtype=np.float32)
    background = 13 + 3 * _smooth_noise(rng, size, 8) + 1.5 * grain[::-1]
    image = np.empty((size, size, 3), dtype=np.uint8)
    # Channel by channel on contiguous 2-D planes: several times faster than (H, W, 3) broadcasting.
    for channel in range(3):
        nut = albedo[channel] * shade + _HIGHLIGHT[channel] * highlight + 2.5 * grain
        image[..., channel] = np.clip(np.rint(background + (nut - background) * alpha), 0, 255)

    geometry = Nut(
        size=size,
        cx=cx,
        cy=cy,
        radius=radius,
        cos=cos,
        sin=sin,
        bend=bend,
        width_table=(table_pos + table_neg) / 2,
        alpha=alpha,
        inside=(across2 < 0.8) & (np.abs(u) < 0.92) & (alpha >= 1),
    )
    return image, geometry


def _lookup_width(
    u: np.ndarray, v: np.ndarray, table_pos: np.ndarray, table_neg: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Half-width of the nut at each pixel's axis position (0 beyond the ends): on the pixel's flank, and averaged.

    Each flank has its own table as real nuts are not mirror-symmetric; the average is smooth across the
    axis, for the height field. Nearest-sample lookup: np.interp's per-pixel binary search costs ~10x
    more, and at 4097 samples the step is a fraction of a pixel.
    """
    n = _U_TABLE.size
    padded = np.zeros((3, n + 2), dtype=np.float32)
    padded[0, 1:-1], padded[1, 1:-1], padded[2, 1:-1] = table_pos, table_neg, (table_pos + table_neg) / 2
    index = np.clip(np.rint((u + 1) * ((n - 1) / 2)) + 1, 0, n + 1).astype(np.intp)
    mean_width = padded[2][index]
    index[v < 0] += n + 2
    return padded.ravel()[index], mean_width


def _lighting(rng: np.random.Generator, height: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Diffuse shade and a soft specular highlight of the nut seen as a height field, lit from one side."""
    brightness = rng.uniform(0.85, 1.15)
    azimuth = rng.uniform(0, 2 * np.pi)
    elevation = rng.uniform(0.9, 1.35)  # mostly from above: MVTec lights its objects evenly
    gloss = rng.uniform(0.10, 0.30)
    shininess = rng.uniform(10, 25)

    slope_y, slope_x = np.gradient(height)
    norm = np.sqrt(slope_x * slope_x + slope_y * slope_y + 1)
    light = (math.cos(elevation) * math.cos(azimuth), math.cos(elevation) * math.sin(azimuth), math.sin(elevation))
    half_norm = math.hypot(light[0], light[1], light[2] + 1)
    half = (light[0] / half_norm, light[1] / half_norm, (light[2] + 1) / half_norm)
    diffuse = np.clip((light[2] - slope_x * light[0] - slope_y * light[1]) / norm, 0, 1)
    facing = np.clip((half[2] - slope_x * half[0] - slope_y * half[1]) / norm, 0, 1)
    shade = brightness * (0.45 + 0.65 * diffuse)
    highlight = (gloss * brightness) * facing**shininess
    return shade, highlight


def _shell_albedo(rng: np.random.Generator, size: int, u: np.ndarray, across: np.ndarray) -> np.ndarray:
    """Shell colour, (3, H, W): brown with wavy dark streaks from base to tip and a pale rough cap at the base."""
    # float32, as a float64 factor would promote every per-pixel product to float64 (twice the time).
    tint = (_SHELL_BROWN * rng.uniform(0.85, 1.1) * rng.uniform(0.95, 1.05, 3)).astype(np.float32)
    stripes = rng.uniform(40, 60)
    threshold = rng.uniform(0.1, 0.5)  # higher: fewer, thinner dark streaks
    hilum_length = rng.uniform(0.22, 0.34)
    warp = 1.8 * _smooth_noise(rng, size, 6) + 0.6 * _smooth_noise(rng, size, 24)
    breakup = _smooth_noise(rng, size, 14)
    mottle = _smooth_noise(rng, size, 5)
    rough = _smooth_noise(rng, size, 96)
    cap_edge = _smooth_noise(rng, size, 20)
    speckle = _smooth_noise(rng, size, 220)

    # Longitude on the nut: stripes follow meridians and so converge at the tip and the base.
    longitude = np.arcsin(across)
    phase = stripes * longitude + warp
    # Noise added before thresholding the sine makes streaks of uneven width that break off and restart.
    streak = np.clip((np.sin(phase) + 0.6 * breakup + 0.25 * rough - threshold) * 1.2, 0, 0.85)
    tone = (1 + 0.05 * np.sin(2.7 * phase + 1.3 * breakup) + 0.10 * mottle + 0.05 * rough) * (
        1 - 0.25 * np.clip((u - 0.45) / 0.55, 0, 1)  # the tip is darker
    )

    # The hilum: a cap across the base end, convex towards the tip, with a ragged darker border.
    cap_distance = (u + 1) + (0.45 * hilum_length) * across * across + 0.03 * cap_edge
    cap = np.clip((hilum_length - cap_distance) * 25, 0, 1)
    border = 1 - 0.35 * np.clip(1 - np.abs(cap_distance - hilum_length) * 30, 0, 1)
    # The scar is matte and rough: speckle rather than stripes.
    scar = 0.86 + 0.10 * speckle + 0.08 * rough

    albedo = np.empty((3, size, size), dtype=np.float32)
    for channel in range(3):
        shell = (tint[channel] + (_STREAK_BROWN[channel] - tint[channel]) * streak) * tone
        hilum = _HILUM_BEIGE[channel] * scar
        albedo[channel] = (shell + (hilum - shell) * cap) * border
    return albedo
