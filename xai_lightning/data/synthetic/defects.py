"""The four hazelnut defects (crack, cut, hole, print) painted on a rendered nut, with masks of exactly their pixels.

:func:`render_sample` is the generator's one sample: a nut from :mod:`.nut`, then its defect from the same RNG.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from xai_lightning.data.classes import DEFECT_TYPES
from xai_lightning.data.synthetic.nut import Nut, render_nut

_MAX_DEFECT_TRIES = 100
_INK_COLOURS = np.array([(80, 6, 18), (25, 32, 125), (38, 14, 46), (16, 16, 20)], dtype=np.float32)
_KERNEL_CREAM = np.array([232, 212, 168], dtype=np.float32)


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


def blank_canvas(size: int) -> tuple[Image.Image, ImageDraw.ImageDraw]:
    """A black (size, size) greyscale image to draw a region on, and its drawing context."""
    canvas = Image.new("L", (size, size), 0)
    return canvas, ImageDraw.Draw(canvas)


@dataclass
class _Pixels:
    """The pixels a defect covers, clipped to the nut: where they are and their clean colours."""

    region: np.ndarray  # (H, W) bool
    x: np.ndarray  # (N,) pixel-centre coordinates, in np.nonzero order
    y: np.ndarray
    clean: np.ndarray  # (N, 3) float32


def _pixels(region: np.ndarray, nut: Nut, clean: np.ndarray) -> _Pixels:
    # Defects are only painted well inside the outline, never on the background or the anti-aliased rim.
    region = region & nut.inside
    ys, xs = np.nonzero(region)
    return _Pixels(region, xs + np.float32(0.5), ys + np.float32(0.5), clean[ys, xs].astype(np.float32))


def _draw_crack(rng: np.random.Generator, nut: Nut, clean: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Thin dark branching lines: a random walk with 1-3 side branches."""
    size = nut.size
    width = max(1, round(size * rng.uniform(0.005, 0.012)))
    heading = rng.uniform(0, 2 * np.pi)
    start = nut.sample_point(rng, 0.55)
    trunk = _random_walk(rng, start, heading, int(rng.integers(6, 13)), size * rng.uniform(0.02, 0.035), 0.35)
    canvas, draw = blank_canvas(size)
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


def _draw_cut(rng: np.random.Generator, nut: Nut, clean: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
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

    canvas, draw = blank_canvas(size)
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


def _draw_hole(rng: np.random.Generator, nut: Nut, clean: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
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


def _draw_print(rng: np.random.Generator, nut: Nut, clean: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
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

    canvas, draw = blank_canvas(size)
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


_DefectDrawer = Callable[[np.random.Generator, Nut, np.ndarray], tuple[np.ndarray, np.ndarray]]
_DEFECT_DRAWERS: dict[str, _DefectDrawer] = {
    "crack": _draw_crack,
    "cut": _draw_cut,
    "hole": _draw_hole,
    "print": _draw_print,
}


def _add_defect(rng: np.random.Generator, nut: Nut, clean: np.ndarray, defect: str) -> tuple[np.ndarray, np.ndarray]:
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
    image, nut = render_nut(rng, size)
    if defect is None:
        return image, np.zeros((size, size), dtype=bool)
    return _add_defect(rng, nut, image, defect)
