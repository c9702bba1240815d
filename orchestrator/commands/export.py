"""`export`: export a checkpoint to ONNX/TFLite variants, then time and score every file.

Prints the reference thesis's Table 5.1 layout (name, resolution, engine, latency, FPS, mAP, size)
for this machine. Latency and accuracy are measured on the exported files through the board's
runtimes (`device_actors`), so the numbers describe what the board would run.
"""
from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from device_actors.runtimes.base import RuntimeOptions
from orchestrator.commands.train import add_data_args
from orchestrator.datasets import DataConfig
from trainables.export.registry import ExportKnobs
from trainables.hyper import MAX_PRUNE_RATIO, TrainKnobs

if TYPE_CHECKING:
    from rich.table import Table

    from detection.coco import CocoDataset
    from detection.cocoeval import EvalResult
    from device_actors.runtimes import RuntimeOptions
    from device_actors.timing import LatencyStats, TimingProtocol
    from trainables.export import Artifact
    from trainables.prune import PrunedCheckpoint

TABLE_WIDTH_WHEN_PIPED = 120
TABLE_COLUMNS = ["name", "resolution", "engine", "latency ms", "FPS", "mAP@.5:.95", "mAP@.5", "size MB"]
# The reference thesis's exporter options (prune-u, prune-ug, prune-s): flag -> (kind, highest ratio, what it
# changes). None fine-tunes: a sweep's prune_ratio knob prunes and then trains.
PRUNING_FLAGS = {
    "--prune-unstructured": ("unstructured", 1.0, "L1 unstructured, per layer: that share of every convolution's "
                             "weights set to zero. Shapes, parameters and MACs stay, so a dense runtime (ONNX "
                             "Runtime, LiteRT) runs no faster; only a compressed file (gzip) gets smaller."),
    "--prune-global": ("global", 1.0, "L1 unstructured, global: the smallest weights of all convolutions together "
                       "set to zero (layers lose different shares). As per layer: smaller when compressed, not "
                       "faster when dense."),
    "--prune-structured": ("structured", MAX_PRUNE_RATIO, "L1 structured, by channel (Torch-Pruning; the head's "
                           "output convolutions keep theirs): that share of every layer's channels removed, so "
                           "fewer parameters and MACs, and smaller, faster files."),
}


@dataclass(frozen=True)
class ArtifactReport:
    """One row of the table: an exported file with its measured latency and accuracy."""

    artifact: "Artifact"
    latency: "LatencyStats"
    accuracy: "EvalResult"

    def row(self) -> list[object]:
        a, m = self.artifact, self.accuracy.metrics
        return [a.format, f"{a.img_size}px", a.runtime, self.latency.median_ms, self.latency.fps,
                m.map50_95, m.map50, a.size_mb]


def time_and_score(artifact: "Artifact", val_data: "CocoDataset", *, options: "RuntimeOptions",
                   protocol: "TimingProtocol",
                   progress: Callable[[int, int], None] | None = None) -> ArtifactReport:
    """Median latency of one inference on a real val image, then COCO mAP on `val_data`."""
    from detection.letterbox import letterbox, to_input
    from device_actors.accuracy import evaluate_artifact
    from device_actors.runtimes import get_runtime
    from device_actors.timing import time_call

    model = artifact.read_bytes()
    session = get_runtime(artifact.runtime).load(model, options)
    image = to_input(letterbox(val_data.load_image(0), session.input_hw[0])[0])
    latency, _ = time_call(lambda: session.run(image), protocol)
    accuracy = evaluate_artifact(model, artifact.runtime, val_data, options=options, progress=progress)
    return ArtifactReport(artifact=artifact, latency=latency, accuracy=accuracy)


def parse_formats(text: str) -> list[str]:
    """'onnx, onnx-int8' -> ['onnx', 'onnx-int8']; 'all' -> every registered format. Unknown names
    fail here, before the data set is loaded."""
    from trainables.export import FORMATS, ExportError, get_format

    names = [name.strip() for name in text.split(",") if name.strip()]
    if names == ["all"]:
        return list(FORMATS.names())
    if not names:
        raise ExportError(f"--formats is empty; known formats: {', '.join(FORMATS.names())} (or 'all')")
    return [get_format(name).name for name in names]


