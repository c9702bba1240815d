"""Channel-wise distillation (Shu et al., ICCV 2021) on the P3-P5 neck outputs, the DAMO-YOLO and
RTMDet recipe; and PKD (Cao et al., NeurIPS 2022), its cheaper Pearson-correlation cousin.

CWD: a 1x1 conv aligns student channels to the teacher's; both sides are normalised by an
affine-free BatchNorm (batch statistics); each channel becomes a distribution over its H*W
locations (softmax at temperature tau) and the student matches the teacher's by KL divergence:

    L = tau^2 / (N * C) * sum_{n,c} KL(softmax(T_nc / tau) || softmax(S_nc / tau))

PKD: after the same alignment, both sides are standardised per channel over (N, H, W); the loss is
MSE / 2, i.e. 1 - Pearson correlation per channel.

Weights, per level (the levels' losses add up):
- CWD: 1 at tau 1, the YOLO recipe: mmyolo's RTMDet distillation configs
  (configs/rtmdet/distillation/kd_*_rtmdet_*_neck_300e_coco.py: ChannelWiseDivergence, loss_weight=1
  on each neck output) and DAMO-YOLO's (damo/base_models/losses/distill_loss.py: FeatureLoss,
  loss_weight=1.0, cosine-decayed to 0.1 over training). mmrazor's FPN configs for Faster R-CNN and
  RetinaNet use 10.
- PKD: 10, mmrazor's one-stage recipe (configs/distill/mmdet/pkd/pkd_fpn_retina_x101_retina_r50_2x_coco.py,
  the base of its FCOS and RepPoints configs: PKDLoss, loss_weight=10 on each FPN level); its
  Faster R-CNN and Mask R-CNN teachers use 6.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from trainables.kd.base import DistillContext, Distiller


def _normalise(x: torch.Tensor) -> torch.Tensor:
    return F.batch_norm(x, None, None, training=True, eps=1e-5)


def cwd_loss(s: torch.Tensor, t: torch.Tensor, tau: float = 1.0) -> torch.Tensor:
    """KL of per-channel spatial distributions; s, t: (N, C, H, W). Zero iff s == t up to a per-channel shift."""
    n, c = s.shape[:2]
    log_p_s = F.log_softmax(s.reshape(n * c, -1) / tau, dim=1)
    log_p_t = F.log_softmax(t.reshape(n * c, -1) / tau, dim=1)
    return (tau ** 2) * (log_p_t.exp() * (log_p_t - log_p_s)).sum() / (n * c)


def pkd_loss(s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """MSE of per-channel standardised features / 2; s, t: (N, C, H, W)."""
    return F.mse_loss(_normalise(s), _normalise(t)) / 2


class _AlignedFeatureDistiller(Distiller):
    def __init__(self, teacher, student_channels: tuple[int, ...], teacher_channels: tuple[int, ...], **kw):
        super().__init__(teacher, **kw)
        self.align = nn.ModuleList(nn.Conv2d(cs, ct, 1, bias=False) for cs, ct in zip(student_channels, teacher_channels))

    @classmethod
    def from_context(cls, ctx: DistillContext, **kw) -> "_AlignedFeatureDistiller":
        return cls(ctx.teacher, ctx.student.feature_channels, ctx.teacher_spec.feature_channels, **kw)

    def pair_loss(self, s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def distill(self, s_raw, s_feats, t_raw, t_feats, targets):
        loss = s_feats[0].new_zeros(())
        for s, t, align in zip(s_feats, t_feats, self.align):
            loss = loss + self.pair_loss(align(s), t)
        return loss


class CWDDistiller(_AlignedFeatureDistiller):
    reference_weight = 1.0  # per level: mmyolo RTMDet, DAMO-YOLO (see the module docstring)

    def __init__(self, *args, cwd_tau: float, **kw):
        super().__init__(*args, decay=True, **kw)  # cosine-decayed, as DAMO-YOLO does
        self.tau = cwd_tau

    def pair_loss(self, s, t):
        return cwd_loss(_normalise(s), _normalise(t), self.tau)


class PKDDistiller(_AlignedFeatureDistiller):
    reference_weight = 10.0  # per level: mmrazor's one-stage PKD configs (see the module docstring)

    def pair_loss(self, s, t):
        return pkd_loss(s, t)
