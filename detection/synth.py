"""The default data set: a generated COCO-format detection set of coloured shapes.

EdgeSweep ships no data and cannot download any, so the pipeline trains and evaluates on images
generated here. A class is a (shape, colour family) pair and classes share shapes and colours with
each other, so a detector has to use both cues; distractors in the same shapes and colours (but in
pairings that are no class), textured backgrounds, occlusion and noise keep it from being trivial,
which is what gives a large teacher headroom over a small student for distillation to close.

Determinism: every image draws from its own numpy generator seeded by (seed, split, index), so the
same arguments give byte-identical PNG and JSON files on a given machine (the PNG encoder is zlib, so
another zlib build may compress differently), and images can be generated in any order or in
parallel. Only elementwise arithmetic touches pixel arrays, no vectorised transcendental functions
whose last bit could vary with the CPU's SIMD support.
"""
from __future__ import annotations

import colorsys
import dataclasses
import json
import logging
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from detection._shapes import (
    CLASS_SHAPES,
    RasterMask,
    fit_polygon,
    rasterize,
    segment_polygon,
    unit_shape,
)

logger = logging.getLogger(__name__)

FORMAT_VERSION = 2
SPLIT_CODES: dict[str, int] = {"train": 0, "val": 1}  # part of every image's RNG seed
PNG_COMPRESS_LEVEL = 1  # fixed: the level changes the bytes, not the pixels; 1 is 2x faster than 6, files +12%
PLACEMENT_TRIES = 10

# Hue centres in degrees. Near-miss families sit between the class families on the hue circle.
CLASS_COLOUR_HUES: dict[str, float] = {"red": 0.0, "yellow": 55.0, "green": 125.0, "blue": 225.0}
NEAR_MISS_COLOUR_HUES: dict[str, float] = {"orange": 28.0, "cyan": 185.0, "purple": 285.0}


@dataclass(frozen=True)
class ClassSpec:
    """One category: a shape in a colour family, under a COCO-style (non-contiguous) id."""

    id: int
    shape: str
    colour: str

    @property
    def name(self) -> str:
        return f"{self.colour}_{self.shape}"


# Every shape appears in two classes and every colour in two or three, so neither cue alone names a
# class. Ids have gaps like COCO's, so the category-id <-> class-index mapping is exercised.
CATEGORIES: tuple[ClassSpec, ...] = (
    ClassSpec(1, "circle", "red"),
    ClassSpec(2, "circle", "blue"),
    ClassSpec(3, "triangle", "red"),
    ClassSpec(5, "triangle", "green"),
    ClassSpec(7, "square", "blue"),
    ClassSpec(8, "square", "yellow"),
    ClassSpec(11, "star", "green"),
    ClassSpec(13, "star", "yellow"),
    ClassSpec(14, "cross", "red"),
    ClassSpec(17, "cross", "blue"),
)
_CLASS_PAIRS = frozenset((c.shape, c.colour) for c in CATEGORIES)
# Class shape + class colour pairings that are no class: the hardest negatives.
WRONG_PAIRS: tuple[tuple[str, str], ...] = tuple(
    (shape, colour) for shape in CLASS_SHAPES for colour in CLASS_COLOUR_HUES
    if (shape, colour) not in _CLASS_PAIRS
)
# Distractor-only shapes and the stretch range that keeps each clearly apart from a class shape.
DISTRACTOR_STRETCH: dict[str, tuple[float, float]] = {
    "ellipse": (1.8, 2.6), "bar": (3.0, 5.0), "semicircle": (1.0, 1.0), "blob": (1.0, 1.0),
}


def coco_categories() -> list[dict]:
    """The `categories` block of the annotation files (supercategory = shape)."""
    return [{"id": c.id, "name": c.name, "supercategory": c.shape} for c in CATEGORIES]


