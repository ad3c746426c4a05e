"""Synthetic hazelnut-like images, defect masks and a SYNTHETIC.json marker, written in the exact MVTec AD layout.

MVTec AD cannot be downloaded here; this stand-in lets the real MVTec reader, the tests and the quickstart run offline.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from tqdm.auto import tqdm

from xai_lightning.errors import ConfigError, DatasetError

DEFECT_TYPES: tuple[str, ...] = ("crack", "cut", "hole", "print")

#: Image counts of the real MVTec AD hazelnut category, per ``split/class``.
MVTEC_HAZELNUT_COUNTS: dict[str, int] = {
    "train/good": 391,
    "test/good": 40,
    "test/crack": 18,
    "test/cut": 17,
    "test/hole": 18,
    "test/print": 17,
}

MARKER_FILE = "SYNTHETIC.json"

#: Folder (inside the category folder) holding the shortcut markers' masks, ``<class>/<stem>_mask.png``.
SHORTCUT_MASK_DIR = "shortcut_mask"

#: Shape and RGB colour of the shortcut marker of each defect class. Saturated colours that the brown
#: nut, the dark background and the print defect's inks never show, so the marker is trivially learnable.
SHORTCUT_MARKERS: dict[str, tuple[str, tuple[int, int, int]]] = {
    "crack": ("square", (40, 220, 60)),
    "cut": ("cross", (30, 110, 255)),
    "hole": ("ring", (235, 40, 205)),
    "print": ("triangle", (250, 225, 20)),
}

_GENERATOR = "xai_lightning.data.synthetic"
_VERSION = 1
_SPLITS = ("train", "test")
_CLASSES = ("good", *DEFECT_TYPES)
_COUNT_KEYS = ("train/good", "test/good", *(f"test/{defect}" for defect in DEFECT_TYPES))
_MVTEC_SUBDIRS = ("train", "test", "ground_truth")
_CATEGORY_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
_MAX_DEFECT_TRIES = 100
_MARKER_CANDIDATES = 8
_MIN_MARKER_SIDE = 5  # pixels: below this the four marker shapes can no longer be told apart
# Fixed so the bytes never depend on a library default. Level 3 encodes a 1024 px image ~3x faster
# than Pillow's default 6 for files ~2% larger (the shell's grain barely compresses).
_PNG_OPTIONS = {"format": "PNG", "compress_level": 3, "optimize": False}


@dataclass(frozen=True)
class SyntheticConfig:
    """What to generate: image size, RNG seed, category folder name, image count per ``split/class`` and the shortcut.

    ``counts`` keys are ``train/good``, ``test/good`` and ``test/<defect>``; a missing key means 0 images.

    ``shortcut_fraction`` (0..1, default 0 = off) is the known-answer experiment's planted shortcut: that
    fraction of the images of each defect class (chosen by ``seed``) gets a small marker of a class-specific
    shape and colour (:data:`SHORTCUT_MARKERS`), drawn away from the defect, with its mask written to
    ``<category>/shortcut_mask/<class>/<stem>_mask.png``. ``good`` images never get one, so marker presence
    and shape predict the class. All defect images sit in MVTec's ``test/`` folder and the project's own
    stratified split deals them into train, val and test, so marked images land in every split at about
    the same rate. ``shortcut_size`` is the marker's side as a fraction of the image side (at least 5 px).
    With the shortcut off the files are byte-identical to those written before the option existed.
    """

    size: int = 1024
    seed: int = 0
    category: str = "hazelnut"
    counts: dict[str, int] = field(default_factory=lambda: dict(MVTEC_HAZELNUT_COUNTS))
    shortcut_fraction: float = 0.0
    shortcut_size: float = 0.07

    def __post_init__(self) -> None:
        if not _is_int(self.size) or self.size < 32:
            raise ConfigError(f"synthetic `size` is {self.size!r}; use an integer >= 32 (MVTec AD images are 1024).")
        if not _is_int(self.seed) or self.seed < 0:
            raise ConfigError(f"synthetic `seed` is {self.seed!r}; use an integer >= 0.")
        if not isinstance(self.category, str) or not _CATEGORY_PATTERN.fullmatch(self.category):
            raise ConfigError(
                f"synthetic `category` is {self.category!r}; use a plain folder name of letters, digits, '_', '-' "
                "or '.' (for example 'hazelnut')."
            )
        if not isinstance(self.counts, dict):
            raise ConfigError(f"synthetic `counts` is {self.counts!r}; use a mapping such as {{'test/crack': 5}}.")
        for key, count in self.counts.items():
            if key not in _COUNT_KEYS:
                raise ConfigError(
                    f"synthetic `counts` has unknown key {key!r}; use only {', '.join(_COUNT_KEYS)}."
                )
            if not _is_int(count) or count < 0:
                raise ConfigError(f"synthetic `counts['{key}']` is {count!r}; use an integer >= 0.")
        if sum(self.counts.values()) == 0:
            raise ConfigError("synthetic `counts` asks for no images at all; give at least one class a count > 0.")
        # Copy so that later changes to the caller's dict cannot alter this frozen config.
        object.__setattr__(self, "counts", dict(self.counts))
        if not _is_real(self.shortcut_fraction) or not 0.0 <= self.shortcut_fraction <= 1.0:
            raise ConfigError(
                f"synthetic `shortcut_fraction` is {self.shortcut_fraction!r}; use a number from 0 (no shortcut "
                "markers) to 1 (a marker on every defect image)."
            )
        if not _is_real(self.shortcut_size) or not 0.01 <= self.shortcut_size <= 0.2:
            raise ConfigError(
                f"synthetic `shortcut_size` is {self.shortcut_size!r}; use a fraction of the image side from 0.01 "
                "to 0.2 (default 0.07)."
            )
        # Floats, so that a YAML `1` and `1.0` make the same SYNTHETIC.json and compare equal on resume.
        object.__setattr__(self, "shortcut_fraction", float(self.shortcut_fraction))
        object.__setattr__(self, "shortcut_size", float(self.shortcut_size))

    @property
    def shortcut_side(self) -> int:
        """Side of the shortcut marker in pixels."""
        return max(_MIN_MARKER_SIDE, round(self.shortcut_size * self.size))


def _is_int(value: object) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _is_real(value: object) -> bool:
    numeric = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
    return numeric and math.isfinite(value)


# ---------------------------------------------------------------------------------------------- rendering


@dataclass
class _Nut:
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
_INK_COLOURS = np.array([(80, 6, 18), (25, 32, 125), (38, 14, 46), (16, 16, 20)], dtype=np.float32)
_SHELL_BROWN = np.array([152, 100, 58], dtype=np.float32)
_STREAK_BROWN = np.array([82, 48, 26], dtype=np.float32)
_HIGHLIGHT = np.array([235, 215, 190], dtype=np.float32)
_HILUM_BEIGE = np.array([178, 150, 112], dtype=np.float32)
_KERNEL_CREAM = np.array([232, 212, 168], dtype=np.float32)


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


def _render_nut(rng: np.random.Generator, size: int) -> tuple[np.ndarray, _Nut]:
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

    geometry = _Nut(
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


def _random_walk(
    rng: np.random.Generator, start: tuple[float, float], heading: float, steps: int, step: float, wiggle: float
) -> list[tuple[float, float]]:
    """Polyline of ``steps`` segments of about ``step`` pixels whose heading drifts by ``wiggle`` radians a step."""
    points = [start]
    x, y = start
    for _ in range(steps):
        heading += rng.normal(0, wiggle)
        length = step * rng.uniform(0.6, 1.4)
        x, y = x + length * math.cos(heading), y + length * math.sin(heading)
        points.append((x, y))
    return points


def _canvas(size: int) -> tuple[Image.Image, ImageDraw.ImageDraw]:
    canvas = Image.new("L", (size, size), 0)
    return canvas, ImageDraw.Draw(canvas)


@dataclass
class _Pixels:
    """The pixels a defect covers, clipped to the nut: where they are and their clean colours."""

    region: np.ndarray  # (H, W) bool
    x: np.ndarray  # (N,) pixel-centre coordinates, in np.nonzero order
    y: np.ndarray
    clean: np.ndarray  # (N, 3) float32


def _pixels(region: np.ndarray, nut: _Nut, clean: np.ndarray) -> _Pixels:
    # Defects are only painted well inside the outline, never on the background or the anti-aliased rim.
    region = region & nut.inside
    ys, xs = np.nonzero(region)
    return _Pixels(region, xs + np.float32(0.5), ys + np.float32(0.5), clean[ys, xs].astype(np.float32))


def _draw_crack(rng: np.random.Generator, nut: _Nut, clean: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Thin dark branching lines: a random walk with 1-3 side branches."""
    size = nut.size
    width = max(1, round(size * rng.uniform(0.005, 0.012)))
    heading = rng.uniform(0, 2 * np.pi)
    start = nut.sample_point(rng, 0.55)
    trunk = _random_walk(rng, start, heading, int(rng.integers(6, 13)), size * rng.uniform(0.02, 0.035), 0.35)
    canvas, draw = _canvas(size)
    draw.line(trunk, fill=255, width=width, joint="curve")
    for _ in range(int(rng.integers(1, 4))):
        fork = trunk[int(rng.integers(1, len(trunk) - 1))]
        side = heading + rng.choice([-1.0, 1.0]) * rng.uniform(0.4, 1.1)
        branch = _random_walk(rng, fork, side, int(rng.integers(2, 6)), size * rng.uniform(0.015, 0.03), 0.4)
        draw.line(branch, fill=255, width=max(1, round(width * 0.7)), joint="curve")
    pixels = _pixels(np.asarray(canvas) > 0, nut, clean)
    # A crack is a shadowed gap: the shell colour, much darker, unevenly so along its length.
    depth = rng.uniform(0.1, 0.25) + 0.04 * rng.standard_normal(len(pixels.x), dtype=np.float32)
    return pixels.region, pixels.clean * np.clip(depth, 0.02, 0.4)[:, None]


