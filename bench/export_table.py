"""Table 5.1 of the reference thesis on this machine: every export format of one student, timed and scored.

For each resolution (default 128 and 96 px; the embedded default is 128) the student is exported
to every format, each file is timed through its board runtime (median of the per-round medians,
rounds interleaved across files so drift hits all alike) and scored with COCO mAP on the val split.
Then the targets are checked: ONNX Runtime static int8 >= 1.5x faster than its fp32 with <= 1.5
mAP points lost, TFLite full int8 >= 2x faster than TFLite float32, int8 files <= 0.3x fp32 size.

Without `--checkpoint` a default YOLO-n student is trained on the embedded data set first (cached
under EDGESWEEP_CACHE/bench; about 10-15 minutes on 2 CPU cores).
Run: `.venv/bin/python bench/export_table.py [--checkpoint last.pt] [--sizes 128,96]`.
"""
from __future__ import annotations

import argparse
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from detection.coco import CocoDataset  # noqa: E402
from detection.letterbox import letterbox, to_input  # noqa: E402
from device_actors.accuracy import evaluate_artifact  # noqa: E402
from device_actors.runtimes import RuntimeOptions, get_runtime  # noqa: E402
from device_actors.timing import TimingProtocol, time_call  # noqa: E402
from orchestrator.console import console, progress, stdout, table  # noqa: E402
from orchestrator.datasets import cache_dir, embedded_default, splits_in  # noqa: E402
from trainables.export import FORMATS, Artifact, export_formats  # noqa: E402

FLOAT_BASELINE = {"onnxruntime": "onnx", "tflite": "tflite"}  # per engine: the fp32 format compared against


@dataclass(frozen=True)
class Measured:
    artifact: Artifact
    median_ms: float
    map50_95: float
    map50: float


def train_default_student(data_root: Path, epochs: int) -> Path:
    """The bench's own YOLO-n, trained once on the embedded set and reused from the model cache
    (keyed by model, data and training config, like a teacher)."""
    from trainables.kd.teachers import ensure_teacher
    from trainables.hyper import TrainConfig

    splits = splits_in(data_root)
    train, val = CocoDataset(splits.train), CocoDataset(splits.val)
    console.print(f"the default YOLO-n student, {epochs} epochs (trained once, then cached under {cache_dir()})")
    with progress() as bar:
        task = bar.add_task("training", total=epochs, info="")
        return ensure_teacher("n", train, val, TrainConfig(epochs=epochs, img_size=128), cache_dir(),
                              on_epoch=lambda r, _: bar.update(
                                  task, completed=r.epoch, info=f"mAP {r.metrics['map50_95']:.3f}" if r.metrics else ""))


def measure(artifacts: list[Artifact], val: CocoDataset, *, threads: int, protocol: TimingProtocol,
            rounds: int, options: list[RuntimeOptions] | None = None) -> list[Measured]:
    """Time (interleaved rounds) and score each artifact; `options` gives each its own runtime options
    (the same file with and without a delegate), else all run with `threads`."""
    per_artifact = options or [RuntimeOptions(threads=threads)] * len(artifacts)
    sessions = [get_runtime(a.runtime).load(a.read_bytes(), o) for a, o in zip(artifacts, per_artifact)]
    frame = val.load_image(0)
    inputs = [to_input(letterbox(frame, s.input_hw[0])[0]) for s in sessions]
    medians: list[list[float]] = [[] for _ in artifacts]
    with progress() as bar:
        timing = bar.add_task("timing rounds", total=rounds * len(artifacts), info="")
        for _ in range(rounds):
            for i, (artifact, session, image) in enumerate(zip(artifacts, sessions, inputs)):
                bar.update(timing, info=f"{artifact.format} {artifact.img_size}px")
                stats, _ = time_call(lambda: session.run(image), protocol)
                medians[i].append(stats.median_ms)
                bar.advance(timing)
        scoring = bar.add_task("mAP", total=len(artifacts), info="")
        measured = []
        for artifact, times, artifact_options in zip(artifacts, medians, per_artifact):
            bar.update(scoring, info=f"{artifact.format} {artifact.img_size}px")
            metrics = evaluate_artifact(artifact.read_bytes(), artifact.runtime, val, options=artifact_options).metrics
            measured.append(Measured(artifact, statistics.median(times), metrics.map50_95, metrics.map50))
            bar.advance(scoring)
    return measured