@dataclass(frozen=True)
class SynthConfig:
    """Every difficulty knob of the generator; the defaults aim at "learnable, with headroom".

    Image and objects:
      size: square image side in pixels.
      supersample: shapes are drawn on a grid this many times finer and box-averaged down, so edges
        are anti-aliased and sub-pixel box positions are visible to the model.
      max_objects: a non-empty image holds 1..max_objects class objects (uniform), before occlusion
        drops some annotations; the default mix averages about 5 per image.
      empty_image_fraction: share of images with no class object at all (clutter only).
      min_object_px, max_object_fraction, size_bias: an object's longer box side is
        min * (max / min) ** (u ** size_bias) for u uniform in [0, 1], with min = min_object_px and
        max = max_object_fraction * size: size_bias 1 is log-uniform (small objects dominate),
        smaller values move the median up while keeping the smallest sizes.
      aspect_jitter: class shapes are stretched by a factor up to (1 + aspect_jitter) either way
        before rotation; distractor ellipses and bars start at 1.8x, so they stay distinguishable.
      hue_jitter_deg: colour jitter within a class colour family (saturation and brightness also
        vary); the near-miss families sit 25-30 degrees from the class families.
      object_shading: largest brightness ramp across an object (0.3 = +-30%).
    Occlusion:
      max_box_overlap: a later object is re-placed (up to PLACEMENT_TRIES times, else left out)
        while its box covers more than this share of an earlier object's box.
      min_visible_fraction: an object keeps its annotation only if at least this share of its pixels
        stays visible after everything drawn later. Boxes always enclose the whole object (the
        amodal box of what was drawn), never just its visible part.
    Clutter (never annotated):
      max_distractors: 0..max_distractors filled shapes per image, interleaved in depth with the
        objects so they occlude and get occluded.
      near_miss_fraction: share of distractors that are class shapes in a shape/colour pairing that
        is no class (e.g. a green circle) or in a near-miss colour (orange, cyan, purple, grey); the
        rest are ellipses, bars, semicircles and random blobs, half of them in class colours.
      min_distractor_px: smallest distractor box side (shares max_object_fraction).
      max_lines: 0..max_lines straight lines (0.75-2.5 px wide) anywhere in the depth order.
    Background and sensor:
      background_max_saturation: backgrounds are gradients between two colours at most this
        saturated, so objects stand out by colour but not trivially by saturation.
      stripe_probability: chance of a low-contrast stripe pattern (3-16 px period) on the background.
      max_texture_patches: 0..max_texture_patches regions of smooth or grainy value noise.
      illumination_variation: largest brightness ramp across the whole image (0.2 = +-20%).
      noise_sigma: largest per-image Gaussian pixel noise, std in 0-255 units.
    """

    size: int = 128
    supersample: int = 4
    max_objects: int = 8
    empty_image_fraction: float = 0.06
    min_object_px: float = 8.0
    max_object_fraction: float = 0.5
    size_bias: float = 0.6
    aspect_jitter: float = 0.2
    hue_jitter_deg: float = 6.0
    object_shading: float = 0.3
    max_box_overlap: float = 0.5
    min_visible_fraction: float = 0.5
    max_distractors: int = 3
    near_miss_fraction: float = 0.25
    min_distractor_px: float = 10.0
    max_lines: int = 3
    background_max_saturation: float = 0.35
    stripe_probability: float = 0.5
    max_texture_patches: int = 3
    illumination_variation: float = 0.2
    noise_sigma: float = 4.0

    def __post_init__(self) -> None:
        _require(isinstance(self.size, int) and self.size >= 32, "size", self.size,
                 "an integer >= 32")
        _require(isinstance(self.supersample, int) and 1 <= self.supersample <= 8, "supersample",
                 self.supersample, "an integer in 1..8")
        for name in ("max_objects", "max_distractors", "max_lines", "max_texture_patches"):
            value = getattr(self, name)
            _require(isinstance(value, int) and 0 <= value <= 1000, name, value, "an integer in 0..1000")
        for name in ("empty_image_fraction", "max_box_overlap", "min_visible_fraction",
                     "near_miss_fraction", "stripe_probability", "background_max_saturation",
                     "object_shading", "illumination_variation"):
            value = getattr(self, name)
            _require(0.0 <= value <= 1.0, name, value, "a number in [0, 1]")
        _require(0.0 < self.max_object_fraction <= 1.0, "max_object_fraction",
                 self.max_object_fraction, "a number in (0, 1]")
        _require(0.1 <= self.size_bias <= 4.0, "size_bias", self.size_bias, "a number in [0.1, 4]")
        largest = self.max_object_fraction * self.size
        _require(2.0 <= self.min_object_px <= largest, "min_object_px", self.min_object_px,
                 f"a number in [2, max_object_fraction * size = {largest:g}]")
        _require(2.0 <= self.min_distractor_px <= largest, "min_distractor_px",
                 self.min_distractor_px, f"a number in [2, max_object_fraction * size = {largest:g}]")
        _require(0.0 <= self.aspect_jitter <= 1.0, "aspect_jitter", self.aspect_jitter,
                 "a number in [0, 1]")
        _require(0.0 <= self.hue_jitter_deg <= 30.0, "hue_jitter_deg", self.hue_jitter_deg,
                 "a number in [0, 30]")
        _require(0.0 <= self.noise_sigma <= 64.0, "noise_sigma", self.noise_sigma,
                 "a number in [0, 64]")

    @property
    def max_object_px(self) -> float:
        return self.max_object_fraction * self.size


