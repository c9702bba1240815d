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
from trainables.export.formats import Intermediates
from trainables.export.graph import ExportGraph
from trainables.export.registry import ArtifactFormat, get_format
from trainables.export.tflite import require_tflite_tools
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
    if any(fmt.runtime == "tflite" for fmt in resolved):
        require_tflite_tools()
    return resolved


def export_formats(checkpoint: Path, formats: Sequence[str], out_dir: Path, *, img_size: int,
                   calibration: "CocoDataset | None" = None, calib_images: int = 64, calib_method: str = "minmax",
                   calib_seed: int = 0, expect: ModelSpec | None = None,
                   progress: ExportProgress | None = None) -> list[Artifact]:
    """Export the checkpoint's inference weights to each format in `formats`, in that order.

    `calibration` is the training split; `calib_images` of its images (seeded by `calib_seed`)
    calibrate the static int8 formats. With `expect`, a checkpoint of another architecture is
    refused. Files land in `out_dir` as `<format>-<img_size>px.<suffix>`.
    """
    resolved = _resolve(formats, calibration, calib_images, calib_method)
    problem = img_size_problem(img_size)
    if problem:
        raise ExportError(f"img_size {problem}")
    graph = ExportGraph(load_model(Path(checkpoint), expect=expect), img_size)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    artifacts: list[Artifact] = []
    with tempfile.TemporaryDirectory(prefix="edgesweep-export-") as tmp:
        ctx = Intermediates(graph, Path(tmp), calibration=calibration, calib_images=calib_images,
                            calib_method=calib_method, calib_seed=calib_seed)
        for done, fmt in enumerate(resolved, start=1):
            started = time.perf_counter()
            staged = Path(tmp) / artifact_filename(fmt, img_size)
            settings = fmt.build(ctx, staged)
            final = out_dir / staged.name
            shutil.move(staged, final)  # only complete files reach out_dir
            artifact = describe(final, format=fmt.name, runtime=fmt.runtime, img_size=img_size,
                                settings={"checkpoint": str(checkpoint), **settings})
            artifacts.append(artifact)
            log.info("%s: %s (%.2f MB) in %.1f s", fmt.name, final, artifact.size_mb, time.perf_counter() - started)
            if progress is not None:
                progress(fmt.name, done, len(resolved))
    return artifacts