def rows_and_checks(measured: list[Measured]) -> tuple[list[list[object]], list[list[object]]]:
    by_key = {(m.artifact.format, m.artifact.img_size): m for m in measured}
    rows, checks = [], []
    for m in measured:
        a = m.artifact
        base = by_key.get((FLOAT_BASELINE[a.runtime], a.img_size))
        speedup = base.median_ms / m.median_ms if base else float("nan")
        size_ratio = a.size_mb / base.artifact.size_mb if base else float("nan")
        delta = 100 * (m.map50_95 - base.map50_95) if base else float("nan")
        rows.append([a.format, f"{a.img_size}px", a.runtime, m.median_ms, 1000 / m.median_ms, f"{speedup:.2f}x",
                     m.map50_95, f"{delta:+.2f}", m.map50, a.size_mb, f"{size_ratio:.2f}x"])
        if a.format == "onnx-int8" and base:
            checks.append([f"ORT int8 vs fp32 @{a.img_size}px", "speedup >= 1.5x", f"{speedup:.2f}x", speedup >= 1.5])
            checks.append([f"ORT int8 vs fp32 @{a.img_size}px", "mAP loss <= 1.5 pts", f"{-delta:.2f}", -delta <= 1.5])
        if a.format == "tflite-int8" and base:
            checks.append([f"TFLite int8 vs fp32 @{a.img_size}px", "speedup >= 2x", f"{speedup:.2f}x", speedup >= 2.0])
        if a.format.endswith("-int8") and base:
            checks.append([f"{a.format} size @{a.img_size}px", "<= 0.3x fp32", f"{size_ratio:.3f}x", size_ratio <= 0.3])
    return rows, [[*c[:3], "PASS" if c[3] else "FAIL"] for c in checks]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", type=Path, default=None, help="student to export (default: train one)")
    p.add_argument("--data", type=Path, default=None, help="COCO-format directory (default: the embedded set)")
    p.add_argument("--sizes", default="128,96", help="comma-separated input sizes, multiples of 32")
    p.add_argument("--formats", default="all", help="comma-separated format names, or 'all'")
    p.add_argument("--val-subset", type=int, default=None, help="seeded subset of val images (default: all)")
    p.add_argument("--calib-images", type=int, default=64)
    p.add_argument("--calib-method", default="minmax")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--rounds", type=int, default=3, help="interleaved timing rounds per file")
    p.add_argument("--min-seconds", type=float, default=1.0, help="timed duration per file and round")
    p.add_argument("--epochs", type=int, default=10, help="epochs for the default student (the trainer's default)")
    p.add_argument("--out", type=Path, default=Path("runs/bench/export_table"))
    args = p.parse_args()

    data_root = args.data or embedded_default()
    checkpoint = args.checkpoint or train_default_student(data_root, args.epochs)
    splits = splits_in(data_root, val_subset=args.val_subset)
    train, val = CocoDataset(splits.train), CocoDataset(splits.val)
    formats = list(FORMATS.names()) if args.formats == "all" else [f.strip() for f in args.formats.split(",")]
    protocol = TimingProtocol(min_seconds=args.min_seconds)
    artifacts: list[Artifact] = []
    for size in (int(s) for s in args.sizes.split(",")):
        console.print(f"exporting {len(formats)} formats at {size}px")
        artifacts += export_formats(checkpoint, formats, args.out / f"{size}px", img_size=size, calibration=train,
                                    calib_images=args.calib_images, calib_method=args.calib_method)
    measured = measure(artifacts, val, threads=args.threads, protocol=protocol, rounds=args.rounds)
    rows, checks = rows_and_checks(measured)
    engines = ", ".join(sorted({f"{a.runtime} {get_runtime(a.runtime).version()}" for a in artifacts}))
    width = None if stdout.is_terminal else 140
    stdout.print(table(f"{checkpoint}: {len(val)} val images, {args.threads} thread(s), {engines}; speedup, "
                       f"ΔmAP (points) and size ratio against the same engine's fp32",
                       ["name", "resolution", "engine", "latency ms", "FPS", "speedup", "mAP@.5:.95", "ΔmAP",
                        "mAP@.5", "size MB", "size ratio"], rows), width=width)
    stdout.print(table("Targets", ["check", "target", "measured", "result"], checks), width=width)
    return 0


if __name__ == "__main__":
    sys.exit(main())
