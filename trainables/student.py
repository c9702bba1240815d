"""The one training entry point of a trial: a student trained as its `TrainKnobs` say, distilled or not."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from detection.coco import CocoDataset
from trainables.checkpoint import checkpoint_spec, load_checkpoint, load_model
from trainables.hyper import TeacherSpec, TrainConfig, TrainKnobs
from trainables.kd import KDConfigError, build_distiller
from trainables.kd.teachers import ensure_teacher, teacher_config
from trainables.models.yolo import ModelSpec
from trainables.train import BatchCallback, EpochCallback, TrainResult, fit


def resolve_teacher(teacher: TeacherSpec, img_size: int, train_data: CocoDataset, val_data: CocoDataset | None,
                    base: TrainConfig, cache_dir: Path, **fit_kwargs) -> Path:
    """Checkpoint of a teacher: the given file, or a cached (trained now if needed) model size.

    `fit_kwargs` (progress callbacks) reach the teacher's training when it is not cached yet."""
    if teacher.checkpoint is not None:
        return Path(teacher.checkpoint)
    cfg = teacher_config(base, epochs=teacher.epochs, img_size=img_size, seed=0)
    return ensure_teacher(teacher.model, train_data, val_data, cfg, cache_dir, **fit_kwargs)


def train_student(knobs: TrainKnobs, train_data: CocoDataset, val_data: CocoDataset | None, out_dir: Path, *,
                  base: TrainConfig = TrainConfig(), teacher_checkpoint: Path | None = None,
                  on_batch: BatchCallback | None = None, on_epoch: EpochCallback | None = None) -> TrainResult:
    """Train one student under `base` (settings, device, threads); a distilling method needs the teacher's checkpoint."""
    spec = ModelSpec(knobs.student, train_data.num_classes, activation=knobs.activation)
    cfg = base.with_knobs(knobs)
    if cfg.init:  # a pretrained student keeps its anchors (an imported YOLOv5's may be evolved ones)
        spec = replace(spec, anchors=checkpoint_spec(load_checkpoint(Path(cfg.init))).anchors)
    teacher = None
    if knobs.distills:
        if teacher_checkpoint is None:
            raise KDConfigError(f"KD method {knobs.kd_method!r} needs a teacher checkpoint")
        teacher = load_model(teacher_checkpoint)
    distiller = build_distiller(knobs.kd_method, teacher, spec, img_size=knobs.img_size, seed=cfg.seed,
                                factor=knobs.kd_factor, off_last_epochs=knobs.kd_off_last_epochs,
                                loss_weights=cfg.loss, params=knobs.kd_params)
    return fit(spec, train_data, val_data, cfg, out_dir, distiller=distiller, on_batch=on_batch, on_epoch=on_epoch)
