"""Polygon geometry and rasterisation for the synthetic data set (`detection.synth`).

Every drawn item (class objects, distractors, even lines) is a polygon filled by one rasteriser, and
an object's box is read back from the pixels actually filled. That is what makes the boxes exact for
what is drawn, rotations and stretches included, whatever rounding the rasteriser does.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

CIRCLE_VERTICES = 64  # at 4x supersampling a 64-gon differs from a circle by < 0.2 hi-res px
STAR_INNER_RADIUS = 0.45
CROSS_HALF_WIDTH = 0.32

# Class shapes look roughly square when unstretched; distractor-only shapes are listed separately
# so the generator can tell them apart (see `synth.CATEGORIES`).
CLASS_SHAPES: tuple[str, ...] = ("circle", "triangle", "square", "star", "cross")
DISTRACTOR_SHAPES: tuple[str, ...] = ("ellipse", "bar", "semicircle", "blob")


def _regular(count: int, radius: float = 1.0, start_deg: float = -90.0) -> np.ndarray:
    angles = np.deg2rad(start_deg) + 2.0 * np.pi * np.arange(count) / count
    return radius * np.stack([np.cos(angles), np.sin(angles)], axis=1)


def _star() -> np.ndarray:
    outer = _regular(5)
    inner = _regular(5, STAR_INNER_RADIUS, start_deg=-90.0 + 36.0)
    return np.stack([outer, inner], axis=1).reshape(-1, 2)


def _cross() -> np.ndarray:
    t = CROSS_HALF_WIDTH
    return np.array([(-t, -1), (t, -1), (t, -t), (1, -t), (1, t), (t, t),
                     (t, 1), (-t, 1), (-t, t), (-1, t), (-1, -t), (-t, -t)], dtype=np.float64)


def _semicircle() -> np.ndarray:
    angles = np.linspace(0.0, np.pi, CIRCLE_VERTICES // 2 + 1)
    return np.stack([np.cos(angles), np.sin(angles)], axis=1)


def _blob(rng: np.random.Generator) -> np.ndarray:
    """A random star-convex polygon: clutter that is no class shape but can wear a class colour."""
    count = int(rng.integers(7, 12))
    angles = np.sort(rng.uniform(0.0, 2.0 * np.pi, count))
    radii = rng.uniform(0.45, 1.0, count)
    return np.stack([radii * np.cos(angles), radii * np.sin(angles)], axis=1)


_FIXED_SHAPES = {
    "circle": lambda: _regular(CIRCLE_VERTICES),
    "triangle": lambda: _regular(3),
    "square": lambda: _regular(4, start_deg=-45.0),
    "star": _star,
    "cross": _cross,
    "ellipse": lambda: _regular(CIRCLE_VERTICES),  # stretched by the caller
    "bar": lambda: _regular(4, start_deg=-45.0),  # stretched by the caller
    "semicircle": _semicircle,
}


def unit_shape(name: str, rng: np.random.Generator) -> np.ndarray:
    """Vertices (N, 2) of a shape of about unit radius centred near the origin, y pointing down."""
    if name == "blob":
        return _blob(rng)
    if name not in _FIXED_SHAPES:
        known = ", ".join([*_FIXED_SHAPES, "blob"])
        raise ValueError(f"unknown shape {name!r}; known shapes: {known}")
    return _FIXED_SHAPES[name]()


def fit_polygon(unit: np.ndarray, *, box_side: float, stretch: float, angle: float) -> np.ndarray:
    """Stretch along x, rotate by `angle` radians, then scale so the longer box side is `box_side`.

    Sizing by the box (not the radius) makes the configured object sizes the sizes a detector sees.
    The result is centred on its own box centre, so callers place it by adding the box centre.
    """
    points = unit * np.array([stretch, 1.0])
    cos_a, sin_a = math.cos(angle), math.sin(angle)
    points = points @ np.array([[cos_a, sin_a], [-sin_a, cos_a]])
    low, high = points.min(axis=0), points.max(axis=0)
    scale = box_side / float((high - low).max())
    return (points - (low + high) / 2.0) * scale


def segment_polygon(start: np.ndarray, end: np.ndarray, width: float) -> np.ndarray:
    """A line of `width` pixels from `start` to `end`, as a 4-vertex polygon."""
    direction = end - start
    length = float(np.hypot(*direction))
    if length == 0.0:
        raise ValueError("segment_polygon needs two distinct end points")
    normal = np.array([-direction[1], direction[0]]) / length * (width / 2.0)
    return np.stack([start + normal, end + normal, end - normal, start - normal])


@dataclass(frozen=True)
class RasterMask:
    """Pixels one polygon fills on the supersampled grid, kept as a crop to stay cheap."""

    top: int
    left: int
    mask: np.ndarray  # bool (rows, cols)

    @property
    def pixel_count(self) -> int:
        return int(self.mask.sum())

    def bounds(self) -> tuple[int, int, int, int]:
        """(left, top, right, bottom) of the filled pixels, right/bottom exclusive."""
        rows = np.flatnonzero(self.mask.any(axis=1))
        cols = np.flatnonzero(self.mask.any(axis=0))
        return (self.left + int(cols[0]), self.top + int(rows[0]),
                self.left + int(cols[-1]) + 1, self.top + int(rows[-1]) + 1)


def rasterize(polygon: np.ndarray, *, scale: int, grid_shape: tuple[int, int]) -> RasterMask | None:
    """Fill `polygon` (output-pixel coordinates) on a grid `scale` times finer than the output.

    Only the crop around the polygon is drawn, clipped to the grid; None when nothing is filled.
    """
    points = np.asarray(polygon, dtype=np.float64) * scale
    rows, cols = grid_shape
    left = max(int(math.floor(points[:, 0].min())) - 1, 0)
    top = max(int(math.floor(points[:, 1].min())) - 1, 0)
    right = min(int(math.ceil(points[:, 0].max())) + 2, cols)
    bottom = min(int(math.ceil(points[:, 1].max())) + 2, rows)
    if right <= left or bottom <= top:
        return None
    canvas = Image.new("L", (right - left, bottom - top), 0)
    ImageDraw.Draw(canvas).polygon([(x - left, y - top) for x, y in points.tolist()], fill=255)
    mask = np.asarray(canvas) > 0
    if not mask.any():
        return None
    return RasterMask(top=top, left=left, mask=mask)
