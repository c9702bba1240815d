"""Fine-grained feature imitation after Wang et al. (CVPR 2019), on the three neck outputs.

The mask says where the student imitates: near the objects, on the levels that detect them. An
object counts on a level only through the anchors YOLOv5 assigns it to there (width and height
within `anchor_t` of the anchor's, the detection loss's own rule); at each cell, the IoU of those
anchors with the box is computed, and cells where one exceeds psi times the best such IoU
(psi = 0.5) are "near the object". The mask is the OR over anchors and objects. Taking the
threshold over every anchor of every level instead (the paper's Faster R-CNN setting, one level)
marks most of a small grid for a small object: close to global imitation, which the paper found worse.

One adaptation conv per level maps student channels to teacher channels, initialised small so the
student's features are not pushed around by a random projection at the start; the loss of a level is
the paper's

    L_imit = 1 / (2 N_p) * sum_ij I_ij * sum_c (adapt(s)_ijc - t_ijc)^2,   N_p = sum_ij I_ij

summed over channels, and the levels' losses add up. The adaptation convs are trained (they are this
module's parameters) and never part of the exported student.

Weight: the official code's (twangnh/Distilling-Object-Detectors, trainval_net_sup.py): imitation
loss weight 0.01 (`--ilw`) on that channel sum, and no imitation for the first 400 steps (`--ws`)
of its one-image batches (`--bs 1`), i.e. for the first 400 training images.
"""
from __future__ import annotations

import torch
from torch import nn

from trainables.kd.base import DistillContext, Distiller

ADAPT_INIT_STD = 1e-3  # the adaptation conv's initial weights: small, as imitation starts from the teacher's side
IMITATION_WEIGHT = 0.01  # the official code's --ilw
WARMUP_IMAGES = 400  # the official code's --ws 400 steps at --bs 1


def imitation_mask(targets: torch.Tensor, batch: int, grid_hw: tuple[int, int], anchors_grid: torch.Tensor,
                   psi: float = 0.5, anchor_t: float = 4.0) -> torch.Tensor:
    """(B, H, W) boolean mask of one level.

    targets: (M, 6) [image, class, cx, cy, w, h] normalised; anchors_grid: (A, 2) in grid units;
    anchor_t: YOLOv5's anchor-ratio limit (an object uses only anchors within it, as in its assignment).
    """
    h, w = grid_hw
    device = anchors_grid.device
    mask = torch.zeros((batch, h, w), dtype=torch.bool, device=device)
    if targets.shape[0] == 0:
        return mask
    boxes = targets[:, 2:6] * torch.tensor([w, h, w, h], device=device, dtype=targets.dtype)  # grid units
    ratio = boxes[:, None, 2:4] / anchors_grid[None]  # (M, A, 2)
    assigned = torch.max(ratio, 1 / ratio).amax(2) < anchor_t  # (M, A): the anchors each object trains
    gx1, gy1 = boxes[:, 0] - boxes[:, 2] / 2, boxes[:, 1] - boxes[:, 3] / 2
    gx2, gy2 = boxes[:, 0] + boxes[:, 2] / 2, boxes[:, 1] + boxes[:, 3] / 2
    cy, cx = torch.meshgrid(torch.arange(h, device=device) + 0.5, torch.arange(w, device=device) + 0.5, indexing="ij")
    aw, ah = anchors_grid[:, 0].view(-1, 1, 1), anchors_grid[:, 1].view(-1, 1, 1)  # (A, 1, 1)
    ax1, ay1, ax2, ay2 = cx - aw / 2, cy - ah / 2, cx + aw / 2, cy + ah / 2  # (A, H, W)
    for k in range(boxes.shape[0]):
        if not assigned[k].any():
            continue  # this level does not detect an object of this size
        iw = (torch.minimum(ax2, gx2[k]) - torch.maximum(ax1, gx1[k])).clamp(min=0)
        ih = (torch.minimum(ay2, gy2[k]) - torch.maximum(ay1, gy1[k])).clamp(min=0)
        inter = iw * ih
        iou = (inter / (aw * ah + boxes[k, 2] * boxes[k, 3] - inter))[assigned[k]]  # (A_k, H, W)
        near = (iou > psi * iou.max()).any(dim=0)
        mask[int(targets[k, 0])] |= near
    return mask


class FeatureImitationDistiller(Distiller):
    """feats per level: (B, C_l, H_l, W_l); student and teacher share H_l, W_l."""

    reference_weight = IMITATION_WEIGHT
    warmup_images = WARMUP_IMAGES

    def __init__(self, teacher, student_channels: tuple[int, ...], teacher_channels: tuple[int, ...],
                 anchors_grid: torch.Tensor, *, psi: float = 0.5, anchor_t: float = 4.0, **kw):
        super().__init__(teacher, **kw)
        self.adapt = nn.ModuleList(nn.Conv2d(cs, ct, 3, padding=1) for cs, ct in zip(student_channels, teacher_channels))
        for conv in self.adapt:
            nn.init.normal_(conv.weight, std=ADAPT_INIT_STD)
            nn.init.zeros_(conv.bias)
        self.register_buffer("anchors_grid", anchors_grid.clone(), persistent=False)
        self.psi, self.anchor_t = psi, anchor_t

    @classmethod
    def from_context(cls, ctx: DistillContext, **common) -> "FeatureImitationDistiller":
        return cls(ctx.teacher, ctx.student.feature_channels, ctx.teacher_spec.feature_channels, ctx.anchors_grid,
                   anchor_t=ctx.loss_weights.anchor_t, **common)

    def distill(self, s_raw, s_feats, t_raw, t_feats, targets):
        loss = s_feats[0].new_zeros(())
        batch = s_feats[0].shape[0]
        for level, (s, t, adapt) in enumerate(zip(s_feats, t_feats, self.adapt)):
            mask = imitation_mask(targets, batch, tuple(s.shape[2:]), self.anchors_grid[level], self.psi,
                                  self.anchor_t)
            n_pos = mask.sum()
            if n_pos == 0:
                continue
            sq = (adapt(s) - t).pow(2).sum(1)  # (B, H, W), summed over channels
            loss = loss + (sq * mask).sum() / (2 * n_pos)
        return loss