def add_parser(sub) -> None:
    p = sub.add_parser("export", help="export a checkpoint to ONNX/TFLite (float and quantized), "
                                      "then time and score every file")
    p.add_argument("--checkpoint", type=Path, required=True)
    p.add_argument("--formats", default="all",
                   help="comma-separated: onnx, onnx-fp16, onnx-dynamic, onnx-int8, tflite, tflite-fp16, "
                        "tflite-dynamic, tflite-int8; or 'all'")
    add_data_args(p)
    p.add_argument("--img-size", type=int, default=TrainKnobs.img_size, help="fixed input size of the exported models")
    p.add_argument("--calib-images", type=int, default=DataConfig.calibration_images,
                   help="training images that calibrate int8 formats")
    p.add_argument("--calib-method", default="minmax", help="minmax, percentile or entropy (ONNX); TFLite: minmax")
    add_shape_args(p)
    p.add_argument("--qat-epochs", type=int, default=1, help="qat formats: epochs of fake-quantized fine-tuning on the "
                   "training split (default 1)")
    p.add_argument("--max-map-drop", type=float, default=ExportKnobs.max_map_drop,
                   help="onnx-int8-mixed: mAP@.5:.95 it may lose on training images; sensitive convs stay float until "
                        f"it does (default {ExportKnobs.max_map_drop})")
    p.add_argument("--threads", type=int, default=RuntimeOptions.threads, help="runtime threads for timing and evaluation")
    p.add_argument("--latency-seconds", type=float, default=2.0, help="minimum timed duration per model")
    p.add_argument("--out", type=Path, default=None, help="output directory (default runs/export/<run>-<size>px)")
    pruning = p.add_mutually_exclusive_group()
    for flag, (_, highest, effect) in PRUNING_FLAGS.items():
        pruning.add_argument(flag, type=float, metavar="R", help=f"prune first, R in (0, {highest:g}): {effect}")
    p.set_defaults(run=run)


def add_shape_args(p: argparse.ArgumentParser) -> None:
    """The NPU knobs (`ExportKnobs`' int8_granularity, int8_io, decode, outputs) as flags, with their choices and defaults."""
    from common.knobs import declared_knobs
    from trainables.export.registry import SHAPE_KNOBS, ExportKnobs

    for knob in (k for k in declared_knobs(ExportKnobs) if k.name in SHAPE_KNOBS):
        p.add_argument(f"--{knob.name.replace('_', '-')}", default=knob.default, choices=knob.allowed_values(),
                       help=f"{knob.doc} (default {knob.default})")


