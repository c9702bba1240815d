"""YOLOv5's training augmentations in numpy + PIL (no cv2), driven by an explicit RNG.

Every function takes a `np.random.Generator` instead of touching a global RNG, so the data
pipeline can derive one generator per (seed, epoch, item) and stay bit-identical across resumes
and worker counts. Images are (H, W, 3) uint8 RGB; boxes are (N, 4) float xyxy in pixels of the
image they come with; classes are (N,) int64 and travel with their boxes.

Pixel convention: a pixel with index (col, row) covers [col, col + 1) x [row, row + 1), so a box
edge at x is the left edge of pixel x. PIL's affine transform samples at pixel centres in the
same continuous coordinates, which is why boxes mapped by the same matrix stay on their pixels.
"""
from __future__ import annotations

import functools
import typing
from dataclasses import dataclass, fields
from typing import Annotated, Sequence

import numpy as np
from PIL import Image
from pydantic import Field, TypeAdapter, ValidationError

from detection.letterbox import PAD_VALUE


def _bounded(low: float, high: float, doc: str) -> object:
    return Field(ge=low, le=high, allow_inf_nan=False, description=doc)


@dataclass(frozen=True)
class AugmentConfig:
    """Augmentation knobs; defaults are YOLOv5's hyp.scratch-low, except mosaic (off by default).
    Gains of 1 may zero a channel; translate and scale stop at YOLOv5's hyper-parameter evolution limits."""

    __pydantic_config__ = {"extra": "forbid"}  # the sweep file's `training.augment`
    hsv_h: Annotated[float, _bounded(0.0, 1.0, "hue gain (fraction)")] = 0.015
    hsv_s: Annotated[float, _bounded(0.0, 1.0, "saturation gain (fraction)")] = 0.7
    hsv_v: Annotated[float, _bounded(0.0, 1.0, "value gain (fraction)")] = 0.4
    translate: Annotated[float, _bounded(0.0, 0.9, "+/- fraction of the output size")] = 0.1
    scale: Annotated[float, _bounded(0.0, 0.9, "+/- scale gain")] = 0.5
    fliplr: Annotated[float, _bounded(0.0, 1.0, "probability of a horizontal flip")] = 0.5
    mosaic: Annotated[float, _bounded(0.0, 1.0, "probability of a 4-image mosaic (YOLOv5 uses 1.0)")] = 0.0

    def __post_init__(self) -> None:
        """Code that builds one by hand meets the same bounds as the sweep file (pydantic reads them there)."""
        for name, adapter in _field_checks().items():
            try:
                adapter.validate_python(getattr(self, name), strict=True)
            except ValidationError as e:
                raise ValueError(f"augment.{name}: {e.errors()[0]['msg']}, got {getattr(self, name)!r}") from None

    @classmethod
    def none(cls) -> "AugmentConfig":
        """Every augmentation off: the pipeline then reduces to a plain letterbox."""
        return cls(hsv_h=0.0, hsv_s=0.0, hsv_v=0.0, translate=0.0, scale=0.0, fliplr=0.0, mosaic=0.0)

    @property
    def enabled(self) -> bool:
        return any(getattr(self, f.name) != 0 for f in fields(self))


@functools.cache
def _field_checks() -> dict[str, TypeAdapter]:
    hints = typing.get_type_hints(AugmentConfig, include_extras=True)
    return {f.name: TypeAdapter(hints[f.name]) for f in fields(AugmentConfig)}


