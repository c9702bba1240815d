"""The YOLOv5 detection loss: CIoU box, BCE objectness with IoU targets, BCE classes.

Pure: tensors in, tensors out. Anchors, strides and gains are arguments; nothing is read off a
model. Target assignment follows YOLOv5 v6: a ground-truth box goes to every anchor whose
width/height ratio is within `anchor_t`, in its own cell and the two nearest neighbour cells.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from trainables.hyper import LossWeights

LEVEL_BALANCE = (4.0, 1.0, 0.4)  # objectness weight of P3, P4, P5
DETECTION_PARTS = ("box", "obj", "cls")  # the detection loss's terms (its per-epoch losses); their sum is its total


@dataclass(frozen=True)
class Assignment:
    """Positive samples of one level: where they are and what they should predict."""

    image: torch.Tensor  # (n,) image index in batch
    anchor: torch.Tensor  # (n,) anchor index
    gy: torch.Tensor  # (n,) cell row
    gx: torch.Tensor  # (n,) cell column
    box: torch.Tensor  # (n, 4) target xy offset in the cell and wh, in grid units
    anchor_wh: torch.Tensor  # (n, 2) the matched anchor in grid units
    cls: torch.Tensor  # (n,) class index


_NEIGHBOURS = torch.tensor([[0, 0], [1, 0], [0, 1], [-1, 0], [0, -1]], dtype=torch.float32)


def assign_targets(targets: torch.Tensor, grid_shapes: list[tuple[int, int]],
                   anchors_grid: torch.Tensor, anchor_t: float = 4.0) -> list[Assignment]:
    """YOLOv5 target assignment.

    targets: (M, 6) [image, class, cx, cy, w, h] with coordinates normalised to [0, 1].
    grid_shapes: (H, W) per level. anchors_grid: (levels, A, 2) anchors divided by the stride.
    """
    device = targets.device
    na, nt = anchors_grid.shape[1], targets.shape[0]
    anchor_idx = torch.arange(na, device=device, dtype=targets.dtype).view(na, 1).repeat(1, nt)
    t_all = torch.cat((targets.repeat(na, 1, 1), anchor_idx[..., None]), 2)  # (A, M, 7)
    offsets_base = _NEIGHBOURS.to(device, targets.dtype) * 0.5
    out = []
    for level, (h, w) in enumerate(grid_shapes):
        anchors = anchors_grid[level]
        gain = torch.tensor([1, 1, w, h, w, h, 1], device=device, dtype=targets.dtype)
        t = t_all * gain
        if nt:
            ratio = t[..., 4:6] / anchors[:, None]
            t = t[torch.max(ratio, 1 / ratio).max(2)[0] < anchor_t]  # (n, 7) shape-matched
            gxy = t[:, 2:4]
            gxy_inv = gain[[2, 3]] - gxy
            left, top = ((gxy % 1 < 0.5) & (gxy > 1)).T
            right, bottom = ((gxy_inv % 1 < 0.5) & (gxy_inv > 1)).T
            keep = torch.stack((torch.ones_like(left), left, top, right, bottom))
            t = t.repeat((5, 1, 1))[keep]
            offsets = (torch.zeros_like(gxy)[None] + offsets_base[:, None])[keep]
        else:
            t = t_all[0]
            offsets = torch.zeros((0, 2), device=device, dtype=targets.dtype)
        img_cls, gxy, gwh, a = t[:, :2].long(), t[:, 2:4], t[:, 4:6], t[:, 6].long()
        gij = (gxy - offsets).long()
        gx, gy = gij[:, 0].clamp(0, w - 1), gij[:, 1].clamp(0, h - 1)
        out.append(Assignment(image=img_cls[:, 0], anchor=a, gy=gy, gx=gx,
                              box=torch.cat((gxy - gij, gwh), 1), anchor_wh=anchors[a], cls=img_cls[:, 1]))
    return out


def bbox_ciou(box1: torch.Tensor, box2: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """Complete IoU of matching rows of two (n, 4) cx,cy,w,h tensors."""
    (x1, y1, w1, h1), (x2, y2, w2, h2) = box1.unbind(-1), box2.unbind(-1)
    b1x1, b1x2, b1y1, b1y2 = x1 - w1 / 2, x1 + w1 / 2, y1 - h1 / 2, y1 + h1 / 2
    b2x1, b2x2, b2y1, b2y2 = x2 - w2 / 2, x2 + w2 / 2, y2 - h2 / 2, y2 + h2 / 2
    inter = (torch.min(b1x2, b2x2) - torch.max(b1x1, b2x1)).clamp(0) * \
            (torch.min(b1y2, b2y2) - torch.max(b1y1, b2y1)).clamp(0)
    union = w1 * h1 + w2 * h2 - inter + eps
    iou = inter / union
    cw = torch.max(b1x2, b2x2) - torch.min(b1x1, b2x1)
    ch = torch.max(b1y2, b2y2) - torch.min(b1y1, b2y1)
    c2 = cw ** 2 + ch ** 2 + eps
    rho2 = (x2 - x1) ** 2 + (y2 - y1) ** 2
    v = (4 / math.pi ** 2) * (torch.atan(w2 / (h2 + eps)) - torch.atan(w1 / (h1 + eps))) ** 2
    with torch.no_grad():
        alpha = v / (v - iou + 1).clamp(min=eps)  # iou can round to 1: never divide by zero
    return iou - (rho2 / c2 + v * alpha)


class DetectionLoss(nn.Module):
    """YOLOv5 loss over all levels; `forward` returns (total scaled by batch size, parts).

    raw[l]: (B, A, H, W, 5+C) logits. targets: (M, 6) [image, class, cx, cy, w, h] normalised.
    """

    def __init__(self, anchors: torch.Tensor, strides: tuple[int, ...], num_classes: int,
                 weights: LossWeights):
        super().__init__()
        self.register_buffer("anchors_grid", anchors / torch.tensor(strides, dtype=torch.float32).view(-1, 1, 1),
                             persistent=False)
        self.num_classes = num_classes
        self.weights = weights
        self.bce = nn.BCEWithLogitsLoss()

    def forward(self, raw: list[torch.Tensor], targets: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        device = raw[0].device
        lbox = torch.zeros((), device=device)
        lobj = torch.zeros((), device=device)
        lcls = torch.zeros((), device=device)
        assignments = assign_targets(targets.to(device), [tuple(p.shape[2:4]) for p in raw],
                                     self.anchors_grid.to(device), self.weights.anchor_t)
        for level, (p, asg) in enumerate(zip(raw, assignments)):
            p = p.float()
            tobj = torch.zeros(p.shape[:4], device=device)
            n = asg.image.shape[0]
            if n:
                ps = p[asg.image, asg.anchor, asg.gy, asg.gx]  # (n, 5+C)
                pxy = ps[:, :2].sigmoid() * 2 - 0.5
                pwh = (ps[:, 2:4].sigmoid() * 2) ** 2 * asg.anchor_wh
                iou = bbox_ciou(torch.cat((pxy, pwh), 1), asg.box)
                lbox = lbox + (1.0 - iou).mean()
                tobj[asg.image, asg.anchor, asg.gy, asg.gx] = iou.detach().clamp(0).to(tobj.dtype)
                if self.num_classes > 1:
                    tcls = torch.zeros_like(ps[:, 5:])
                    tcls[torch.arange(n, device=device), asg.cls] = 1.0
                    lcls = lcls + self.bce(ps[:, 5:], tcls)
            lobj = lobj + self.bce(p[..., 4], tobj) * LEVEL_BALANCE[level]
        lbox, lobj, lcls = lbox * self.weights.box, lobj * self.weights.obj, lcls * self.weights.cls
        batch = raw[0].shape[0]
        total = (lbox + lobj + lcls) * batch
        return total, {"box": lbox.detach(), "obj": lobj.detach(), "cls": lcls.detach()}
