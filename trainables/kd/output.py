"""Output-based distillation after Mehta & Ozturk (2018), adapted to the YOLOv5 head.

    L_obj = sum_l w_l * mean BCE(s_obj, o_T)                          (objectness distilled directly)
    L_cls = sum o_T * mean_c K_c * BCE(s_cls, p_T) / sum o_T          (weighted by teacher objectness,
    L_box = sum o_T * (1 - CIoU(s_box, b_T)) / sum o_T                 normalised by its sum, not by cells)
    L     = g_box * L_box + g_obj * L_obj + g_cls * L_cls

o_T, p_T are the teacher's sigmoid objectness and class maps, b_T its decoded box per cell. Each BCE
is taken minus the entropy of its soft target (the KL divergence of the two Bernoullis): the same
gradients, and a loss of zero when the student predicts what the teacher does.

Weight: the paper's distillation factor lambda_D = 1, used in all of its experiments: the
distillation terms weigh as much as the detection terms they mirror, each part with the detection
loss's own gain (g_box, g_obj, g_cls above), as the paper adds them to the YOLO loss term by term.

Feature-Map NMS (on by default: without it the paper's student fell below its baseline) keeps a
teacher class score, K_c = 1, only where it is the maximum of its 3x3 neighbourhood over all
anchors. Elsewhere K_c = 0: that cell leaves the class term. Mehta & Ozturk wrote a target of 0
there instead, which suits YOLOv2's one positive per object; YOLOv5 makes up to 3 cells x 3
anchors positive per object, so a zero target would pull the true class down at most of them as
hard as the ground truth pulls it up.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from trainables.kd.base import DistillContext, Distiller
from trainables.loss import LEVEL_BALANCE, bbox_ciou


def bernoulli_kl(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Elementwise KL(target || sigmoid(logits)): BCE with a soft target minus the target's entropy."""
    entropy = -(torch.special.xlogy(target, target) + torch.special.xlogy(1 - target, 1 - target))
    return F.binary_cross_entropy_with_logits(logits, target, reduction="none") - entropy


def fm_nms_keep(obj: torch.Tensor, cls: torch.Tensor, kernel: int = 3) -> torch.Tensor:
    """Feature-Map NMS on one level's teacher maps: where each class score is a local peak.

    obj: (B, A, H, W) objectness probabilities; cls: (B, A, H, W, C) class probabilities.
    Returns a (B, A, H, W, C) boolean mask, true where obj*cls is the maximum of its k x k
    neighbourhood across all anchors (per class).
    """
    score = obj.unsqueeze(-1) * cls  # (B, A, H, W, C)
    best_anchor = score.amax(dim=1).permute(0, 3, 1, 2)  # (B, C, H, W)
    neighbourhood = F.max_pool2d(best_anchor, kernel, stride=1, padding=kernel // 2)
    return score >= neighbourhood.permute(0, 2, 3, 1).unsqueeze(1)  # broadcast over anchors


def fm_nms(obj: torch.Tensor, cls: torch.Tensor, kernel: int = 3) -> torch.Tensor:
    """The class scores Feature-Map NMS keeps (the others zeroed), as the paper's suppressed map."""
    return cls * fm_nms_keep(obj, cls, kernel)


def decode_cell_boxes(p: torch.Tensor, anchors: torch.Tensor) -> torch.Tensor:
    """(B, A, H, W, >=4) logits -> (B, A, H, W, 4) boxes in grid units relative to their cell."""
    xy = p[..., :2].sigmoid() * 2 - 0.5
    wh = (p[..., 2:4].sigmoid() * 2) ** 2 * anchors.view(1, -1, 1, 1, 2)
    return torch.cat((xy, wh), -1)


class OutputDistiller(Distiller):
    """raw outputs per level: (B, A, H, W, 5 + C) logits, identical shapes for teacher and student."""

    reference_weight = 1.0  # lambda_D (Mehta & Ozturk 2018)

    def __init__(self, teacher, anchors_grid: torch.Tensor, *, box_gain: float, obj_gain: float, cls_gain: float,
                 fm_nms: bool = True, **kw):
        super().__init__(teacher, **kw)
        self.register_buffer("anchors_grid", anchors_grid.clone(), persistent=False)
        self.box_gain, self.obj_gain, self.cls_gain = box_gain, obj_gain, cls_gain
        self.use_fm_nms = fm_nms

    @classmethod
    def from_context(cls, ctx: DistillContext, *, fm_nms: bool, **common) -> "OutputDistiller":
        w = ctx.loss_weights  # the detection loss's own gains, so both losses weigh their parts alike
        return cls(ctx.teacher, ctx.anchors_grid, box_gain=w.box, obj_gain=w.obj, cls_gain=w.cls, fm_nms=fm_nms,
                   **common)

    def distill(self, s_raw, s_feats, t_raw, t_feats, targets):
        lobj = s_raw[0].new_zeros(())
        cls_num, box_num, weight_sum = lobj.clone(), lobj.clone(), lobj.clone()
        for level, (s, t) in enumerate(zip(s_raw, t_raw)):
            o_t = t[..., 4].sigmoid()
            p_t = t[..., 5:].sigmoid()
            lobj = lobj + bernoulli_kl(s[..., 4], o_t).mean() * LEVEL_BALANCE[level]
            if s.shape[-1] > 6:  # class distillation only makes sense with more than one class
                cls_kl = bernoulli_kl(s[..., 5:], p_t)
                if self.use_fm_nms:
                    cls_kl = cls_kl * fm_nms_keep(o_t, p_t)  # suppressed cells leave the class term
                cls_num = cls_num + (o_t * cls_kl.mean(-1)).sum()
            anchors = self.anchors_grid[level]
            ciou = bbox_ciou(decode_cell_boxes(s, anchors).reshape(-1, 4), decode_cell_boxes(t, anchors).reshape(-1, 4))
            box_num = box_num + (o_t.reshape(-1) * (1 - ciou)).sum()
            weight_sum = weight_sum + o_t.sum()
        weight_sum = weight_sum.clamp(min=1e-6)
        return self.box_gain * box_num / weight_sum + self.obj_gain * lobj + self.cls_gain * cls_num / weight_sum