def hflip(image: np.ndarray, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mirror the image left-right; box x edges map exactly to width - x."""
    width = image.shape[1]
    flipped = np.ascontiguousarray(image[:, ::-1])
    boxes = np.asarray(boxes, dtype=np.float32)
    mirrored = boxes.copy()
    mirrored[:, 0] = width - boxes[:, 2]
    mirrored[:, 2] = width - boxes[:, 0]
    return flipped, mirrored


def hsv_jitter(image: np.ndarray, rng: np.random.Generator, *, hue: float, saturation: float,
               value: float) -> np.ndarray:
    """YOLOv5's augment_hsv: multiply H, S and V by random gains in [1 - g, 1 + g] via lookup tables.

    PIL does the colour-space conversion (8-bit HSV with hue in 0..255 instead of OpenCV's
    0..179, so the hue wraps at 256) and applies the three per-channel lookup tables, which are
    built with vectorised numpy.
    """
    if hue == saturation == value == 0:
        return image
    gains = rng.uniform(-1, 1, 3) * np.array([hue, saturation, value]) + 1
    x = np.arange(256, dtype=np.float64)
    lut_hue = (x * gains[0]) % 256
    lut_sat = np.clip(x * gains[1], 0, 255)
    lut_val = np.clip(x * gains[2], 0, 255)
    tables = np.concatenate((lut_hue, lut_sat, lut_val)).astype(np.uint8)
    hsv = Image.fromarray(image).convert("HSV")
    return np.array(hsv.point(tables.tolist()).convert("RGB"))


def box_candidates(before: np.ndarray, after: np.ndarray, *, wh_thr: float = 2.0, ar_thr: float = 100.0,
                   area_thr: float = 0.1, eps: float = 1e-16) -> np.ndarray:
    """YOLOv5's box_candidates: keep boxes that stay > wh_thr px wide and tall, keep > area_thr of their
    (scaled) area, and have an aspect ratio < ar_thr. Both inputs are (N, 4) xyxy; returns (N,) bool.
    """
    w1, h1 = before[:, 2] - before[:, 0], before[:, 3] - before[:, 1]
    w2, h2 = after[:, 2] - after[:, 0], after[:, 3] - after[:, 1]
    aspect = np.maximum(w2 / (h2 + eps), h2 / (w2 + eps))
    return (w2 > wh_thr) & (h2 > wh_thr) & (w2 * h2 / (w1 * h1 + eps) > area_thr) & (aspect < ar_thr)


def random_affine(image: np.ndarray, boxes: np.ndarray, classes: np.ndarray, rng: np.random.Generator, *,
                  scale: float, translate: float, output_hw: tuple[int, int] | None = None,
                  pad_value: int = PAD_VALUE) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """YOLOv5's random_perspective restricted to scale and translation (its defaults leave rotation,
    shear and perspective at 0).

    The image centre is scaled by s ~ U(1 - scale, 1 + scale) and moved to U(0.5 +/- translate) of the
    output size (`output_hw`, default the input size; mosaic uses a smaller output than its canvas).
    Boxes are transformed by the same matrix, clipped to the output and filtered by `box_candidates`.
    """
    in_h, in_w = image.shape[:2]
    out_h, out_w = output_hw if output_hw is not None else (in_h, in_w)
    s = rng.uniform(1 - scale, 1 + scale)
    tx = rng.uniform(0.5 - translate, 0.5 + translate) * out_w
    ty = rng.uniform(0.5 - translate, 0.5 + translate) * out_h
    matrix = np.array([[s, 0.0, tx - s * in_w / 2], [0.0, s, ty - s * in_h / 2], [0.0, 0.0, 1.0]])
    if (out_h, out_w) != (in_h, in_w) or not np.array_equal(matrix, np.eye(3)):
        inverse = np.linalg.inv(matrix)  # PIL maps output pixels back to input pixels
        image = np.array(Image.fromarray(image).transform(
            (out_w, out_h), Image.Transform.AFFINE, data=tuple(inverse[:2].ravel()),
            resample=Image.Resampling.BILINEAR, fillcolor=(pad_value,) * 3))
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    if len(boxes) == 0:
        return image, boxes.astype(np.float32), np.asarray(classes, dtype=np.int64).reshape(0)
    corners = boxes[:, [0, 1, 2, 1, 0, 3, 2, 3]].reshape(-1, 2)  # the four corners of every box
    corners = (np.c_[corners, np.ones(len(corners))] @ matrix.T)[:, :2].reshape(-1, 4, 2)
    moved = np.concatenate((corners.min(axis=1), corners.max(axis=1)), axis=1)
    np.clip(moved[:, 0::2], 0, out_w, out=moved[:, 0::2])
    np.clip(moved[:, 1::2], 0, out_h, out=moved[:, 1::2])
    keep = box_candidates(boxes * s, moved)
    return image, moved[keep].astype(np.float32), np.asarray(classes, dtype=np.int64)[keep]


def mosaic4(tiles: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]], size: int, rng: np.random.Generator, *,
            pad_value: int = PAD_VALUE) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """YOLOv5's load_mosaic layout: four (image, boxes, classes) tiles around a random centre of a
    (2 size, 2 size) canvas. Tiles should already have their long side resized to `size`.

    Returns the canvas with boxes clipped to it; follow with `random_affine(..., output_hw=(size, size))`
    as YOLOv5 does to cut the (size, size) training image out of it.
    """
    if len(tiles) != 4:
        raise ValueError(f"mosaic4 needs exactly 4 tiles, got {len(tiles)}")
    canvas_size = 2 * size
    xc = int(rng.uniform(size / 2, 3 * size / 2))
    yc = int(rng.uniform(size / 2, 3 * size / 2))
    canvas = np.full((canvas_size, canvas_size, 3), pad_value, dtype=np.uint8)
    all_boxes, all_classes = [], []
    for k, (tile, boxes, classes) in enumerate(tiles):
        h, w = tile.shape[:2]
        if k == 0:  # top left
            x1a, y1a, x2a, y2a = max(xc - w, 0), max(yc - h, 0), xc, yc
            x1b, y1b, x2b, y2b = w - (x2a - x1a), h - (y2a - y1a), w, h
        elif k == 1:  # top right
            x1a, y1a, x2a, y2a = xc, max(yc - h, 0), min(xc + w, canvas_size), yc
            x1b, y1b, x2b, y2b = 0, h - (y2a - y1a), min(w, x2a - x1a), h
        elif k == 2:  # bottom left
            x1a, y1a, x2a, y2a = max(xc - w, 0), yc, xc, min(canvas_size, yc + h)
            x1b, y1b, x2b, y2b = w - (x2a - x1a), 0, w, min(y2a - y1a, h)
        else:  # bottom right
            x1a, y1a, x2a, y2a = xc, yc, min(xc + w, canvas_size), min(canvas_size, yc + h)
            x1b, y1b, x2b, y2b = 0, 0, min(w, x2a - x1a), min(y2a - y1a, h)
        canvas[y1a:y2a, x1a:x2a] = tile[y1b:y2b, x1b:x2b]
        # A tile is only ever cropped where it meets the canvas edge, so clipping to the canvas
        # also clips boxes to the visible part of their tile.
        offset = np.array([x1a - x1b, y1a - y1b] * 2, dtype=np.float64)
        all_boxes.append(np.asarray(boxes, dtype=np.float64).reshape(-1, 4) + offset)
        all_classes.append(np.asarray(classes, dtype=np.int64).reshape(-1))
    boxes = np.clip(np.concatenate(all_boxes), 0, canvas_size)
    return canvas, boxes.astype(np.float32), np.concatenate(all_classes)
