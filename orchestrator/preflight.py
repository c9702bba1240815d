"""Checks of everything a sweep reads, run by the driver before it creates or starts anything.

`load_config` checks the file itself in milliseconds; this goes one step further and opens what the
file points at: the COCO splits (structure, boxes, categories, image headers, with the configured
`data.bad_images` policy) and every checkpoint a trial may load (`student.init`, teacher
`checkpoint:`), whose architecture must fit the students the sweep trains. Without it a broken
annotation file or a YOLO-s `init` for a YOLO-n student would only surface inside every trial,
after Ray, MLflow and the Tune state already exist. Errors are `UserError`s (exit status 2).
"""
from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

from detection.coco import CocoDataset, DatasetError
from orchestrator.config import SweepConfig
from orchestrator.datasets import data_splits
from orchestrator.errors import ConfigError
from trainables.export.registry import format_for
from trainables.hyper import SCRATCH, is_user_model
from trainables.kd.registry import distilling_methods

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DataSummary:
    """What the driver found in the data, for the sweep's opening lines."""

    train_images: int
    val_images: int
    skipped_images: int  # unreadable images left out under `data.bad_images: skip`
    num_classes: int
    digest: str = ""  # of both splits' annotations (the MLflow dataset input's digest)


def _open_split(cfg: SweepConfig, split: str, spec) -> CocoDataset:
    try:
        return CocoDataset(spec)
    except DatasetError as e:
        raise DatasetError(f"{cfg.source}: data.{split}: {e}") from None


def check_data(cfg: SweepConfig) -> DataSummary:
    """Open both splits as a training task would (the default set is generated here on first use)."""
    splits = data_splits(cfg.data, seed=cfg.seed)
    train = _open_split(cfg, "train", splits.train)
    val = _open_split(cfg, "val", splits.val)
    if train.category_ids != val.category_ids:
        raise DatasetError(f"{cfg.source}: data.val: the categories of {splits.val.annotations} (ids "
                           f"{val.category_ids}) differ from those of {splits.train.annotations} (ids "
                           f"{train.category_ids}); both splits must share one category list")
    calibrated = [f.name for f in _possible_formats(cfg) if f.needs_calibration]
    most = max(int(v) for v in cfg.search.possible_values("calib_images"))
    if calibrated and most > len(train):
        key = "calib_images" if "calib_images" in cfg.search.params or "calib_images" in cfg.search.fixed \
            else "data.calibration_images"
        raise DatasetError(f"{cfg.source}: {key}: {most} images calibrate the {', '.join(calibrated)} artifacts, but "
                           f"the train split has only {len(train)}; lower {key} to at most {len(train)}")
    digest = hashlib.sha256(f"{train.annotations_digest}:{val.annotations_digest}".encode()).hexdigest()[:16]
    return DataSummary(train_images=len(train), val_images=len(val), digest=digest,
                       skipped_images=len(train.skipped) + len(val.skipped), num_classes=train.num_classes)


def _possible_formats(cfg: SweepConfig):
    """Every artifact format some trial of the space may build."""
    return [format_for(r, q) for r in cfg.search.possible_values("runtime")
            for q in cfg.search.possible_values("quantization")]


def _checkpoints_to_check(cfg: SweepConfig) -> list[tuple[str, Path, str]]:
    """(key path, checkpoint, role) of every checkpoint some trial of the space may load."""
    out = []
    where = "search.student_init" if "student_init" in cfg.search.params else "student.init"
    for init in cfg.search.possible_values("student_init"):
        if init != SCRATCH and not is_user_model(init):  # a user's ONNX: check_user_onnx
            out.append((where, Path(init), "student"))
    if set(cfg.search.possible_values("kd_method")) & set(distilling_methods()):
        for name in cfg.search.possible_values("teacher"):
            teacher = cfg.teachers.get(name) if name is not None else None
            if teacher is not None and teacher.checkpoint is not None:
                out.append((f"teachers.{name}.checkpoint", Path(teacher.checkpoint), "teacher"))
    return out


def check_checkpoints(cfg: SweepConfig, num_classes: int) -> None:
    """Every `student.init` must be the very student it starts (size, classes, anchors) and every
    teacher checkpoint must share the students' classes and anchors (distillation needs both)."""
    wanted = _checkpoints_to_check(cfg)
    if not wanted:
        return
    # torch only when the sweep names a checkpoint; loading is weights_only (never runs pickled code)
    from trainables.checkpoint import CheckpointError, checkpoint_spec, load_checkpoint
    from trainables.models.yolo import ModelSpec

    students = [ModelSpec(size, num_classes) for size in cfg.search.possible_values("student")]
    specs = {}
    for key, path, role in wanted:
        try:
            specs[path] = checkpoint_spec(load_checkpoint(path))
        except CheckpointError as e:
            raise CheckpointError(f"{cfg.source}: {key}: {e}") from None
    # the students' anchors: the defaults, or those of their pretrained init (an imported YOLOv5's may differ)
    anchors = next((specs[p].anchors for _, p, role in wanted if role == "student"), students[0].anchors)
    for key, path, role in wanted:
        spec = specs[path]
        got = f"a YOLO-{spec.size} with {spec.num_classes} classes"
        if role == "student":
            for student in students:
                if (spec.size, spec.num_classes) != (student.size, student.num_classes):
                    raise CheckpointError(
                        f"{cfg.source}: {key}: {path} holds {got}, but trials train a YOLO-{student.size} with "
                        f"{student.num_classes} classes (the data's); give a checkpoint of that architecture or "
                        f"set student.model to {spec.size!r}")
            if spec.anchors != anchors:
                raise CheckpointError(f"{cfg.source}: {key}: {path} has other anchors than the sweep's first "
                                      f"student_init; students searched together must share anchors")
        elif spec.num_classes != num_classes or spec.anchors != anchors:
            other = " and other anchors" if spec.anchors != anchors else ""
            raise CheckpointError(
                f"{cfg.source}: {key}: {path} holds {got}{other}, but the students detect the data's "
                f"{num_classes} classes; a teacher must share classes and anchors with its students")
        log.info("%s: %s is %s, as the sweep needs", key, path, got)


def check_user_onnx(cfg: SweepConfig, num_classes: int) -> None:
    """A user's .onnx student_init must fit its declared `onnx_layout` for the data's classes, and
    every img_size of the space must be the file's input side."""
    from trainables.export.artifact import ExportError
    from trainables.export.onnx_model import check_onnx_model

    where = "search.student_init" if "student_init" in cfg.search.params else "student.init"
    for init in cfg.search.possible_values("student_init"):
        if not is_user_model(init):
            continue
        for layout in cfg.search.possible_values("onnx_layout"):
            try:
                side = check_onnx_model(Path(init), layout=layout, num_classes=num_classes)
            except ExportError as e:
                raise ExportError(f"{cfg.source}: {where}: {e}") from None
            sizes = sorted({int(v) for v in cfg.search.possible_values("img_size")})
            if sizes != [side]:
                raise ConfigError(f"{cfg.source}: img_size: {init} takes {side} px images, so img_size must be "
                                  f"fixed at {side} (the space has {', '.join(map(str, sizes))})")


def check_inputs(cfg: SweepConfig) -> DataSummary:
    """Data, then checkpoints and ONNX models (their class count comes from the data)."""
    summary = check_data(cfg)
    check_checkpoints(cfg, summary.num_classes)
    check_user_onnx(cfg, summary.num_classes)
    return summary
