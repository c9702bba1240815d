"""What every distillation method shares: a frozen teacher, a weight, a schedule, and how one is built.

The teacher is held outside the module tree on purpose: its weights are never trained, never
saved with the student's checkpoint and never exported. It runs in eval mode under no_grad, so its
BatchNorm statistics cannot drift during distillation (a bug of the public YOLOv5 KD fork).

Precision: the teacher's forward, the adapters and every KD loss run in float32 with autocast off,
even when the caller (the trainer) runs the student under bfloat16 or float16 autocast: the teacher
then predicts what its float32 mAP was measured on, and softmaxes and KL terms keep their precision.
`distill` receives the student's outputs cast to float32.

Weight: each method weighs its loss as its reference recipe does (`reference_weight`, with the
source named in the method's module docstring; a recipe's warm-up is `warmup_images`), and the
trial's `kd_factor` multiplies that weight: factor 1 is the recipe. Nothing is measured from loss
values: a method pulls as hard as its recipe's weight makes it, on every seed alike. The trainer
logs each epoch's `kd_to_detection`, the weighted KD loss over the detection loss, to show how
hard that is against the detection loss. (An earlier calibration scaled every method so that its
loss started as large as the detection loss; its buffers, `kd_scale` and `calibration`, are gone,
and a checkpoint that holds them is not resumed: see `CALIBRATION_BUFFERS`.)

A method's class implements `distill(...)` and `from_context(ctx, **common, **its_knobs)`;
`build_distiller` looks the class up in the registry, so nothing here names a method.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from trainables.hyper import LossWeights, TrainKnobs
from trainables.kd.registry import KDConfigError, kd_method
from trainables.models.yolo import YOLO, ModelSpec

DISTILLER_STREAM = 0x6B64  # "kd": the distiller's stream of a trial's seed (see distiller_seed)
# The dropped loss-value calibration's buffers: a checkpoint whose distiller state holds them was
# distilled with another weight, so resuming it would change the weight in the middle of the run.
CALIBRATION_BUFFERS = ("kd_scale", "calibration")


@dataclass(frozen=True)
class DistillContext:
    """What a method may need to know about the pair it distils (teacher and student share the head)."""

    teacher: nn.Module
    student: ModelSpec
    teacher_spec: ModelSpec
    anchors_grid: torch.Tensor  # (levels, A, 2) anchors divided by their level's stride
    img_size: int
    loss_weights: LossWeights  # the detection loss's gains, already scaled to classes and image size


class Distiller(nn.Module):
    """Base class: subclasses implement `distill(...)` and set their recipe's `reference_weight`
    (and `warmup_images`, if it has a warm-up); `forward` adds the teacher, the weight and the schedule."""

    reference_weight: float = 1.0  # the reference recipe's weight of `distill`'s loss; kd_factor multiplies it
    warmup_images: int = 0  # the recipe's warm-up: no distillation while the run has trained on fewer images

    def __init__(self, teacher: nn.Module, *, factor: float, off_last_epochs: int = 0, decay: bool = False):
        super().__init__()
        teacher.eval()
        for p in teacher.parameters():
            p.requires_grad_(False)
        self.__dict__["teacher"] = teacher  # not a submodule: see the module docstring
        self.factor = factor
        self.off_last_epochs = off_last_epochs
        self.decay = decay

    @classmethod
    def from_context(cls, ctx: DistillContext, *, factor: float, off_last_epochs: int, **knobs) -> "Distiller":
        """The method for this teacher/student pair; `knobs` are the method's own (see its registry entry)."""
        raise NotImplementedError

    def train(self, mode: bool = True) -> "Distiller":
        super().train(mode)
        self.teacher.eval()
        return self

    def to(self, *args, **kwargs) -> "Distiller":
        self.teacher.to(*args, **kwargs)
        return super().to(*args, **kwargs)

    def named_trainable_parameters(self):
        return ((n, p) for n, p in self.named_parameters() if p.requires_grad)

    def weight(self, epoch: int, epochs: int, *, seen: int) -> float:
        """The KD loss's weight for a batch of epoch `epoch` after `seen` training images: the factor
        times the recipe's weight, optionally cosine-decayed from 1x to 0.1x over the distillation
        epochs (DAMO-YOLO); 0 during the recipe's warm-up and in the last `off_last_epochs` epochs."""
        active = epochs - self.off_last_epochs
        if epoch >= active or seen < self.warmup_images:
            return 0.0
        weight = self.factor * self.reference_weight
        if not self.decay:
            return weight
        return weight * (1 - 0.9 * (1 - math.cos(math.pi * epoch / max(active, 1))) / 2)

    def distill(self, s_raw: list[torch.Tensor], s_feats: list[torch.Tensor], t_raw: list[torch.Tensor],
                t_feats: list[torch.Tensor], targets: torch.Tensor) -> torch.Tensor:
        """Per-image distillation loss (scalar) before the weight; zero when student and teacher agree.

        Every tensor is float32 and autocast is off (see the module docstring)."""
        raise NotImplementedError

    def forward(self, images: torch.Tensor, s_raw: list[torch.Tensor], s_feats: list[torch.Tensor],
                targets: torch.Tensor, *, epoch: int, epochs: int,
                seen: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The weighted KD loss (scaled by batch size, like the detection loss) and, as "kd", the
        per-image loss before the weight (0 where the weight is: the teacher does not run then);
        `seen`: the images the run trained on before this batch (for the recipe's warm-up)."""
        w = self.weight(epoch, epochs, seen=seen)
        if w == 0.0:
            zero = images.new_zeros(())
            return zero, {"kd": zero}
        with torch.autocast(device_type=images.device.type, enabled=False):
            with torch.no_grad():
                t_raw, t_feats = self.teacher(images.float())
            loss = self.distill([r.float() for r in s_raw], [f.float() for f in s_feats], t_raw, t_feats, targets)
        # Scaled by batch size like the detection loss, so the weight means the same at any batch size.
        return w * loss * images.shape[0], {"kd": loss.detach()}


def build_distiller(method: str, teacher: YOLO | None, student: ModelSpec, *, img_size: int,
                    seed: int = TrainKnobs.seed, factor: float = TrainKnobs.kd_factor,
                    off_last_epochs: int = TrainKnobs.kd_off_last_epochs, loss_weights: LossWeights = LossWeights(),
                    params: Mapping[str, object] | None = None, **knobs: object) -> Distiller | None:
    """The distiller of a registered `method`, or None for a method without a teacher ("none").

    The method's own knobs come as `params` (a trial's `TrainKnobs.kd_params`) or as keywords;
    unknown ones are refused. The teacher must share anchors and classes with the student.

    Whatever the method draws at random while it is built (its adaptation convs' initial weights)
    comes from `seed`, the trial's seed, not from torch's global generator: a trainer process that
    trained another trial before would otherwise hand this one other adapters (the global generator
    is left as it was)."""
    entry = kd_method(method)
    values = entry.params({**(params or {}), **knobs})
    if not entry.needs_teacher:
        return None
    if teacher is None:
        raise KDConfigError(f"KD method {method!r} needs a teacher")
    t = teacher.spec
    if t.num_classes != student.num_classes or t.anchors != student.anchors:
        raise KDConfigError(f"teacher YOLO-{t.size} ({t.num_classes} classes) does not match the student "
                            f"YOLO-{student.size} ({student.num_classes} classes): classes and anchors must be equal")
    anchors_grid = torch.tensor(student.anchors, dtype=torch.float32) / torch.tensor(
        teacher.strides, dtype=torch.float32).view(-1, 1, 1)
    ctx = DistillContext(teacher=teacher, student=student, teacher_spec=t, anchors_grid=anchors_grid,
                         img_size=img_size, loss_weights=loss_weights.scaled(student.num_classes, img_size))
    with torch.random.fork_rng(devices=[]):  # the adapters are built on the CPU; the global state is restored
        torch.manual_seed(distiller_seed(seed))
        return entry.load().from_context(ctx, factor=factor, off_last_epochs=off_last_epochs, **values)


def distiller_seed(seed: int) -> int:
    """The seed of a trial's distiller: derived from the trial's seed but another stream than the
    student's initialisation, which `fit` draws from `torch.manual_seed(seed)`."""
    return int(np.random.SeedSequence([seed, DISTILLER_STREAM]).generate_state(1, dtype=np.uint64)[0])
