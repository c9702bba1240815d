"""The one training entry point of a trial: a student trained as its `TrainKnobs` say, distilled or not."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch

from detection.coco import CocoDataset
from trainables.checkpoint import checkpoint_spec, load_checkpoint, load_model, save_checkpoint
from trainables.hyper import TeacherSpec, TrainConfig, TrainKnobs
from trainables.kd import KDConfigError, build_distiller
from trainables.kd.teachers import ensure_teacher, teacher_config
from trainables.models.yolo import ModelSpec
from trainables.train import BatchCallback, EpochCallback, TrainResult, fit, initial_model


def resolve_teacher(teacher: TeacherSpec, img_size: int, train_data: CocoDataset, val_data: CocoDataset | None,
                    base: TrainConfig, cache_dir: Path, **fit_kwargs) -> Path:
    """Checkpoint of a teacher: the given file, or a cached (trained now if needed) model size.

    `fit_kwargs` (progress callbacks) reach the teacher's training when it is not cached yet."""
    if teacher.checkpoint is not None:
        return Path(teacher.checkpoint)
    cfg = teacher_config(base, epochs=teacher.epochs, img_size=img_size, seed=0)
    return ensure_teacher(teacher.model, train_data, val_data, cfg, cache_dir, **fit_kwargs)


PRUNED_INIT = "pruned-init.pt"


def pruned_start(spec: ModelSpec, cfg: TrainConfig, knobs: TrainKnobs, out_dir: Path) -> tuple[ModelSpec, TrainConfig]:
    """The student's initial weights (student_init's, or the seeded random ones) pruned as `knobs` say,
    written to `out_dir` as the run's init; returns the pruned spec and the config that starts from it.
    A run resumed in the same directory reuses the file it wrote."""
    from trainables.prune import prune_channels  # Torch-Pruning loads only where a student is pruned

    path = out_dir / PRUNED_INIT
    recipe = {"ratio": knobs.prune_ratio, "method": knobs.prune_method, "init": cfg.init, "seed": cfg.seed,
              "img_size": cfg.img_size}
    if path.exists() and load_checkpoint(path).get("pruning") == recipe:
        return checkpoint_spec(load_checkpoint(path)), replace(cfg, init=str(path))
    torch.manual_seed(cfg.seed)  # as `fit` seeds before it builds a student from scratch
    model = prune_channels(initial_model(spec, cfg), ratio=knobs.prune_ratio, method=knobs.prune_method,
                           img_size=cfg.img_size)
    out_dir.mkdir(parents=True, exist_ok=True)
    save_checkpoint(path, {"model_spec": model.spec.to_dict(), "model": model.state_dict(), "pruning": recipe})
    return model.spec, replace(cfg, init=str(path))


def train_student(knobs: TrainKnobs, train_data: CocoDataset, val_data: CocoDataset | None, out_dir: Path, *,
                  base: TrainConfig = TrainConfig(), teacher_checkpoint: Path | None = None,
                  on_batch: BatchCallback | None = None, on_epoch: EpochCallback | None = None) -> TrainResult:
    """Train one student under `base` (settings, device, threads); a distilling method needs the teacher's checkpoint."""
    spec = ModelSpec(knobs.student, train_data.num_classes, activation=knobs.activation)
    cfg = base.with_knobs(knobs)
    if cfg.init:  # a pretrained student keeps its anchors (an imported YOLOv5's may be evolved ones) and widths
        init = checkpoint_spec(load_checkpoint(Path(cfg.init)))
        spec = replace(spec, anchors=init.anchors, channels=init.channels)
    if knobs.prune_ratio > 0:  # before the distiller: its adapters take the pruned student's channels
        spec, cfg = pruned_start(spec, cfg, knobs, Path(out_dir))
    teacher = None
    if knobs.distills:
        if teacher_checkpoint is None:
            raise KDConfigError(f"KD method {knobs.kd_method!r} needs a teacher checkpoint")
        teacher = load_model(teacher_checkpoint)
    distiller = build_distiller(knobs.kd_method, teacher, spec, img_size=knobs.img_size, seed=cfg.seed,
                                factor=knobs.kd_factor, off_last_epochs=knobs.kd_off_last_epochs,
                                loss_weights=cfg.loss, params=knobs.kd_params)
    return fit(spec, train_data, val_data, cfg, out_dir, distiller=distiller, on_batch=on_batch, on_epoch=on_epoch)
