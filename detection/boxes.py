"""Box format conversions and pairwise IoU in numpy.

Kept free of torch so the board can post-process exported models with the same arithmetic the
training side uses. "xywh" here is YOLO's centre format (cx, cy, w, h), not COCO's top-left
(x, y, w, h); `detection.cocoeval` does the COCO conversion.
"""
from __future__ import annotations

import numpy as np


def _check_last_dim(b: np.ndarray, name: str) -> np.ndarray:
    b = np.asarray(b)
    if b.ndim < 1 or b.shape[-1] != 4:
        raise ValueError(f"{name} must have a last dimension of 4, got shape {b.shape}")
    return b


def xywh_to_xyxy(b: np.ndarray) -> np.ndarray:
    """(..., 4) centre boxes (cx, cy, w, h) -> corner boxes (x1, y1, x2, y2)."""
    b = _check_last_dim(b, "boxes")
    half = b[..., 2:4] / 2
    return np.concatenate((b[..., 0:2] - half, b[..., 0:2] + half), axis=-1)


def xyxy_to_xywh(b: np.ndarray) -> np.ndarray:
    """(..., 4) corner boxes (x1, y1, x2, y2) -> centre boxes (cx, cy, w, h)."""
    b = _check_last_dim(b, "boxes")
    return np.concatenate(((b[..., 0:2] + b[..., 2:4]) / 2, b[..., 2:4] - b[..., 0:2]), axis=-1)


def box_area(b: np.ndarray) -> np.ndarray:
    """Area of (..., 4) xyxy boxes; inverted boxes count as empty."""
    b = _check_last_dim(b, "boxes")
    return np.clip(b[..., 2] - b[..., 0], 0, None) * np.clip(b[..., 3] - b[..., 1], 0, None)


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every xyxy box in `a` (N, 4) with every box in `b` (M, 4) -> (N, M).

    Pairs whose union is empty (two degenerate boxes) get IoU 0 rather than NaN, so a
    degenerate box never suppresses anything in NMS.
    """
    a = _check_last_dim(a, "a")
    b = _check_last_dim(b, "b")
    if a.ndim != 2 or b.ndim != 2:
        raise ValueError(f"box_iou expects 2-d arrays (N, 4) and (M, 4), got {a.shape} and {b.shape}")
    top_left = np.maximum(a[:, None, :2], b[None, :, :2])
    bottom_right = np.minimum(a[:, None, 2:], b[None, :, 2:])
    wh = np.clip(bottom_right - top_left, 0, None)
    inter = wh[..., 0] * wh[..., 1]
    union = box_area(a)[:, None] + box_area(b)[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
