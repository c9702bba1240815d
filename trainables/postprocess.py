"""YOLOv5 decode and NMS in torch: the twin of `detection.postprocess`.

Used for evaluation during training and, for `decode`, inside exported graphs. It must give the
same detections as the numpy module (tests compare them), so the arithmetic mirrors it op by op.
torchvision is not available beside this torch, so NMS is written here: exact greedy, computed
block by block so memory stays bounded and the python loop runs per block, not per box.
"""
from __future__ import annotations

import warnings
from collections.abc import Sequence

import torch

from detection.postprocess import (BOX_COLUMNS, FIRST_CLASS_COLUMN, NMS_BLOCK, OBJ_COLUMN,
                                  check_postprocess_args)


def class_probabilities(y: torch.Tensor) -> torch.Tensor:
    """`detection.postprocess.class_probabilities` for tensors: 1 for a one-class model."""
    cls = y[..., FIRST_CLASS_COLUMN:]
    with warnings.catch_warnings():  # the class count is fixed per model, so a constant in any trace
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        return torch.ones_like(cls) if cls.shape[-1] == 1 else cls


def _check_decode_inputs(raw: list[torch.Tensor], anchors: torch.Tensor, strides: Sequence[int]) -> None:
    if anchors.dim() != 3 or anchors.shape[-1] != 2:
        raise ValueError(f"anchors must have shape (levels, anchors_per_level, 2), got {tuple(anchors.shape)}")
    if not (len(raw) == len(strides) == anchors.shape[0]):
        raise ValueError(f"need one raw output, stride and anchor row per level; got {len(raw)} outputs, "
                         f"{len(strides)} strides and {anchors.shape[0]} anchor rows")
    for level, logits in enumerate(raw):
        if logits.dim() != 5 or logits.shape[1] != anchors.shape[1] or logits.shape[-1] <= FIRST_CLASS_COLUMN:
            raise ValueError(f"raw[{level}] must have shape (B, {anchors.shape[1]}, H, W, 5+C) with C >= 1, "
                             f"got {tuple(logits.shape)}")


def decode(raw: list[torch.Tensor], anchors: torch.Tensor, strides: Sequence[int]) -> torch.Tensor:
    """Head logits per level -> (B, N, 5+C) boxes in input pixels with sigmoid scores.

    Same layout as `detection.postprocess.decode` (rows ordered level, anchor, y, x). Grids come
    from tensor shapes and the only python loop is over levels, so the function traces and
    exports with dynamic image sizes.
    """
    if not torch.jit.is_tracing():  # under tracing, shape checks only add TracerWarnings to the export
        _check_decode_inputs(raw, anchors, strides)
    decoded = []
    for level, (logits, stride) in enumerate(zip(raw, strides)):
        batch, _, height, width, outputs = logits.shape
        y = logits.float().sigmoid()
        grid_y, grid_x = torch.meshgrid(torch.arange(height, device=y.device, dtype=y.dtype),
                                        torch.arange(width, device=y.device, dtype=y.dtype), indexing="ij")
        grid = torch.stack((grid_x, grid_y), dim=-1)  # (H, W, 2) as (x, y)
        xy = (y[..., 0:2] * 2 - 0.5 + grid) * float(stride)
        doubled = y[..., 2:4] * 2
        wh = doubled * doubled * anchors[level].to(y).view(1, -1, 1, 1, 2)  # a product, not ** 2: LiteRT has no pow
        decoded.append(torch.cat((xy, wh, y[..., 4:5], class_probabilities(y)), dim=-1).reshape(batch, -1, outputs))
    return torch.cat(decoded, dim=1)


def xywh_to_xyxy(b: torch.Tensor) -> torch.Tensor:
    """(..., 4) centre boxes -> corner boxes; same arithmetic as `detection.boxes`."""
    half = b[..., 2:4] / 2
    return torch.cat((b[..., 0:2] - half, b[..., 0:2] + half), dim=-1)