def _require(ok: bool, name: str, value: object, allowed: str) -> None:
    if not ok:
        raise ValueError(f"SynthConfig.{name} = {value!r} is out of range; allowed: {allowed}")


@dataclass(frozen=True)
class SynthObject:
    """One annotated object: COCO box [x, y, w, h] in pixels and the share of it left visible."""

    category_id: int
    bbox: tuple[float, float, float, float]
    visible_fraction: float


@dataclass(frozen=True, eq=False)
class SynthImage:
    """One generated image (uint8 RGB, size x size x 3) and its annotated objects."""

    pixels: np.ndarray
    objects: tuple[SynthObject, ...]


@dataclass(frozen=True)
class SynthSummary:
    """What `generate` wrote; num_objects counts annotations per split."""

    out_dir: Path
    train_images: int
    val_images: int
    num_objects: dict[str, int]
    categories: list[dict]


@dataclass(frozen=True, eq=False)
class _Item:
    """Something to draw; category_id None marks clutter."""

    polygon: np.ndarray  # (N, 2) output-pixel coordinates
    rgb: np.ndarray  # (3,) in [0, 1]
    shading: float
    shading_angle: float
    category_id: int | None = None


# --------------------------------------------------------------------------------------------
# Colours


def _hsv(hue_deg: float, saturation: float, value: float) -> np.ndarray:
    return np.array(colorsys.hsv_to_rgb((hue_deg % 360.0) / 360.0, saturation, value))


def _family_colour(rng: np.random.Generator, hue_deg: float, jitter_deg: float) -> np.ndarray:
    """A saturated colour within a family: hue jittered, saturation and brightness varied."""
    hue = hue_deg + rng.uniform(-jitter_deg, jitter_deg)
    return _hsv(hue, rng.uniform(0.6, 1.0), rng.uniform(0.55, 1.0))


def _class_colour(rng: np.random.Generator, family: str, config: SynthConfig) -> np.ndarray:
    return _family_colour(rng, CLASS_COLOUR_HUES[family], config.hue_jitter_deg)


def _near_miss_colour(rng: np.random.Generator, config: SynthConfig) -> np.ndarray:
    """A colour of no class family: a hue between class families, or a grey."""
    families = list(NEAR_MISS_COLOUR_HUES.values())
    choice = int(rng.integers(len(families) + 1))
    if choice == len(families):
        return _hsv(rng.uniform(0.0, 360.0), rng.uniform(0.0, 0.12), rng.uniform(0.1, 0.95))
    return _family_colour(rng, families[choice], config.hue_jitter_deg)


def _any_colour(rng: np.random.Generator, config: SynthConfig) -> np.ndarray:
    if rng.random() < 0.5:
        family = list(CLASS_COLOUR_HUES)[int(rng.integers(len(CLASS_COLOUR_HUES)))]
        return _class_colour(rng, family, config)
    return _near_miss_colour(rng, config)


def _muted_colour(rng: np.random.Generator, config: SynthConfig) -> np.ndarray:
    return _hsv(rng.uniform(0.0, 360.0), rng.uniform(0.0, config.background_max_saturation),
                rng.uniform(0.2, 0.9))