def run(args: argparse.Namespace) -> int:
    from device_actors.runtimes import RuntimeOptions, get_runtime
    from device_actors.timing import TimingProtocol
    from orchestrator._knobs import check_flag
    from orchestrator.commands.train import load_data
    from orchestrator.stages import training_images_accuracy
    from orchestrator.console import console, progress, table
    from trainables.checkpoint import checkpoint_spec, load_checkpoint
    from trainables.export import ExportError, export_formats
    from trainables.export.registry import SHAPE_KNOBS, ArtifactShape
    from trainables.prune import prune_checkpoint

    formats = parse_formats(args.formats)
    if args.threads < 1:
        raise ExportError(f"--threads must be >= 1, got {args.threads}")
    pruning = _pruning(args)  # a bad ratio fails before the data set is read
    train_data, val_data = load_data(args)
    spec = checkpoint_spec(load_checkpoint(args.checkpoint))
    if spec.num_classes != val_data.num_classes:
        raise ExportError(f"{args.checkpoint} predicts {spec.num_classes} classes; the data set "
                          f"{val_data.spec.annotations} has {val_data.num_classes}")
    out = args.out or Path("runs/export") / f"{args.checkpoint.resolve().parent.name}-{args.img_size}px"
    checkpoint = args.checkpoint
    if pruning is not None:
        flag, ratio = pruning
        pruned = prune_checkpoint(args.checkpoint, out / f"{args.checkpoint.stem}-{flag[2:]}-{ratio:g}.pt",
                                  kind=PRUNING_FLAGS[flag][0], ratio=ratio, img_size=args.img_size)
        _print(pruning_table(pruned, flag, ratio))
        checkpoint, spec = pruned.path, checkpoint_spec(load_checkpoint(pruned.path))
    options = RuntimeOptions(threads=args.threads)
    protocol = TimingProtocol(min_seconds=args.latency_seconds)
    reports: list[ArtifactReport] = []
    with progress() as bar:
        exporting = bar.add_task("exporting", total=len(formats), info="")
        artifacts = export_formats(
            checkpoint, formats, out, img_size=args.img_size, calibration=train_data,
            calib_images=args.calib_images, calib_method=args.calib_method,
            shape=ArtifactShape(**{name: getattr(args, name) for name in SHAPE_KNOBS}),
            qat_epochs=_qat_epochs(args.qat_epochs),
            max_map_drop=check_flag("max_map_drop", args.max_map_drop, "--max-map-drop"),
            accuracy=training_images_accuracy(train_data),
            progress=lambda name, done, total: bar.update(exporting, completed=done, info=name))
        measuring = bar.add_task("timing + mAP", total=len(artifacts), info="")
        images = bar.add_task("images", total=len(val_data), info="")
        for done, artifact in enumerate(artifacts, start=1):
            bar.update(measuring, info=artifact.format)
            reports.append(time_and_score(
                artifact, val_data, options=options, protocol=protocol,
                progress=lambda i, total: bar.update(images, completed=i, total=total)))
            bar.update(measuring, completed=done)
    engines = ", ".join(sorted({f"{a.runtime} {get_runtime(a.runtime).version()}" for a in artifacts}))
    _print(table(f"{spec.describe()} from {checkpoint}: {len(val_data)} val images, {args.threads} thread(s), "
                 f"{engines}", TABLE_COLUMNS, [r.row() for r in reports]))
    console.print(f"artifacts in {out}")
    return 0


def _qat_epochs(value: int) -> int:
    """--qat-epochs checked as the sweep's qat_epochs knob, whose 0 (a trial's epochs) has no meaning here."""
    from orchestrator._knobs import check_flag
    from trainables.export import ExportError

    if check_flag("qat_epochs", value, "--qat-epochs") == 0:
        raise ExportError("--qat-epochs must be >= 1 (0 means a sweep trial's own epochs)")
    return value


def _print(results: "Table") -> None:
    from orchestrator.console import stdout

    # Piped output has no terminal width; rich would assume 80 columns and cut format names short.
    stdout.print(results, width=None if stdout.is_terminal else TABLE_WIDTH_WHEN_PIPED)


def _pruning(args: argparse.Namespace) -> tuple[str, float] | None:
    """The pruning flag given (at most one: argparse sees to it) and its ratio, checked."""
    from trainables.export import ExportError

    for flag, (_, highest, _) in PRUNING_FLAGS.items():
        ratio = getattr(args, flag[2:].replace("-", "_"))
        if ratio is None:
            continue
        if not 0 < ratio < highest:
            raise ExportError(f"{flag}: must be a share in (0, {highest:g}), got {ratio:g}")
        return flag, ratio
    return None


def pruning_table(pruned: "PrunedCheckpoint", flag: str, ratio: float) -> "Table":
    """What the pruning changed, measured on the model: parameters, non-zero weights, MACs, gzipped weights."""
    from orchestrator.console import table

    b, a = pruned.before, pruned.after
    rows = [[name, before, after, f"{after / before - 1:+.1%}"] for name, before, after in (
        ("parameters", b.parameters, a.parameters), ("non-zero parameters", b.nonzero, a.nonzero),
        ("MACs per image", b.macs, a.macs),
        ("float32 weights, gzip MB", b.weights_gzip_bytes / 1e6, a.weights_gzip_bytes / 1e6))]
    return table(f"{flag} {ratio:g}: {PRUNING_FLAGS[flag][2]} Not fine-tuned; wrote {pruned.path}",
                 ["model", "before", "after", "change"], rows)