def box_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(N, 4) x (M, 4) xyxy -> (N, M) IoU; an empty union gives 0, as in `detection.boxes`."""
    def area(x: torch.Tensor) -> torch.Tensor:
        return (x[:, 2] - x[:, 0]).clamp(min=0) * (x[:, 3] - x[:, 1]).clamp(min=0)

    top_left = torch.maximum(a[:, None, :2], b[None, :, :2])
    bottom_right = torch.minimum(a[:, None, 2:], b[None, :, 2:])
    wh = (bottom_right - top_left).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    union = area(a)[:, None] + area(b)[None, :] - inter
    positive = union > 0
    return torch.where(positive, inter / torch.where(positive, union, torch.ones_like(union)), torch.zeros_like(inter))


def _greedy_within_block(suppresses: torch.Tensor) -> torch.Tensor:
    """torch twin of `detection.postprocess._greedy_within_block` (see there for why it is exact)."""
    keep = torch.ones(suppresses.shape[0], dtype=torch.bool, device=suppresses.device)
    for _ in range(suppresses.shape[0] + 1):
        updated = ~(suppresses & keep[:, None]).any(dim=0)
        if torch.equal(updated, keep):
            break
        keep = updated
    return keep


def nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float, *,
        max_keep: int | None = None, block: int = NMS_BLOCK) -> torch.Tensor:
    """Greedy NMS with the semantics of `detection.postprocess.nms`: kept indices by score desc.

    Same blocked algorithm as the numpy version: memory O(block * (block + kept)) instead of
    O(N^2), and a python loop per block rather than per box. `max_keep` stops once that many
    are kept.
    """
    if boxes.dim() != 2 or boxes.shape[1] != 4 or scores.shape != (boxes.shape[0],):
        raise ValueError(f"nms expects boxes (N, 4) and scores (N,), got {tuple(boxes.shape)} "
                         f"and {tuple(scores.shape)}")
    if block < 1:
        raise ValueError(f"block must be >= 1, got {block}")
    order = torch.sort(scores, descending=True, stable=True).indices
    sorted_boxes = boxes[order]
    kept_chunks: list[torch.Tensor] = []
    kept_boxes = boxes.new_zeros((0, 4))
    for start in range(0, len(order), block):
        positions = torch.arange(start, min(start + block, len(order)), device=boxes.device)
        if len(kept_boxes):
            # Only boxes no kept box overlaps can still be kept; dropping the rest first makes
            # crowded scenes (most candidates suppressed) cheap.
            overlapped = (box_iou(sorted_boxes[positions], kept_boxes) > iou_threshold).any(dim=1)
            positions = positions[~overlapped]
        candidates = sorted_boxes[positions]
        suppresses = torch.triu(box_iou(candidates, candidates) > iou_threshold, diagonal=1)
        keep = _greedy_within_block(suppresses)
        kept_chunks.append(order[positions[keep]])
        kept_boxes = torch.cat((kept_boxes, candidates[keep]))
        if max_keep is not None and len(kept_boxes) >= max_keep:
            break
    kept = torch.cat(kept_chunks) if kept_chunks else order.new_zeros(0)
    return kept[:max_keep] if max_keep is not None else kept


def _postprocess_one(pred: torch.Tensor, conf_threshold: float, iou_threshold: float, max_det: int,
                     multi_label: bool, max_nms: int) -> torch.Tensor:
    pred = pred[pred[:, OBJ_COLUMN] > conf_threshold]
    class_scores = pred[:, FIRST_CLASS_COLUMN:] * pred[:, OBJ_COLUMN:OBJ_COLUMN + 1]
    boxes = xywh_to_xyxy(pred[:, :BOX_COLUMNS])
    if multi_label:
        rows, classes = (class_scores > conf_threshold).nonzero(as_tuple=True)
        scores = class_scores[rows, classes]
        boxes = boxes[rows]
    else:
        scores, classes = class_scores.max(dim=1)
        confident = scores > conf_threshold
        boxes, scores, classes = boxes[confident], scores[confident], classes[confident]
    classes = classes.to(boxes.dtype)
    if len(scores) > max_nms:
        top = torch.sort(scores, descending=True, stable=True).indices[:max_nms]
        boxes, scores, classes = boxes[top], scores[top], classes[top]
    if len(scores) == 0:
        return boxes.new_zeros((0, 6))
    # Class-aware NMS by shifting each class into its own region (see detection.postprocess).
    span = boxes.max() - boxes.min() + 1
    keep = nms(boxes + (classes * span)[:, None], scores, iou_threshold, max_keep=max_det)
    return torch.cat((boxes[keep], scores[keep, None], classes[keep, None]), dim=1)


def postprocess(pred: torch.Tensor, *, conf_threshold: float = 0.001, iou_threshold: float = 0.6,
                max_det: int = 300, multi_label: bool = True, max_nms: int = 30000) -> list[torch.Tensor]:
    """Decoded predictions (B, N, 5+C) -> per image (M, 6) [x1, y1, x2, y2, score, class].

    Same rules as `detection.postprocess.postprocess` (score = obj * cls, multi-label, per-class
    NMS, `max_nms` candidates in, `max_det` rows out), on whatever device `pred` lives.
    """
    check_postprocess_args(conf_threshold, iou_threshold, max_det, max_nms)
    if pred.dim() != 3 or pred.shape[-1] <= FIRST_CLASS_COLUMN:
        raise ValueError(f"pred must have shape (B, N, 5+C) with C >= 1, got {tuple(pred.shape)}")
    pred = pred.float()
    return [_postprocess_one(p, conf_threshold, iou_threshold, max_det, multi_label, max_nms) for p in pred]
