"""What every distillation method shares: a frozen teacher, a factor, and a schedule.

The teacher is held outside the module tree on purpose: its weights are never trained, never
saved with the student's checkpoint and never exported. It runs in eval mode under no_grad, so its
BatchNorm statistics cannot drift during distillation (a bug of the public YOLOv5 KD fork).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from detection.errors import UserError


class KDConfigError(UserError, ValueError):
    """A distillation setting that cannot work (unknown method, teacher/student mismatch)."""


@dataclass(frozen=True)
class HeadGeometry:
    """What the output losses need to know about the detection head (identical for teacher and student)."""

    anchors_grid: torch.Tensor  # (levels, A, 2) anchors divided by their level's stride
    box_gain: float
    obj_gain: float
    cls_gain: float


class Distiller(nn.Module):
    """Base class: subclasses implement `distill(...)`; `forward` adds teacher, factor and schedule."""

    def __init__(self, teacher: nn.Module, *, factor: float = 1.0, off_last_epochs: int = 0,
                 decay: bool = False):
        super().__init__()
        teacher.eval()
        for p in teacher.parameters():
            p.requires_grad_(False)
        self.__dict__["teacher"] = teacher  # not a submodule: see the module docstring
        self.factor = factor
        self.off_last_epochs = off_last_epochs
        self.decay = decay

    def train(self, mode: bool = True) -> "Distiller":
        super().train(mode)
        self.teacher.eval()
        return self

    def to(self, *args, **kwargs) -> "Distiller":
        self.teacher.to(*args, **kwargs)
        return super().to(*args, **kwargs)

    def named_trainable_parameters(self):
        return ((n, p) for n, p in self.named_parameters() if p.requires_grad)

    def weight(self, epoch: int, epochs: int) -> float:
        """Distillation factor for this epoch: 0 in the last `off_last_epochs` epochs, else the
        factor, optionally cosine-decayed from 1x to 0.1x over the distillation epochs (DAMO-YOLO)."""
        active = epochs - self.off_last_epochs
        if epoch >= active:
            return 0.0
        if not self.decay:
            return self.factor
        return self.factor * (1 - 0.9 * (1 - math.cos(math.pi * epoch / max(active, 1))) / 2)

    def distill(self, s_raw: list[torch.Tensor], s_feats: list[torch.Tensor], t_raw: list[torch.Tensor],
                t_feats: list[torch.Tensor], targets: torch.Tensor) -> torch.Tensor:
        """Per-image distillation loss (scalar) before the factor; see subclasses for shapes."""
        raise NotImplementedError

    def forward(self, images: torch.Tensor, s_raw: list[torch.Tensor], s_feats: list[torch.Tensor],
                targets: torch.Tensor, *, epoch: int, epochs: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        w = self.weight(epoch, epochs)
        if w == 0.0:
            zero = images.new_zeros(())
            return zero, {"kd": zero}
        with torch.no_grad():
            t_raw, t_feats = self.teacher(images)
        loss = self.distill(s_raw, s_feats, t_raw, t_feats, targets)
        # Scaled by batch size like the detection loss, so the factor means the same at any batch size.
        return w * loss * images.shape[0], {"kd": loss.detach()}
