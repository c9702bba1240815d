"""YOLOv5 decode and NMS in numpy, for the board and for exported models.

Exported ONNX/TFLite graphs already contain the decode, so the board only runs `postprocess`;
`decode` is here so tests (and models exported without it) can reproduce the graph's output.
`trainables.postprocess` is the torch twin of this module; both must give the same detections,
so any change here needs the same change there.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from detection.boxes import box_iou, xywh_to_xyxy

# Columns of a decoded prediction row: cx, cy, w, h, objectness, then one score per class.
BOX_COLUMNS = 4
OBJ_COLUMN = 4
FIRST_CLASS_COLUMN = 5


def _sigmoid(x: np.ndarray) -> np.ndarray:
    # exp overflows to inf for very negative logits; 1 / (1 + inf) is the correct limit 0.
    with np.errstate(over="ignore"):
        return 1.0 / (1.0 + np.exp(-x))


def class_probabilities(y: np.ndarray) -> np.ndarray:
    """The class columns of sigmoid head outputs; 1 for a one-class model.

    With one class the loss never trains the class channel (as in YOLOv5), so its sigmoid is an
    untrained number: a score of obj x that number would rank detections at random.
    """
    cls = y[..., FIRST_CLASS_COLUMN:]
    return np.ones_like(cls) if cls.shape[-1] == 1 else cls


def decode(raw: list[np.ndarray], anchors: np.ndarray, strides: Sequence[int]) -> np.ndarray:
    """Head logits per level -> (B, N, 5+C) boxes in input pixels with sigmoid scores.

    raw[l] has shape (B, A, H_l, W_l, 5+C) in the order (tx, ty, tw, th, obj, cls...). Rows are
    ordered level, anchor, y, x: the order of the torch decode and of the exported graph, so row
    indices are comparable across runtimes.
    """
    anchors = np.asarray(anchors, dtype=np.float32)
    if anchors.ndim != 3 or anchors.shape[-1] != 2:
        raise ValueError(f"anchors must have shape (levels, anchors_per_level, 2), got {anchors.shape}")
    if not (len(raw) == len(strides) == anchors.shape[0]):
        raise ValueError(f"need one raw output, stride and anchor row per level; got {len(raw)} outputs, "
                         f"{len(strides)} strides and {anchors.shape[0]} anchor rows")
    decoded = []
    for level, (logits, stride) in enumerate(zip(raw, strides)):
        logits = np.asarray(logits, dtype=np.float32)
        if logits.ndim != 5 or logits.shape[1] != anchors.shape[1] or logits.shape[-1] <= FIRST_CLASS_COLUMN:
            raise ValueError(f"raw[{level}] must have shape (B, {anchors.shape[1]}, H, W, 5+C) with C >= 1, "
                             f"got {logits.shape}")
        batch, _, height, width, outputs = logits.shape
        y = _sigmoid(logits)
        grid_y, grid_x = np.meshgrid(np.arange(height, dtype=np.float32),
                                     np.arange(width, dtype=np.float32), indexing="ij")
        grid = np.stack((grid_x, grid_y), axis=-1)  # (H, W, 2) as (x, y)
        xy = (y[..., 0:2] * 2 - 0.5 + grid) * np.float32(stride)
        wh = (y[..., 2:4] * 2) ** 2 * anchors[level][None, :, None, None, :]
        decoded.append(np.concatenate((xy, wh, y[..., 4:5], class_probabilities(y)), axis=-1)
                       .reshape(batch, -1, outputs))
    shapes = {(d.shape[0], d.shape[2]) for d in decoded}
    if len(shapes) != 1:
        raise ValueError(f"all levels must share batch size and 5+C, got (batch, 5+C) pairs {sorted(shapes)}")
    return np.concatenate(decoded, axis=1)


# Boxes compared per step of the blocked NMS: a (block x block) IoU matrix is cheap, and the
# python loop runs len/block times instead of once per kept box.
NMS_BLOCK = 512


def _greedy_within_block(suppresses: np.ndarray) -> np.ndarray:
    """Exact greedy keep mask for one score-sorted block.

    suppresses[i, j] (i < j) says box i would remove box j. Iterating
    keep_j = no kept i < j suppresses j reaches the greedy answer: after k rounds the first k
    entries are final, and the greedy mask is the only fixed point. Suppression chains are short
    in practice, so this takes a few rounds, not one per box.
    """
    keep = np.ones(suppresses.shape[0], dtype=bool)
    for _ in range(suppresses.shape[0] + 1):
        updated = ~(suppresses & keep[:, None]).any(axis=0)
        if np.array_equal(updated, keep):
            break
        keep = updated
    return keep


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float, *,
        max_keep: int | None = None, block: int = NMS_BLOCK) -> np.ndarray:
    """Greedy NMS: indices of kept xyxy boxes, highest score first.

    A box is dropped when its IoU with an already kept box is above `iou_threshold` (as in
    torchvision); equal scores keep their input order. The result is that of the textbook
    one-box-at-a-time loop, computed `block` boxes at a time: a block first loses every box an
    already kept box overlaps, then resolves suppression among the rest. `max_keep` stops once
    that many are kept (the same first rows as a full run, for a fraction of the work).
    """
    boxes = np.asarray(boxes)
    scores = np.asarray(scores)
    if boxes.ndim != 2 or boxes.shape[1] != 4 or scores.shape != (boxes.shape[0],):
        raise ValueError(f"nms expects boxes (N, 4) and scores (N,), got {boxes.shape} and {scores.shape}")
    if block < 1:
        raise ValueError(f"block must be >= 1, got {block}")
    order = np.argsort(-scores, kind="stable")
    sorted_boxes = boxes[order]
    kept_chunks: list[np.ndarray] = []
    kept_boxes = np.zeros((0, 4), dtype=boxes.dtype)
    for start in range(0, len(order), block):
        positions = np.arange(start, min(start + block, len(order)))
        if len(kept_boxes):
            overlapped = (box_iou(sorted_boxes[positions], kept_boxes) > iou_threshold).any(axis=1)
            positions = positions[~overlapped]
        candidates = sorted_boxes[positions]
        keep = _greedy_within_block(np.triu(box_iou(candidates, candidates) > iou_threshold, k=1))
        kept_chunks.append(order[positions[keep]])
        kept_boxes = np.concatenate((kept_boxes, candidates[keep]))
        if max_keep is not None and len(kept_boxes) >= max_keep:
            break
    kept = np.concatenate(kept_chunks) if kept_chunks else np.zeros(0, dtype=np.int64)
    return kept[:max_keep].astype(np.int64)


def class_offsets(boxes: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """Per-row shifts that put each class in its own region, so one NMS call is class-aware.

    YOLOv5 shifts by class * 7680 px; a shift just wider than the boxes' own extent does the same
    job and keeps float32 coordinates small enough that IoUs stay accurate.
    """
    if boxes.size == 0:
        return np.zeros((0, 1), dtype=boxes.dtype)
    span = boxes.max() - boxes.min() + 1
    return (classes * span)[:, None]


def check_postprocess_args(conf_threshold: float, iou_threshold: float, max_det: int, max_nms: int) -> None:
    """Shared by the numpy and torch post-processors so both reject the same inputs."""
    if not 0.0 <= conf_threshold < 1.0:
        raise ValueError(f"conf_threshold must be in [0, 1), got {conf_threshold}")
    if not 0.0 <= iou_threshold <= 1.0:
        raise ValueError(f"iou_threshold must be in [0, 1], got {iou_threshold}")
    if max_det < 1 or max_nms < 1:
        raise ValueError(f"max_det and max_nms must be >= 1, got max_det={max_det}, max_nms={max_nms}")


def postprocess(pred: np.ndarray, *, conf_threshold: float = 0.001, iou_threshold: float = 0.6,
                max_det: int = 300, multi_label: bool = True, max_nms: int = 30000) -> np.ndarray:
    """Decoded predictions of ONE image (N, 5+C) -> detections (M, 6) float32.

    Rows are [x1, y1, x2, y2, score, class] sorted by score, score = obj * cls. With
    `multi_label` a box yields one row per class above the threshold, as YOLOv5's val does for
    mAP; without it only its best class. NMS is per class; at most `max_nms` candidates (the
    highest scores) enter it and at most `max_det` rows come out.
    """
    check_postprocess_args(conf_threshold, iou_threshold, max_det, max_nms)
    pred = np.asarray(pred, dtype=np.float32)
    if pred.ndim != 2 or pred.shape[1] <= FIRST_CLASS_COLUMN:
        raise ValueError(f"pred must have shape (N, 5+C) with C >= 1 for one image, got {pred.shape}")
    # obj >= obj * cls, so this cheap filter drops nothing the class filter would keep.
    pred = pred[pred[:, OBJ_COLUMN] > conf_threshold]
    class_scores = pred[:, FIRST_CLASS_COLUMN:] * pred[:, OBJ_COLUMN:OBJ_COLUMN + 1]
    boxes = xywh_to_xyxy(pred[:, :BOX_COLUMNS])
    if multi_label:
        rows, classes = np.nonzero(class_scores > conf_threshold)
        scores = class_scores[rows, classes]
        boxes = boxes[rows]
    else:
        classes = class_scores.argmax(axis=1) if len(pred) else np.zeros(0, dtype=np.int64)
        scores = class_scores[np.arange(len(pred)), classes]
        confident = scores > conf_threshold
        boxes, scores, classes = boxes[confident], scores[confident], classes[confident]
    classes = classes.astype(np.float32)
    if len(scores) > max_nms:
        top = np.argsort(-scores, kind="stable")[:max_nms]
        boxes, scores, classes = boxes[top], scores[top], classes[top]
    keep = nms(boxes + class_offsets(boxes, classes), scores, iou_threshold, max_keep=max_det)
    return np.concatenate((boxes[keep], scores[keep, None], classes[keep, None]), axis=1).astype(np.float32)