# --------------------------------------------------------------------------------------------
# Background


def _ramp(rng: np.random.Generator, rows: int, cols: int) -> np.ndarray:
    """A linear ramp in [-1, 1] across the image along a random direction."""
    angle = rng.uniform(0.0, 2.0 * np.pi)
    ys, xs = np.mgrid[0:rows, 0:cols].astype(np.float32)
    t = (xs - (cols - 1) / 2.0) * np.float32(math.cos(angle)) + \
        (ys - (rows - 1) / 2.0) * np.float32(math.sin(angle))
    peak = float(np.abs(t).max())
    return t / np.float32(peak) if peak > 0 else t


def _value_noise(rng: np.random.Generator, rows: int, cols: int, cells: int) -> np.ndarray:
    """Smooth random texture in [0, 1]: a random lattice, bilinearly interpolated."""
    lattice = rng.random((cells + 1, cells + 1)).astype(np.float32)
    ys = (np.arange(rows, dtype=np.float32) + 0.5) * (cells / rows)
    xs = (np.arange(cols, dtype=np.float32) + 0.5) * (cells / cols)
    y0 = np.minimum(ys.astype(np.int64), cells - 1)
    x0 = np.minimum(xs.astype(np.int64), cells - 1)
    fy = (ys - y0)[:, None]
    fx = (xs - x0)[None, :]
    top = lattice[y0][:, x0] * (1 - fx) + lattice[y0][:, x0 + 1] * fx
    bottom = lattice[y0 + 1][:, x0] * (1 - fx) + lattice[y0 + 1][:, x0 + 1] * fx
    return top * (1 - fy) + bottom * fy


def _stripes(rng: np.random.Generator, size: int) -> np.ndarray:
    """A triangle-wave stripe pattern in [-0.5, 0.5] (arithmetic only, for bit-stable output)."""
    period = rng.uniform(3.0, 16.0)
    angle = rng.uniform(0.0, np.pi)
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32)
    t = (xs * np.float32(math.cos(angle)) + ys * np.float32(math.sin(angle))) / np.float32(period)
    t = t + np.float32(rng.random())
    return np.abs(t - np.floor(t) - np.float32(0.5)) * 2 - np.float32(0.5)


