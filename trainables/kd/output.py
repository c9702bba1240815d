"""Output-based distillation after Mehta & Ozturk (2018), adapted to the YOLOv5 head.

    L_obj = sum_l w_l * mean BCE(s_obj, o_T)                      (objectness distilled directly)
    L_cls = sum o_T * mean_c BCE(s_cls, p_T) / sum o_T            (weighted by teacher objectness,
    L_box = sum o_T * (1 - CIoU(s_box, b_T)) / sum o_T             normalised by its sum, not by cells)
    L     = g_box * L_box + g_obj * L_obj + g_cls * L_cls

o_T, p_T are the teacher's sigmoid objectness and class maps, b_T its decoded box per cell. With
Feature-Map NMS (on by default: without it the paper's student fell below its baseline) a teacher
class score survives only where it is the maximum of its 3x3 neighbourhood over all anchors;
elsewhere that class's soft target is 0.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from trainables.kd.base import Distiller, HeadGeometry
from trainables.loss import LEVEL_BALANCE, bbox_ciou


def fm_nms(obj: torch.Tensor, cls: torch.Tensor, kernel: int = 3) -> torch.Tensor:
    """Feature-Map NMS on one level's teacher maps.

    obj: (B, A, H, W) objectness probabilities; cls: (B, A, H, W, C) class probabilities.
    Returns cls with every class score zeroed where obj*cls is not the maximum of its k x k
    neighbourhood across all anchors (per class).
    """
    score = obj.unsqueeze(-1) * cls  # (B, A, H, W, C)
    best_anchor = score.amax(dim=1).permute(0, 3, 1, 2)  # (B, C, H, W)
    neighbourhood = F.max_pool2d(best_anchor, kernel, stride=1, padding=kernel // 2)
    keep = score >= neighbourhood.permute(0, 2, 3, 1).unsqueeze(1)  # broadcast over anchors
    return cls * keep


def decode_cell_boxes(p: torch.Tensor, anchors: torch.Tensor) -> torch.Tensor:
    """(B, A, H, W, >=4) logits -> (B, A, H, W, 4) boxes in grid units relative to their cell."""
    xy = p[..., :2].sigmoid() * 2 - 0.5
    wh = (p[..., 2:4].sigmoid() * 2) ** 2 * anchors.view(1, -1, 1, 1, 2)
    return torch.cat((xy, wh), -1)


class OutputDistiller(Distiller):
    """raw outputs per level: (B, A, H, W, 5 + C) logits, identical shapes for teacher and student."""

    def __init__(self, teacher, geometry: HeadGeometry, *, fm_nms: bool = True, **kw):
        super().__init__(teacher, **kw)
        self.geometry = geometry
        self.use_fm_nms = fm_nms

    def distill(self, s_raw, s_feats, t_raw, t_feats, targets):
        g = self.geometry
        lobj = s_raw[0].new_zeros(())
        cls_num, box_num, weight_sum = lobj.clone(), lobj.clone(), lobj.clone()
        for level, (s, t) in enumerate(zip(s_raw, t_raw)):
            s, t = s.float(), t.float()
            o_t = t[..., 4].sigmoid()
            p_t = t[..., 5:].sigmoid()
            if self.use_fm_nms:
                p_t = fm_nms(o_t, p_t)
            lobj = lobj + F.binary_cross_entropy_with_logits(s[..., 4], o_t) * LEVEL_BALANCE[level]
            if s.shape[-1] > 6:  # class distillation only makes sense with more than one class
                cls_bce = F.binary_cross_entropy_with_logits(s[..., 5:], p_t, reduction="none").mean(-1)
                cls_num = cls_num + (o_t * cls_bce).sum()
            anchors = g.anchors_grid[level].to(s.device)
            ciou = bbox_ciou(decode_cell_boxes(s, anchors).reshape(-1, 4), decode_cell_boxes(t, anchors).reshape(-1, 4))
            box_num = box_num + (o_t.reshape(-1) * (1 - ciou)).sum()
            weight_sum = weight_sum + o_t.sum()
        weight_sum = weight_sum.clamp(min=1e-6)
        return g.box_gain * box_num / weight_sum + g.obj_gain * lobj + g.cls_gain * cls_num / weight_sum