def _draw_cut(rng: np.random.Generator, nut: _Nut, clean: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A straight-ish gash: a thin lens showing cream kernel inside, with a dark edge."""
    size = nut.size
    cx, cy = nut.sample_point(rng, 0.5)
    angle = rng.uniform(0, np.pi)
    half_length = size * rng.uniform(0.06, 0.15)
    half_width = size * rng.uniform(0.010, 0.028)
    sag = rng.uniform(-0.25, 0.25) * half_width
    along = np.array([math.cos(angle), math.sin(angle)])
    normal = np.array([-along[1], along[0]])
    t = np.linspace(-1, 1, 17)
    spread = half_width * (1 - t * t) ** 0.6 * rng.uniform(0.85, 1.15, (2, t.size))
    centre = np.array([cx, cy]) + (t * half_length)[:, None] * along + (sag * (1 - t * t))[:, None] * normal
    upper = centre + spread[0][:, None] * normal
    lower = centre - spread[1][:, None] * normal
    outline = [tuple(p) for p in np.concatenate([upper, lower[::-1]])]

    canvas, draw = _canvas(size)
    draw.polygon(outline, fill=255)
    edge_width = max(1, round(half_width * rng.uniform(0.35, 0.6)))
    draw.line([*outline, outline[0]], fill=128, width=edge_width, joint="curve")
    pixels = _pixels(np.asarray(canvas) > 0, nut, clean)
    is_edge = (np.asarray(canvas) == 128)[pixels.region]

    # The exposed kernel is shadowed on one side of the gash, as in a V-shaped cut.
    side = np.clip(((pixels.x - cx) * normal[0] + (pixels.y - cy) * normal[1]) / max(half_width, 1.0), -1, 1)
    kernel_tone = 0.72 + 0.22 * side + 0.04 * rng.standard_normal(side.size)
    kernel = (_KERNEL_CREAM * rng.uniform(0.9, 1.05)) * kernel_tone[:, None]
    edge = pixels.clean * rng.uniform(0.25, 0.4)
    return pixels.region, np.where(is_edge[:, None], edge, kernel)


def _draw_hole(rng: np.random.Generator, nut: _Nut, clean: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A dark round pit, darkest at its centre, inside a lighter raised rim."""
    size = nut.size
    cx, cy = nut.sample_point(rng, 0.5)
    radius = size * rng.uniform(0.03, 0.07)
    rim = rng.uniform(0.25, 0.45)
    harmonics = (2, 3, 4, 5)
    wobble = [float(w) for w in rng.uniform(0, 0.07, 4)]
    phase = [float(p) for p in rng.uniform(0, 2 * np.pi, 4)]

    def relative_radius(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        # Distance from the centre in units of the (slightly lumpy) pit outline: < 1 pit, 1..1+rim rim.
        theta = np.arctan2(y - cy, x - cx)
        outline = radius * (1 + sum(2 * w / k * np.cos(k * theta + p) for w, k, p in zip(wobble, harmonics, phase)))
        return np.hypot(x - cx, y - cy) / outline

    # Only the hole's bounding box is evaluated: the full image would cost ~50x more.
    reach = radius * 1.2 * (1 + rim)
    x0, x1 = (int(np.clip(c, 0, size)) for c in (math.floor(cx - reach), math.ceil(cx + reach) + 1))
    y0, y1 = (int(np.clip(c, 0, size)) for c in (math.floor(cy - reach), math.ceil(cy + reach) + 1))
    region = np.zeros((size, size), dtype=bool)
    crop_x = np.arange(x0, x1, dtype=np.float32)[None, :] + 0.5
    crop_y = np.arange(y0, y1, dtype=np.float32)[:, None] + 0.5
    region[y0:y1, x0:x1] = relative_radius(crop_x, crop_y) < 1 + rim
    pixels = _pixels(region, nut, clean)

    r = relative_radius(pixels.x, pixels.y)[:, None]
    pit = pixels.clean * (0.10 + 0.22 * r * r)
    raised_rim = np.minimum(pixels.clean * 1.15 + 20, 255)
    return pixels.region, np.where(r < 1, pit, raised_rim)


def _draw_print(rng: np.random.Generator, nut: _Nut, clean: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Semi-opaque ink marks: a row of letter-like strokes, rings and blobs, sometimes underlined."""
    size = nut.size
    ink = _INK_COLOURS[int(rng.integers(len(_INK_COLOURS)))] * rng.uniform(0.8, 1.15)
    opacity = rng.uniform(0.75, 0.92)
    height = size * rng.uniform(0.05, 0.09)
    stroke = max(1, round(height * rng.uniform(0.12, 0.22)))
    glyphs = int(rng.integers(2, 6))
    x0, y0 = nut.sample_point(rng, 0.4)
    angle = rng.uniform(0, 2 * np.pi)
    along = np.array([math.cos(angle), math.sin(angle)])
    up = np.array([-along[1], along[0]])

    def place(points: np.ndarray, index: float) -> list[tuple[float, float]]:
        # Glyph-local (a, b) in [0, 0.6] x [0, 1] to pixels; glyphs sit side by side along the baseline.
        origin = np.array([x0, y0]) + (index - glyphs / 2) * 0.85 * height * along
        return [tuple(origin + height * (a * along + (b - 0.5) * up)) for a, b in points]

    canvas, draw = _canvas(size)
    for index in range(glyphs):
        kind = int(rng.integers(3))
        if kind == 0:  # zigzag strokes read as N, M, W or Z
            n = int(rng.integers(3, 6))
            points = np.stack([np.sort(rng.uniform(0, 0.6, n)), np.where(np.arange(n) % 2 == 0, 0.05, 0.95)], axis=1)
            points[:, 1] += rng.uniform(-0.05, 0.05, n)
            draw.line(place(points, index), fill=255, width=stroke, joint="curve")
        elif kind == 1:  # a ring: O, C or D
            t = np.linspace(0, 2 * np.pi * rng.uniform(0.7, 1.0), 20)
            points = np.stack([0.3 + 0.3 * np.cos(t), 0.5 + 0.45 * np.sin(t)], axis=1)
            draw.line(place(points, index), fill=255, width=stroke, joint="curve")
        else:  # an ink blob
            t = np.linspace(0, 2 * np.pi, 16, endpoint=False)
            blob = rng.uniform(0.15, 0.35) * rng.uniform(0.8, 1.2, t.size)
            points = np.stack([0.3 + blob * np.cos(t), 0.5 + 1.3 * blob * np.sin(t)], axis=1)
            draw.polygon(place(points, index), fill=255)
    if rng.uniform() < 0.5:
        t = np.linspace(-0.1, (glyphs - 1) * 0.85 + 0.7, 12)
        underline = np.stack([t, -0.25 + 0.08 * np.sin(3 * t)], axis=1)
        draw.line(place(underline, 0), fill=255, width=stroke, joint="curve")
    pixels = _pixels(np.asarray(canvas) > 0, nut, clean)
    return pixels.region, pixels.clean * (1 - opacity) + ink * opacity


_DefectDrawer = Callable[[np.random.Generator, _Nut, np.ndarray], tuple[np.ndarray, np.ndarray]]
_DEFECT_DRAWERS: dict[str, _DefectDrawer] = {
    "crack": _draw_crack,
    "cut": _draw_cut,
    "hole": _draw_hole,
    "print": _draw_print,
}


def _add_defect(rng: np.random.Generator, nut: _Nut, clean: np.ndarray, defect: str) -> tuple[np.ndarray, np.ndarray]:
    """Paint ``defect`` on the nut; the mask is exactly the pixels it changed (never background).

    Each drawer returns the region it covers (already clipped to the nut) and the new colours of
    those pixels, in np.nonzero order.
    """
    draw = _DEFECT_DRAWERS[defect]
    # A defect clipped to a few pixels is invisible; redraw it from the next draws rather than label noise.
    min_area = max(4, nut.size * nut.size // 20000)
    for _ in range(_MAX_DEFECT_TRIES):
        region, colours = draw(rng, nut, clean)
        image = clean.copy()
        image[region] = np.clip(np.rint(colours), 0, 255).astype(np.uint8)
        # A pixel whose new colour rounds back to the clean one was not changed, so it is not in the mask.
        mask = region.copy()
        mask[region] = (image[region] != clean[region]).any(axis=-1)
        if mask.sum() >= min_area:
            return image, mask
    raise RuntimeError(f"could not place a '{defect}' defect on the nut after {_MAX_DEFECT_TRIES} tries")


def render_sample(rng: np.random.Generator, size: int, defect: str | None) -> tuple[np.ndarray, np.ndarray]:
    """(image HxWx3 uint8, mask HxW bool) for one sample; defect None = good (all-False mask).

    The clean nut is drawn first from ``rng`` and the defect after it, so the same RNG state with
    ``defect=None`` gives exactly the image the defect was painted on.
    """
    if defect is not None and defect not in DEFECT_TYPES:
        raise ValueError(f"defect is {defect!r}; use None (good) or one of {', '.join(DEFECT_TYPES)}.")
    if size < 32:
        raise ValueError(f"size is {size}; use at least 32 pixels.")
    image, nut = _render_nut(rng, size)
    if defect is None:
        return image, np.zeros((size, size), dtype=bool)
    return _add_defect(rng, nut, image, defect)


def shortcut_marker_region(label: str, x0: int, y0: int, side: int, size: int) -> np.ndarray:
    """(size, size) bool: the pixels of ``label``'s shortcut marker with its ``side``-pixel box at (x0, y0)."""
    if label not in SHORTCUT_MARKERS:
        raise ValueError(f"label is {label!r}; shortcut markers exist for {', '.join(SHORTCUT_MARKERS)} only.")
    shape, _ = SHORTCUT_MARKERS[label]
    x1, y1 = x0 + side - 1, y0 + side - 1  # PIL boxes include their far edge
    canvas, draw = _canvas(size)
    if shape == "square":
        draw.rectangle([x0, y0, x1, y1], fill=255)
    elif shape == "cross":
        bar = max(1, round(side / 3))
        offset = (side - bar) // 2
        draw.rectangle([x0, y0 + offset, x1, y0 + offset + bar - 1], fill=255)
        draw.rectangle([x0 + offset, y0, x0 + offset + bar - 1, y1], fill=255)
    elif shape == "ring":
        draw.ellipse([x0, y0, x1, y1], outline=255, width=max(1, round(side / 4)))
    else:  # triangle, apex up
        draw.polygon([((x0 + x1) / 2, y0), (x1, y1), (x0, y1)], fill=255)
    return np.asarray(canvas) > 0


def add_shortcut_marker(
    rng: np.random.Generator, image: np.ndarray, defect_mask: np.ndarray, label: str, side: int
) -> tuple[np.ndarray, np.ndarray]:
    """Paint ``label``'s shortcut marker away from the defect; returns (new image, marker mask HxW bool).

    The marker lies wholly inside the image's inscribed circle, so the training augmentation's rotations
    (black fill at the corners) never crop it, and of a few random positions the one farthest from the
    defect is taken, so the marker never touches the defect mask and the two attribution targets stay apart.
    Only the marker's pixels change: the defect and its mask are exactly those of the unmarked sample.
    """
    size = image.shape[0]
    _, colour = SHORTCUT_MARKERS[label]
    reach = size / 2 - side / math.sqrt(2) - 1  # farthest marker centre from the image centre
    if reach <= 0:
        raise ValueError(f"a {side} px marker does not fit in a {size} px image.")
    ys, xs = np.nonzero(defect_mask)
    best: tuple[float, int, int] | None = None
    for _ in range(_MARKER_CANDIDATES):
        angle = rng.uniform(0, 2 * np.pi)
        distance = reach * math.sqrt(rng.uniform())  # uniform over the disc
        x0 = round(size / 2 + distance * math.cos(angle) - side / 2)
        y0 = round(size / 2 + distance * math.sin(angle) - side / 2)
        # Gap between the marker's box and the nearest defect pixel (0 = touching or overlapping).
        dx = np.maximum(np.maximum(x0 - xs, xs - (x0 + side - 1)), 0)
        dy = np.maximum(np.maximum(y0 - ys, ys - (y0 + side - 1)), 0)
        gap = float(np.hypot(dx, dy).min()) if xs.size else float(size)
        if best is None or gap > best[0]:
            best = (gap, x0, y0)
    assert best is not None
    gap, x0, y0 = best
    if gap < 1:
        raise RuntimeError(f"could not place the '{label}' shortcut marker clear of the defect")
    region = shortcut_marker_region(label, x0, y0, side, size)
    marked = image.copy()
    marked[region] = colour
    # As for defects, the mask is the pixels that changed (a pixel already of the marker's colour did not).
    return marked, region & (marked != image).any(axis=-1)


# ---------------------------------------------------------------------------------------------- writing


def _marker(config: SyntheticConfig) -> dict:
    marker = {
        "generator": _GENERATOR,
        "version": _VERSION,
        "category": config.category,
        "size": config.size,
        "seed": config.seed,
        "counts": {key: int(config.counts.get(key, 0)) for key in _COUNT_KEYS},
    }
    # Only when on: sets written without the shortcut keep their SYNTHETIC.json byte for byte.
    if config.shortcut_fraction > 0:
        marked = _shortcut_marked(config)
        marker["shortcut"] = {
            "fraction": config.shortcut_fraction,
            "size": config.shortcut_size,
            "side_px": config.shortcut_side,
            "mask_dir": SHORTCUT_MASK_DIR,
            "markers": {label: {"shape": shape, "rgb": list(rgb)} for label, (shape, rgb) in SHORTCUT_MARKERS.items()},
            "marked": {label: len(marked.get(label, ())) for label in DEFECT_TYPES},
        }
    return marker


def _shortcut_rng(config: SyntheticConfig, split: str, label: str, index: int, stream: int) -> np.random.Generator:
    # Child streams (spawn_key) of the sample's seed: independent of the image's own stream, which
    # therefore draws exactly what it draws with the shortcut off. Stream 1 picks, stream 2 places.
    entropy = [config.seed, _SPLITS.index(split), _CLASSES.index(label), index]
    return np.random.default_rng(np.random.SeedSequence(entropy, spawn_key=(stream,)))


def _shortcut_marked(config: SyntheticConfig) -> dict[str, frozenset[int]]:
    """Indices of the images of each defect class that carry the shortcut marker.

    Exactly round(fraction * n) per class: the images with the smallest per-image random keys, so a
    class's choice depends on the seed and its own count only.
    """
    marked: dict[str, frozenset[int]] = {}
    if config.shortcut_fraction <= 0:
        return marked
    for defect in DEFECT_TYPES:
        count = config.counts.get(f"test/{defect}", 0)
        keys = [_shortcut_rng(config, "test", defect, index, 1).random() for index in range(count)]
        chosen = sorted(range(count), key=lambda index: (keys[index], index))
        marked[defect] = frozenset(chosen[: math.floor(config.shortcut_fraction * count + 0.5)])
    return marked


def _planned(config: SyntheticConfig) -> Iterator[tuple[str, str, int]]:
    """(split, class, index) of every image, in a fixed order."""
    for key in _COUNT_KEYS:
        split, label = key.split("/")
        for index in range(config.counts.get(key, 0)):
            yield split, label, index


def _image_path(split: str, label: str, index: int) -> str:
    return f"{split}/{label}/{index:03d}.png"


def _mask_path(label: str, index: int) -> str:
    return f"ground_truth/{label}/{index:03d}_mask.png"


def _shortcut_mask_path(label: str, index: int) -> str:
    return f"{SHORTCUT_MASK_DIR}/{label}/{index:03d}_mask.png"


def _expected_files(config: SyntheticConfig) -> list[str]:
    files = []
    marked = _shortcut_marked(config)
    for split, label, index in _planned(config):
        files.append(_image_path(split, label, index))
        if label != "good":
            files.append(_mask_path(label, index))
        if index in marked.get(label, ()):
            files.append(_shortcut_mask_path(label, index))
    return files


def _sample_rng(config: SyntheticConfig, split: str, label: str, index: int) -> np.random.Generator:
    # One stream per sample, so changing one class's count leaves every other file unchanged.
    return np.random.default_rng([config.seed, _SPLITS.index(split), _CLASSES.index(label), index])


def _save_png(array: np.ndarray, path: Path) -> None:
    """Write atomically: an interrupted run never leaves a truncated PNG under its final name."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    Image.fromarray(array).save(temporary, **_PNG_OPTIONS)
    os.replace(temporary, path)


def _check_target(out: Path, config: SyntheticConfig) -> bool:
    """True when ``out`` already holds this exact synthetic set; raise when writing there is unsafe."""
    marker_path = out / MARKER_FILE
    if marker_path.is_file():
        try:
            existing = json.loads(marker_path.read_text())
        except (OSError, ValueError) as error:
            raise DatasetError(
                f"'{marker_path}' cannot be read ({error}); delete '{out}' or choose another --out."
            ) from error
        if existing != _marker(config):
            raise DatasetError(
                f"'{out}' already holds a synthetic set made with a different configuration "
                f"({_describe(existing)}; asked for {_describe(_marker(config))}). "
                f"Delete '{out}' or choose another --out."
            )
        category_dir = out / config.category
        return all((category_dir / name).is_file() for name in _expected_files(config))
    if out.exists() and not out.is_dir():
        raise DatasetError(f"'{out}' is a file; choose a folder for --out.")
    if out.is_dir():
        looks_like_mvtec = [
            p.name for p in sorted(out.iterdir()) if p.is_dir() and any((p / s).is_dir() for s in _MVTEC_SUBDIRS)
        ]
        if any((out / s).is_dir() for s in _MVTEC_SUBDIRS):
            looks_like_mvtec.append(".")
        if (out / config.category).exists() and config.category not in looks_like_mvtec:
            looks_like_mvtec.append(config.category)
        if looks_like_mvtec:
            raise DatasetError(
                f"'{out}' holds MVTec-AD-like folders ({', '.join(looks_like_mvtec)}) but no {MARKER_FILE} "
                "marker: it may be the real MVTec AD data, which the synthetic generator never overwrites. "
                "Choose another --out."
            )
    return False


def _describe(marker: dict) -> str:
    counts = marker.get("counts", {})
    total = sum(counts.values()) if isinstance(counts, dict) else "?"
    shortcut = marker.get("shortcut")
    fraction = shortcut.get("fraction") if isinstance(shortcut, dict) else 0.0
    return (
        f"category={marker.get('category')!r}, size={marker.get('size')}, seed={marker.get('seed')}, {total} images, "
        f"shortcut_fraction={fraction}"
    )


def generate_synthetic_mvtec(
    out: str | Path, config: SyntheticConfig = SyntheticConfig(), *, progress: bool = False
) -> Path:
    """Write the dataset; return the category folder <out>/<category>.

    Writes ``<out>/<category>/{train,test}/<class>/NNN.png``, ``ground_truth/<defect>/NNN_mask.png``,
    with the shortcut on ``shortcut_mask/<defect>/NNN_mask.png`` for the marked images, and the
    ``<out>/SYNTHETIC.json`` marker. Does nothing when the same set is already complete;
    finishes an interrupted run; raises :class:`DatasetError` when ``out`` holds a synthetic set of
    another configuration, or MVTec-like folders without the marker (possibly the real data).
    """
    out = Path(out)
    category_dir = out / config.category
    if _check_target(out, config):
        return category_dir
    out.mkdir(parents=True, exist_ok=True)
    # The marker goes first so that an interrupted run is recognised as ours and resumed.
    (out / MARKER_FILE).write_text(json.dumps(_marker(config), indent=2) + "\n")
    planned = list(_planned(config))
    marked = _shortcut_marked(config)
    bar = tqdm(planned, desc=f"synthetic {config.category}", unit="image", disable=not progress, file=sys.stderr)
    for split, label, index in bar:
        image_path = category_dir / _image_path(split, label, index)
        mask_path = category_dir / _mask_path(label, index)
        has_marker = index in marked.get(label, ())
        marker_path = category_dir / _shortcut_mask_path(label, index)
        if (
            image_path.is_file()
            and (label == "good" or mask_path.is_file())
            and (not has_marker or marker_path.is_file())
        ):
            continue
        defect = None if label == "good" else label
        image, mask = render_sample(_sample_rng(config, split, label, index), config.size, defect)
        if has_marker:
            image, marker_mask = add_shortcut_marker(
                _shortcut_rng(config, split, label, index, 2), image, mask, label, config.shortcut_side
            )
            _save_png(marker_mask.astype(np.uint8) * 255, marker_path)
        if defect is not None:
            # Masks before image: a present image then always implies its masks are present.
            _save_png(mask.astype(np.uint8) * 255, mask_path)
        _save_png(image, image_path)
    return category_dir


def is_synthetic(root: str | Path) -> bool:
    """True when ``root`` (the folder holding the category folders) carries the SYNTHETIC.json marker."""
    return (Path(root) / MARKER_FILE).is_file()


def shortcut_mask_path(image_path: str | Path) -> str | None:
    """Path of the shortcut marker's mask of an image ``<category>/<split>/<class>/<stem>.png``; None if unmarked.

    For scoring attributions against the planted marker (the known-answer experiment): the mask is
    ``<category>/shortcut_mask/<class>/<stem>_mask.png``, 0/255 like MVTec masks, and exists only for
    images that carry a marker, so None means "no marker in this image" (or a set without the shortcut).
    """
    image_path = Path(image_path)
    path = image_path.parent.parent.parent / SHORTCUT_MASK_DIR / image_path.parent.name / f"{image_path.stem}_mask.png"
    return str(path) if path.is_file() else None


def shortcut_settings(root: str | Path) -> dict | None:
    """The shortcut section of ``<root>/SYNTHETIC.json`` (fraction, size, markers, ...); None when off or not synthetic.

    Lets evaluation tell a known-answer data set from a plain one without guessing from file names.
    """
    marker_path = Path(root) / MARKER_FILE
    if not marker_path.is_file():
        return None
    try:
        shortcut = json.loads(marker_path.read_text()).get("shortcut")
    except (OSError, ValueError, AttributeError) as error:
        raise DatasetError(f"'{marker_path}' cannot be read ({error}).") from error
    return shortcut if isinstance(shortcut, dict) else None


# ---------------------------------------------------------------------------------------------- command line


def _parse_counts(specs: Sequence[str] | None) -> dict[str, int]:
    counts = dict(MVTEC_HAZELNUT_COUNTS)
    for spec in specs or []:
        for item in filter(None, (part.strip() for part in spec.split(","))):
            key, sep, value = item.partition("=")
            if not sep or not value.strip().isdigit():
                raise ConfigError(f"--counts item {item!r} is not SPLIT/CLASS=N (for example test/crack=5).")
            counts[key.strip()] = int(value)
    return counts


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: write the synthetic set, or say it is already there; returns the exit status."""
    parser = argparse.ArgumentParser(
        prog="python -m xai_lightning.data.synthetic",
        description="Write a synthetic hazelnut-like data set in the MVTec AD folder layout, labelled by "
        "SYNTHETIC.json.",
    )
    parser.add_argument("--out", required=True, type=Path, help="dataset root; the category folder is created inside")
    parser.add_argument("--size", type=int, default=1024, help="image side in pixels (default 1024, as MVTec AD)")
    parser.add_argument("--seed", type=int, default=0, help="RNG seed; the same seed gives byte-identical files")
    parser.add_argument("--category", default="hazelnut", help="category folder name (default hazelnut)")
    parser.add_argument(
        "--counts",
        action="append",
        metavar="SPLIT/CLASS=N[,...]",
        help="override counts of the MVTec hazelnut defaults, e.g. test/crack=5,train/good=20 (0 drops a class)",
    )
    parser.add_argument(
        "--shortcut-fraction",
        type=float,
        default=0.0,
        help="fraction (0..1) of each defect class's images that get a class-specific shortcut marker, with its "
        "mask in shortcut_mask/ (default 0: off; the known-answer experiment)",
    )
    parser.add_argument(
        "--shortcut-size", type=float, default=0.07, help="shortcut marker side, fraction of the image side"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress line")
    args = parser.parse_args(argv)
    try:
        counts = _parse_counts(args.counts)
        config = SyntheticConfig(
            size=args.size,
            seed=args.seed,
            category=args.category,
            counts=counts,
            shortcut_fraction=args.shortcut_fraction,
            shortcut_size=args.shortcut_size,
        )
        category_dir = args.out / config.category
        n_images = sum(config.counts.values())
        if _check_target(args.out, config):
            print(f"'{category_dir}' already holds this synthetic set ({n_images} images); nothing to do.")
            return 0
        start = time.perf_counter()
        generate_synthetic_mvtec(args.out, config, progress=not args.quiet)
    except (ConfigError, DatasetError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    n_masks = sum(config.counts.get(f"test/{defect}", 0) for defect in DEFECT_TYPES)
    n_marked = sum(len(indices) for indices in _shortcut_marked(config).values())
    shortcut = f" and {n_marked} shortcut markers (masks in {SHORTCUT_MASK_DIR}/)" if n_marked else ""
    print(
        f"wrote {n_images} images and {n_masks} masks{shortcut} ({config.size}x{config.size}, seed {config.seed}) "
        f"to '{category_dir}' in {time.perf_counter() - start:.1f}s; '{args.out / MARKER_FILE}' marks them synthetic."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
