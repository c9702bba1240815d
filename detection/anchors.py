"""Anchor boxes and strides shared by every model size.

Teacher and student use the same anchors and strides, so their head outputs align cell by cell
(a requirement of output-based and feature distillation). Values are YOLOv5's COCO anchors in
input pixels, one row of three (w, h) pairs per level P3, P4, P5.
"""
from __future__ import annotations

import numpy as np

STRIDES: tuple[int, int, int] = (8, 16, 32)
MAX_STRIDE = max(STRIDES)  # an input side must be a multiple of it (every level's grid is whole)
DEFAULT_ANCHORS: tuple[tuple[tuple[int, int], ...], ...] = (
    ((10, 13), (16, 30), (33, 23)),  # P3/8
    ((30, 61), (62, 45), (59, 119)),  # P4/16
    ((116, 90), (156, 198), (373, 326)),  # P5/32
)


def anchor_array(anchors=DEFAULT_ANCHORS) -> np.ndarray:
    """Anchors as a float32 array of shape (levels, anchors_per_level, 2) in pixels."""
    return np.asarray(anchors, dtype=np.float32)


def img_size_problem(img_size: object) -> str | None:
    """Why `img_size` cannot be a model input side (None when it can): the one stride rule."""
    if isinstance(img_size, bool) or not isinstance(img_size, int) or img_size < MAX_STRIDE or img_size % MAX_STRIDE:
        return f"must be a multiple of {MAX_STRIDE} that is >= {MAX_STRIDE} (the largest stride), got {img_size!r}"
    return None