def _background(rng: np.random.Generator, config: SynthConfig) -> np.ndarray:
    """Float32 (size, size, 3) in about [0, 1]: gradient, maybe stripes, maybe noise patches."""
    size = config.size
    start, end = _muted_colour(rng, config), _muted_colour(rng, config)
    along = (_ramp(rng, size, size) + 1) / 2
    image = start.astype(np.float32) + (end - start).astype(np.float32) * along[..., None]
    if rng.random() < config.stripe_probability:
        contrast = np.float32(rng.uniform(0.05, 0.2))
        tint = rng.uniform(0.5, 1.0, 3).astype(np.float32)
        image += (_stripes(rng, size) * contrast)[..., None] * tint
    for _ in range(int(rng.integers(0, config.max_texture_patches + 1))):
        height = int(rng.integers(size // 6, size // 2 + 1))
        width = int(rng.integers(size // 6, size // 2 + 1))
        top = int(rng.integers(0, size - height + 1))
        left = int(rng.integers(0, size - width + 1))
        cells = int(rng.integers(2, max(3, min(height, width) // 2)))
        weight = _value_noise(rng, height, width, cells) * np.float32(rng.uniform(0.3, 0.8))
        colour = _muted_colour(rng, config).astype(np.float32)
        patch = image[top:top + height, left:left + width]
        patch += (colour - patch) * weight[..., None]
    return image


# --------------------------------------------------------------------------------------------
# Scene


def _log_uniform(rng: np.random.Generator, low: float, high: float, bias: float = 1.0) -> float:
    return float(low * (high / low) ** (rng.uniform(0.0, 1.0) ** bias))


def _placed(rng: np.random.Generator, shape: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Move a box-centred polygon to a random spot where it fits inside the image; return it and its
    box (x0, y0, x1, y1)."""
    half = (shape.max(axis=0) - shape.min(axis=0)) / 2
    centre = np.array([rng.uniform(half[0], size - half[0]), rng.uniform(half[1], size - half[1])])
    polygon = shape + centre
    return polygon, np.concatenate([polygon.min(axis=0), polygon.max(axis=0)])


def _covers_too_much(box: np.ndarray, earlier: list[np.ndarray], limit: float) -> bool:
    for other in earlier:
        overlap = np.clip(np.minimum(box[2:], other[2:]) - np.maximum(box[:2], other[:2]), 0, None)
        if overlap[0] * overlap[1] > limit * (other[2] - other[0]) * (other[3] - other[1]):
            return True
    return False


def _shaded(rng: np.random.Generator, config: SynthConfig) -> tuple[float, float]:
    return rng.uniform(0.0, config.object_shading), rng.uniform(0.0, 2.0 * np.pi)


def _object_item(rng: np.random.Generator, config: SynthConfig,
                 earlier_boxes: list[np.ndarray]) -> _Item | None:
    spec = CATEGORIES[int(rng.integers(len(CATEGORIES)))]
    rgb = _class_colour(rng, spec.colour, config)
    stretch_limit = math.log1p(config.aspect_jitter)
    shape = fit_polygon(unit_shape(spec.shape, rng),
                        box_side=_log_uniform(rng, config.min_object_px, config.max_object_px, config.size_bias),
                        stretch=math.exp(rng.uniform(-stretch_limit, stretch_limit)),
                        angle=rng.uniform(0.0, 2.0 * np.pi))
    shading, shading_angle = _shaded(rng, config)
    for _ in range(PLACEMENT_TRIES):
        polygon, box = _placed(rng, shape, config.size)
        if not _covers_too_much(box, earlier_boxes, config.max_box_overlap):
            earlier_boxes.append(box)
            return _Item(polygon, rgb, shading, shading_angle, category_id=spec.id)
    return None


def _distractor_item(rng: np.random.Generator, config: SynthConfig) -> _Item:
    if rng.random() < config.near_miss_fraction:
        if rng.random() < 0.5:
            shape_name, family = WRONG_PAIRS[int(rng.integers(len(WRONG_PAIRS)))]
            rgb = _class_colour(rng, family, config)
        else:
            shape_name = CLASS_SHAPES[int(rng.integers(len(CLASS_SHAPES)))]
            rgb = _near_miss_colour(rng, config)
        limit = math.log1p(config.aspect_jitter)
        stretch = math.exp(rng.uniform(-limit, limit))
    else:
        shape_name = list(DISTRACTOR_STRETCH)[int(rng.integers(len(DISTRACTOR_STRETCH)))]
        rgb = _any_colour(rng, config)
        stretch = rng.uniform(*DISTRACTOR_STRETCH[shape_name])
    shape = fit_polygon(unit_shape(shape_name, rng),
                        box_side=_log_uniform(rng, config.min_distractor_px, config.max_object_px),
                        stretch=stretch, angle=rng.uniform(0.0, 2.0 * np.pi))
    shading, shading_angle = _shaded(rng, config)
    polygon, _ = _placed(rng, shape, config.size)
    return _Item(polygon, rgb, shading, shading_angle)


def _line_item(rng: np.random.Generator, config: SynthConfig) -> _Item:
    start = rng.uniform(0.0, config.size, 2)
    direction = rng.uniform(0.0, 2.0 * np.pi)
    length = rng.uniform(0.2, 0.8) * config.size
    end = np.clip(start + length * np.array([math.cos(direction), math.sin(direction)]),
                  0.0, float(config.size))
    if np.allclose(start, end):
        end = start + 1.0
    polygon = segment_polygon(start, end, rng.uniform(0.75, 2.5))
    return _Item(polygon, _any_colour(rng, config), 0.0, 0.0)


def _scene_items(rng: np.random.Generator, config: SynthConfig) -> list[_Item]:
    """Objects, distractors and lines in back-to-front order."""
    if rng.random() < config.empty_image_fraction or config.max_objects == 0:
        object_count = 0
    else:
        object_count = int(rng.integers(1, config.max_objects + 1))
    kinds = (["object"] * object_count
             + ["distractor"] * int(rng.integers(0, config.max_distractors + 1))
             + ["line"] * int(rng.integers(0, config.max_lines + 1)))
    items: list[_Item] = []
    object_boxes: list[np.ndarray] = []
    for kind_index in rng.permutation(len(kinds)):
        kind = kinds[int(kind_index)]
        if kind == "object":
            item = _object_item(rng, config, object_boxes)
        elif kind == "distractor":
            item = _distractor_item(rng, config)
        else:
            item = _line_item(rng, config)
        if item is not None:
            items.append(item)
    return items


def _paint(item: _Item, raster: RasterMask, colour: np.ndarray) -> None:
    """Write the item's colour, with its brightness ramp, into the supersampled colour layer."""
    rows, cols = raster.mask.shape
    region = colour[raster.top:raster.top + rows, raster.left:raster.left + cols]
    rgb = item.rgb.astype(np.float32)
    if item.shading > 0:
        ys, xs = np.nonzero(raster.mask)
        t = (xs - (cols - 1) / 2) * math.cos(item.shading_angle) + \
            (ys - (rows - 1) / 2) * math.sin(item.shading_angle)
        gain = (1 + item.shading * t / (max(rows, cols) / 2)).astype(np.float32)
        region[ys, xs] = np.clip(gain[:, None] * rgb, 0.0, 1.0)
    else:
        region[raster.mask] = rgb


def _block_mean(fine: np.ndarray, scale: int) -> np.ndarray:
    """Average scale x scale blocks of an (H*scale, W*scale, C) array: the anti-aliasing step.

    Summing strided slices is several times faster than a mean over a 5-d reshape."""
    rows, cols, channels = fine.shape
    by_row = fine.reshape(rows // scale, scale, cols * channels)
    summed = by_row[:, 0].copy()
    for offset in range(1, scale):
        summed += by_row[:, offset]
    by_col = summed.reshape(rows // scale, cols // scale, scale, channels)
    total = by_col[:, :, 0].copy()
    for offset in range(1, scale):
        total += by_col[:, :, offset]
    return total / np.float32(scale * scale)


def render_image(*, seed: int, split: str, index: int,
                 config: SynthConfig = SynthConfig()) -> SynthImage:
    """Generate image `index` of `split`; depends on nothing but its arguments.

    Items are drawn back to front on a supersampled grid that records which item owns each pixel,
    so an object's visibility is the share of its own pixels it still owns at the end.
    """
    if split not in SPLIT_CODES:
        raise ValueError(f"unknown split {split!r}; allowed: {', '.join(SPLIT_CODES)}")
    if seed < 0 or index < 0:
        raise ValueError(f"seed and index must be >= 0, got seed={seed}, index={index}")
    rng = np.random.default_rng([seed, SPLIT_CODES[split], index])
    size, scale = config.size, config.supersample
    fine = size * scale
    background = _background(rng, config)
    owner = np.zeros((fine, fine), dtype=np.int32)  # 0 = background, else item number
    colour = np.zeros((fine, fine, 3), dtype=np.float32)
    drawn: list[tuple[int, _Item, RasterMask]] = []
    for number, item in enumerate(_scene_items(rng, config), start=1):
        raster = rasterize(item.polygon, scale=scale, grid_shape=(fine, fine))
        if raster is None:
            continue
        rows, cols = raster.mask.shape
        owner[raster.top:raster.top + rows, raster.left:raster.left + cols][raster.mask] = number
        _paint(item, raster, colour)
        drawn.append((number, item, raster))

    objects = []
    for number, item, raster in drawn:
        if item.category_id is None:
            continue
        rows, cols = raster.mask.shape
        owned = owner[raster.top:raster.top + rows, raster.left:raster.left + cols][raster.mask]
        visible = round(float(np.count_nonzero(owned == number)) / raster.pixel_count, 4)
        if visible < config.min_visible_fraction:
            continue
        left, top, right, bottom = raster.bounds()
        objects.append(SynthObject(
            category_id=item.category_id,
            bbox=(left / scale, top / scale, (right - left) / scale, (bottom - top) / scale),
            visible_fraction=visible))

    coverage = _block_mean((owner > 0).astype(np.float32)[..., None], scale)
    foreground = _block_mean(colour, scale)
    image = background * (1 - coverage) + foreground
    image *= 1 + np.float32(rng.uniform(0.0, config.illumination_variation)) * \
        _ramp(rng, size, size)[..., None]
    sigma = rng.uniform(0.0, config.noise_sigma) / 255.0
    image += rng.normal(0.0, sigma, image.shape).astype(np.float32)
    pixels = np.clip(np.floor(image * 255 + 0.5), 0, 255).astype(np.uint8)
    return SynthImage(pixels=pixels, objects=tuple(objects))


# --------------------------------------------------------------------------------------------
# Files


def _write_json(path: Path, data: dict) -> None:
    """Sorted keys, fixed separators, written to a temporary name first, so files are stable and a
    half-written file never sits at `path`."""
    text = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=True) + "\n"
    partial = path.with_name(path.name + ".partial")
    partial.write_text(text, encoding="utf-8")
    os.replace(partial, path)


def _warn_about_stale_images(split_dir: Path, expected: set[str]) -> None:
    stale = sorted(p.name for p in split_dir.glob("*.png") if p.name not in expected)
    if stale:
        logger.warning("%s holds %d PNG files this run did not write (e.g. %s); the annotation file "
                       "lists only the new ones", split_dir, len(stale), stale[0])


def image_file_name(image_id: int) -> str:
    return f"{image_id:06d}.png"


def generate(out_dir: Path, *, train: int = 2000, val: int = 300, seed: int = 0,
             config: SynthConfig = SynthConfig(),
             progress: Callable[[int, int], None] | None = None) -> SynthSummary:
    """Write the data set: out_dir/{train,val}/NNNNNN.png and out_dir/instances_{train,val}.json.

    Files are overwritten in place; each annotation file is written after its images, so its presence
    means the split is complete. `progress(done, total)` is called after every image.
    """
    for name, value in (("train", train), ("val", val), ("seed", seed)):
        if not isinstance(value, int) or value < 0:
            raise ValueError(f"generate: {name} must be an integer >= 0, got {value!r}")
    out_dir = Path(out_dir)
    total, done = train + val, 0
    num_objects: dict[str, int] = {}
    for split, count in (("train", train), ("val", val)):
        split_dir = out_dir / split
        split_dir.mkdir(parents=True, exist_ok=True)
        images, annotations = [], []
        for index in range(count):
            image_id = index + 1
            rendered = render_image(seed=seed, split=split, index=index, config=config)
            file_name = image_file_name(image_id)
            Image.fromarray(rendered.pixels, "RGB").save(
                split_dir / file_name, format="PNG", compress_level=PNG_COMPRESS_LEVEL)
            images.append({"id": image_id, "file_name": file_name,
                           "width": config.size, "height": config.size})
            for obj in rendered.objects:
                width, height = obj.bbox[2], obj.bbox[3]
                annotations.append({
                    "id": len(annotations) + 1, "image_id": image_id,
                    "category_id": obj.category_id, "bbox": list(obj.bbox),
                    # box area, as pycocotools computes it for detections, so area ranges agree
                    "area": width * height, "iscrowd": 0})
            done += 1
            if progress is not None:
                progress(done, total)
        _warn_about_stale_images(split_dir, {image_file_name(i + 1) for i in range(count)})
        _write_json(out_dir / f"instances_{split}.json", {
            "info": {"description": "EdgeSweep synthetic shapes: generated images, not photographs",
                     "synthetic": True, "generator": __name__, "format_version": FORMAT_VERSION,
                     "seed": seed, "split": split, "config": dataclasses.asdict(config)},
            "licenses": [],
            "images": images,
            "annotations": annotations,
            "categories": coco_categories(),
        })
        num_objects[split] = len(annotations)
    logger.info("wrote %d train and %d val images (%s objects) to %s",
                train, val, num_objects, out_dir)
    return SynthSummary(out_dir=out_dir, train_images=train, val_images=val,
                        num_objects=num_objects, categories=coco_categories())
