"""Fine-grained feature imitation after Wang et al. (CVPR 2019), on the three neck outputs.

For every ground-truth box and level, the IoU of each anchor at each cell with the box is computed;
cells where any anchor exceeds psi times the best IoU (psi = 0.5) are "near the object". The mask is
the OR over anchors and boxes. One adaptation conv per level maps student channels to teacher
channels; the loss is

    L_imit = 1 / (2 N_p) * sum_ij sum_c I_ij (adapt(s)_ijc - t_ijc)^2,   N_p = sum_ij I_ij

weighted by the paper's lambda (0.01) times the distillation factor. The adaptation convs are
trained (they are this module's parameters) and never part of the exported student.
"""
from __future__ import annotations

import torch
from torch import nn

from trainables.kd.base import DistillContext, Distiller

PAPER_LAMBDA = 0.01


def imitation_mask(targets: torch.Tensor, batch: int, grid_hw: tuple[int, int], anchors_grid: torch.Tensor,
                   psi: float = 0.5) -> torch.Tensor:
    """(B, H, W) boolean mask of one level.

    targets: (M, 6) [image, class, cx, cy, w, h] normalised; anchors_grid: (A, 2) in grid units.
    """
    h, w = grid_hw
    device = anchors_grid.device
    mask = torch.zeros((batch, h, w), dtype=torch.bool, device=device)
    if targets.shape[0] == 0:
        return mask
    boxes = targets[:, 2:6] * torch.tensor([w, h, w, h], device=device, dtype=targets.dtype)  # grid units
    gx1, gy1 = boxes[:, 0] - boxes[:, 2] / 2, boxes[:, 1] - boxes[:, 3] / 2
    gx2, gy2 = boxes[:, 0] + boxes[:, 2] / 2, boxes[:, 1] + boxes[:, 3] / 2
    cy, cx = torch.meshgrid(torch.arange(h, device=device) + 0.5, torch.arange(w, device=device) + 0.5, indexing="ij")
    aw, ah = anchors_grid[:, 0].view(-1, 1, 1), anchors_grid[:, 1].view(-1, 1, 1)  # (A, 1, 1)
    ax1, ay1, ax2, ay2 = cx - aw / 2, cy - ah / 2, cx + aw / 2, cy + ah / 2  # (A, H, W)
    for k in range(boxes.shape[0]):
        iw = (torch.minimum(ax2, gx2[k]) - torch.maximum(ax1, gx1[k])).clamp(min=0)
        ih = (torch.minimum(ay2, gy2[k]) - torch.maximum(ay1, gy1[k])).clamp(min=0)
        inter = iw * ih
        iou = inter / (aw * ah + boxes[k, 2] * boxes[k, 3] - inter)  # (A, H, W)
        near = (iou > psi * iou.max()).any(dim=0)
        mask[int(targets[k, 0])] |= near
    return mask


class FeatureImitationDistiller(Distiller):
    """feats per level: (B, C_l, H_l, W_l); student and teacher share H_l, W_l."""

    def __init__(self, teacher, student_channels: tuple[int, ...], teacher_channels: tuple[int, ...],
                 anchors_grid: torch.Tensor, *, psi: float = 0.5, lam: float = PAPER_LAMBDA, **kw):
        super().__init__(teacher, **kw)
        self.adapt = nn.ModuleList(nn.Conv2d(cs, ct, 3, padding=1) for cs, ct in zip(student_channels, teacher_channels))
        self.register_buffer("anchors_grid", anchors_grid.clone(), persistent=False)
        self.psi, self.lam = psi, lam

    @classmethod
    def from_context(cls, ctx: DistillContext, **common) -> "FeatureImitationDistiller":
        return cls(ctx.teacher, ctx.student.feature_channels, ctx.teacher_spec.feature_channels, ctx.anchors_grid,
                   **common)

    def distill(self, s_raw, s_feats, t_raw, t_feats, targets):
        loss = s_feats[0].new_zeros(())
        batch = s_feats[0].shape[0]
        for level, (s, t, adapt) in enumerate(zip(s_feats, t_feats, self.adapt)):
            mask = imitation_mask(targets, batch, tuple(s.shape[2:]), self.anchors_grid[level], self.psi)
            n_pos = mask.sum()
            if n_pos == 0:
                continue
            sq = (adapt(s.float()) - t.float()).pow(2).sum(1)  # (B, H, W), summed over channels
            loss = loss + (sq * mask).sum() / (2 * n_pos)
        return self.lam * loss
