"""One entry point: a checkpoint in, every requested artifact out, each with size and hash."""
from __future__ import annotations

import logging
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from detection.anchors import img_size_problem
from trainables.checkpoint import load_model
from trainables.export.artifact import Artifact, ExportError, describe
from trainables.export.calibration import check_count
from trainables.export.formats import Accuracy, Intermediates
from trainables.export.graph import ExportGraph
from trainables.export.onnx_export import describe_onnx
from trainables.export.registry import FORMATS, ArtifactFormat, ArtifactShape, ExportKnobs, get_format
from trainables.export.tflite_io import finish_tflite
from trainables.models.yolo import ModelSpec

if TYPE_CHECKING:
    from detection.coco import CocoDataset

log = logging.getLogger(__name__)

ExportProgress = Callable[[str, int, int], None]  # (format just finished, done, total)


def artifact_filename(fmt: ArtifactFormat, img_size: int) -> str:
    return f"{fmt.name}-{img_size}px{fmt.suffix}"


def _resolve(formats: Sequence[str], calibration: "CocoDataset | None", calib_images: int,
             calib_method: str) -> list[ArtifactFormat]:
    """Check every argument before any slow step, so a typo fails in milliseconds, not after a conversion."""
    if isinstance(formats, str):
        raise ExportError(f"formats must be a list of names, got the string {formats!r}")
    if not formats:
        raise ExportError("no export formats requested")
    resolved = [get_format(name) for name in dict.fromkeys(formats)]  # de-duplicated, order kept
    for fmt in resolved:
        if not fmt.needs_calibration:
            continue
        if calib_method not in fmt.calib_methods:
            raise ExportError(f"format {fmt.name} supports calib_method {', '.join(fmt.calib_methods)}; "
                              f"got {calib_method!r}")
        if calibration is None:
            raise ExportError(f"format {fmt.name} needs calibration images: pass the training split as `calibration`")
        check_count(calibration, calib_images)
    for fmt in resolved:
        fmt.check_tools()
    return resolved


def export_formats(checkpoint: Path, formats: Sequence[str], out_dir: Path, *, img_size: int,
                   calibration: "CocoDataset | None" = None, calib_images: int = 64, calib_method: str = "minmax",
                   calib_seed: int = 0, expect: ModelSpec | None = None, shape: ArtifactShape = ArtifactShape(),
                   qat_epochs: int = 1, max_map_drop: float = ExportKnobs.max_map_drop, accuracy: "Accuracy | None" = None,
                   progress: ExportProgress | None = None) -> list[Artifact]:
    """Export the checkpoint's inference weights to each format in `formats`, in that order.

    `calibration` is the training split; `calib_images` of its images (seeded by `calib_seed`)
    calibrate the static int8 formats. With `expect`, a checkpoint of another architecture is
    refused. `shape` holds the NPU knobs, each read by the formats that take it. `qat_epochs` is the
    QAT formats' fine-tuning (on `calibration`); `max_map_drop` int8-mixed's bound, which `accuracy`
    (an ONNX file's mAP on training images) measures. Files land in
    `out_dir` as `<format>-<img_size>px.<suffix>`.
    """
    resolved = _resolve(formats, calibration, calib_images, calib_method)
    for fmt in resolved:
        shape.for_format(fmt)  # a knob value the format cannot write fails before any slow step
    problem = img_size_problem(img_size)
    if problem:
        raise ExportError(f"img_size {problem}")
    graph = ExportGraph(load_model(Path(checkpoint), expect=expect), img_size)
    with tempfile.TemporaryDirectory(prefix="edgesweep-export-") as tmp:
        ctx = Intermediates(graph, Path(tmp), calibration=calibration, calib_images=calib_images,
                            calib_method=calib_method, calib_seed=calib_seed, shape=shape, qat_epochs=qat_epochs,
                            max_map_drop=max_map_drop, accuracy=accuracy)
        return _build(ctx, resolved, Path(out_dir), str(checkpoint), progress)


def export_onnx_model(model: Path, formats: Sequence[str], out_dir: Path, *, layout: str, num_classes: int,
                      img_size: int | None = None, calibration: "CocoDataset | None" = None, calib_images: int = 64,
                      calib_method: str = "minmax", calib_seed: int = 0,
                      progress: ExportProgress | None = None) -> list[Artifact]:
    """A user's ONNX detector (`layout` yolov5 or yolov8, see `trainables.export.onnx_model`) in each
    ONNX Runtime format of `formats`. Its input side is the file's; `img_size`, when given, must be it."""
    from trainables.export.onnx_model import normalised_onnx

    resolved = _resolve(formats, calibration, calib_images, calib_method)
    others = [f.name for f in resolved if not f.from_float_onnx]
    if others:
        onnx_formats = ", ".join(f.name for f in FORMATS.values() if f.from_float_onnx)
        raise ExportError(f"{model}: a user's ONNX model becomes only the formats built from a float ONNX "
                          f"({onnx_formats}), not {', '.join(others)}")
    with tempfile.TemporaryDirectory(prefix="edgesweep-export-") as tmp:
        float_onnx = Path(tmp) / "float32.onnx"
        side, settings = normalised_onnx(Path(model), float_onnx, layout=layout, num_classes=num_classes)
        if img_size is not None and img_size != side:
            raise ExportError(f"{model}: its input is {side} px, so img_size must be {side}, not {img_size}")
        ctx = Intermediates(None, Path(tmp), calibration=calibration, calib_images=calib_images,
                            calib_method=calib_method, calib_seed=calib_seed, img_size=side,
                            given_onnx=(float_onnx, {**settings, "img_size": side}))
        return _build(ctx, resolved, Path(out_dir), str(model), progress)


def _finish(view: Intermediates, fmt: ArtifactFormat, path: Path) -> dict:
    """Our graph's file states what its outputs hold (`detection.outputs`); a TFLite int8 one gets its
    integer interface here. A user's ONNX model is left as it is (one joined output). Returns the shape's settings."""
    if view.graph is None:
        return {}
    layout = view.graph.output_layout()
    if fmt.runtime == "tflite":
        finish_tflite(path, layout, io_type=view.shape.io_type)
    elif fmt.runtime == "onnxruntime":
        describe_onnx(path, layout)
    return view.shape.settings()


def _build(ctx: Intermediates, resolved: list[ArtifactFormat], out_dir: Path, source: str,
           progress: ExportProgress | None) -> list[Artifact]:
    """Each format's file from the shared intermediates, moved to `out_dir` once complete."""
    out_dir.mkdir(parents=True, exist_ok=True)
    img_size = ctx.img_size
    artifacts: list[Artifact] = []
    for done, fmt in enumerate(resolved, start=1):
        started = time.perf_counter()
        staged = ctx.work_dir / artifact_filename(fmt, img_size)
        view = ctx.for_format(fmt)
        settings = fmt.build(view, staged)
        settings.update(_finish(view, fmt, staged))
        final = out_dir / staged.name
        shutil.move(staged, final)  # only complete files reach out_dir
        artifact = describe(final, format=fmt.name, runtime=fmt.runtime, img_size=img_size,
                            settings={"checkpoint": source, **settings})
        artifacts.append(artifact)
        log.info("%s: %s (%.2f MB) in %.1f s", fmt.name, final, artifact.size_mb, time.perf_counter() - started)
        if progress is not None:
            progress(fmt.name, done, len(resolved))
    return artifacts
