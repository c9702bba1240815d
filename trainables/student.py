"""The one training entry point of a sweep trial: every KD knob is a plain value of `StudentKnobs`."""
from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from pathlib import Path

from detection.coco import CocoDataset
from trainables.checkpoint import load_model
from trainables.kd import build_distiller
from trainables.kd.teachers import ensure_teacher, teacher_config
from trainables.models.yolo import SIZES, ModelSpec
from trainables.train import BatchCallback, EpochCallback, TrainConfig, TrainResult, fit


@dataclass(frozen=True)
class StudentKnobs:
    student: str = "n"  # model size
    init: str = "scratch"  # "scratch" or a checkpoint path ("pretrained" student)
    freeze_backbone: bool = False
    epochs: int = 10
    img_size: int = 128
    kd_method: str = "none"  # see trainables.kd.KD_METHODS
    teacher: str | None = None  # a model size (trained once, cached) or a checkpoint path
    teacher_epochs: int = 30  # when the teacher is a model size
    kd_factor: float = 1.0
    kd_off_last_epochs: int = 0  # switch distillation off for the last K epochs
    fm_nms: bool = True  # Feature-Map NMS for output KD
    seed: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


def resolve_teacher(knobs: StudentKnobs, train_data: CocoDataset, val_data: CocoDataset | None,
                    base: TrainConfig, cache_dir: Path, **fit_kwargs) -> Path | None:
    """Checkpoint of the knobs' teacher: the given path, or a cached (trained if needed) model size.

    `fit_kwargs` (progress callbacks) reach the teacher's training when it is not cached yet."""
    if knobs.kd_method == "none" or knobs.teacher is None:
        return None
    if knobs.teacher in SIZES:
        cfg = teacher_config(base, epochs=knobs.teacher_epochs, img_size=knobs.img_size, seed=0)
        return ensure_teacher(knobs.teacher, train_data, val_data, cfg, cache_dir, **fit_kwargs)
    return Path(knobs.teacher)


def train_student(knobs: StudentKnobs, train_data: CocoDataset, val_data: CocoDataset | None, out_dir: Path, *,
                  base: TrainConfig = TrainConfig(), cache_dir: Path, teacher_checkpoint: Path | None = None,
                  on_batch: BatchCallback | None = None, on_epoch: EpochCallback | None = None) -> TrainResult:
    """Train one student as the knobs say; the teacher is trained first if it is not cached."""
    spec = ModelSpec(knobs.student, train_data.num_classes)
    cfg = replace(base, epochs=knobs.epochs, img_size=knobs.img_size, seed=knobs.seed,
                  init=None if knobs.init == "scratch" else knobs.init, freeze_backbone=knobs.freeze_backbone)
    teacher_ckpt = teacher_checkpoint or resolve_teacher(knobs, train_data, val_data, base, cache_dir)
    teacher = load_model(teacher_ckpt) if teacher_ckpt is not None and knobs.kd_method != "none" else None
    distiller = build_distiller(knobs.kd_method, teacher, spec, factor=knobs.kd_factor, img_size=knobs.img_size,
                                loss_weights=cfg.loss, off_last_epochs=knobs.kd_off_last_epochs,
                                fm_nms=knobs.fm_nms)
    return fit(spec, train_data, val_data, cfg, out_dir, distiller=distiller, on_batch=on_batch, on_epoch=on_epoch)
