"""Knowledge-distillation methods by name; `build_distiller` is the one way to make one.

    none     plain training (the baseline)
    output   Mehta & Ozturk 2018 output distillation, objectness-weighted, with Feature-Map NMS
    feature  Wang et al. 2019 fine-grained feature imitation on the neck outputs
    cwd      channel-wise distillation (Shu et al. 2021) on the neck outputs, cosine-decayed
    pkd      Pearson-correlation feature distillation (Cao et al. 2022) on the neck outputs
"""
from __future__ import annotations

import torch

from trainables.kd.base import Distiller, HeadGeometry, KDConfigError
from trainables.kd.cwd import CWDDistiller, PKDDistiller
from trainables.kd.feature import FeatureImitationDistiller
from trainables.kd.output import OutputDistiller
from trainables.loss import LossWeights
from trainables.models.yolo import YOLO, ModelSpec

KD_METHODS = ("none", "output", "feature", "cwd", "pkd")

__all__ = ["KD_METHODS", "Distiller", "KDConfigError", "build_distiller"]


def build_distiller(method: str, teacher: YOLO | None, student: ModelSpec, *, factor: float = 1.0,
                    img_size: int, loss_weights: LossWeights = LossWeights(), off_last_epochs: int = 0,
                    fm_nms: bool = True) -> Distiller | None:
    """The distiller for `method`, or None for "none". The teacher must share anchors and classes."""
    if method not in KD_METHODS:
        raise KDConfigError(f"unknown KD method {method!r}; known methods: {', '.join(KD_METHODS)}")
    if method == "none":
        return None
    if teacher is None:
        raise KDConfigError(f"KD method {method!r} needs a teacher")
    t = teacher.spec
    if t.num_classes != student.num_classes or t.anchors != student.anchors:
        raise KDConfigError(f"teacher YOLO-{t.size} ({t.num_classes} classes) does not match the student "
                            f"YOLO-{student.size} ({student.num_classes} classes): classes and anchors must be equal")
    common = {"factor": factor, "off_last_epochs": off_last_epochs}
    anchors_grid = torch.tensor(student.anchors, dtype=torch.float32) / torch.tensor(
        teacher.strides, dtype=torch.float32).view(-1, 1, 1)
    if method == "output":
        w = loss_weights.scaled(student.num_classes, img_size)
        geometry = HeadGeometry(anchors_grid=anchors_grid, box_gain=w.box, obj_gain=w.obj, cls_gain=w.cls)
        return OutputDistiller(teacher, geometry, fm_nms=fm_nms, **common)
    if method == "feature":
        return FeatureImitationDistiller(teacher, student.feature_channels, t.feature_channels, anchors_grid, **common)
    if method == "cwd":
        return CWDDistiller(teacher, student.feature_channels, t.feature_channels, decay=True, **common)
    return PKDDistiller(teacher, student.feature_channels, t.feature_channels, **common)
