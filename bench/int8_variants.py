"""int8 that pays: quantization variants of one student per activation, timed and scored on this CPU.

Issue "Throughput at scale" item 3. ONNX Runtime's static int8 was 1.47x faster than fp32 at 128 px
here, short of 1.5x, because the x86 kernels fuse a float SiLU into one op while the int8 graph runs
it as two. This bench measures what could change that:

- the student's activation (`silu`, `relu`, `relu6`, `hardswish`; a sweep knob): one YOLO-n per
  activation, trained from scratch on the embedded default with the same seed and epochs;
- ONNX Runtime static int8 variants (`trainables.export.onnx_quant.quantize_onnx_static`): the sweep's
  QDQ uint8/int8 per-channel with a float stem, QOperator, per-tensor weights, `reduce_range`, a
  quantized stem, int8 activations; and the thesis's dynamic quantization;
- TFLite fp32 and full int8, each with and without XNNPACK (TFLite's default CPU delegate).

Every file is timed through its runtime (interleaved rounds, `bench/export_table.py`'s `measure`) and
scored with COCO mAP@.5:.95 on the val split. Rows say each variant's latency ratio against the same
activation's fp32 file in the same runtime and its mAP change in points; a last table compares each
activation's fastest int8 against SiLU's fp32 (what a user would ship before). Students are trained
once into --out and reused. Timings are only comparable within one run on an otherwise idle machine.

Run: `.venv/bin/python bench/int8_variants.py` (about 35 min on 2 cores: 4 students x 10 epochs, then
44 files) or `--activations silu,relu --epochs 5` for a shorter look.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from export_table import measure  # noqa: E402

from detection.coco import CocoDataset  # noqa: E402
from device_actors.runtimes import RuntimeOptions, get_runtime  # noqa: E402
from device_actors.sysinfo import INT8_SIMD, board_facts  # noqa: E402
from device_actors.timing import TimingProtocol  # noqa: E402
from orchestrator.console import console, progress, stdout, table  # noqa: E402
from orchestrator.datasets import embedded_default, splits_in  # noqa: E402
from trainables.export import Artifact, export_formats  # noqa: E402
from trainables.export.artifact import describe  # noqa: E402
from trainables.export.calibration import calibration_images  # noqa: E402
from trainables.export.onnx_quant import quantize_onnx_static  # noqa: E402
from trainables.models.family import ACTIVATIONS  # noqa: E402

# name -> quantize_onnx_static options; the first is what a sweep's onnx-int8 exports
ONNX_INT8 = {
    "QDQ u8s8 per-channel, float stem (sweep)": {},
    "QOperator": {"quant_format": "QOperator"},
    "per-tensor weights": {"per_channel": False},
    "reduce_range (7-bit weights)": {"reduce_range": True},
    "quantized stem": {"float_stem": False},
    "int8 activations (s8s8)": {"activation_type": "int8"},
}
HAS_TFLITE_TOOLS = all(importlib.util.find_spec(m) for m in ("litert_torch", "ai_edge_quantizer"))


@dataclass(frozen=True)
class Variant:
    activation: str
    name: str
    artifact: Artifact
    options: RuntimeOptions
    baseline: str  # the name of the fp32 variant it is compared against


def student_activations(p: argparse.ArgumentParser, text: str) -> list[str]:
    """--activations 'silu,relu6' as a list; an unknown name is a usage error listing the known ones."""
    activations = [a.strip() for a in text.split(",")]
    unknown = [a for a in activations if a not in ACTIVATIONS]
    if unknown:
        p.error(f"--activations: unknown {', '.join(unknown)}; known: {', '.join(ACTIVATIONS)}")
    return activations


def train_students(activations: list[str], train: CocoDataset, val: CocoDataset, epochs: int, out: Path,
                   threads: int) -> dict[str, Path]:
    """One YOLO-n per activation, same seed and schedule; a finished one is reused from `out`."""
    from trainables.hyper import TrainConfig, TrainKnobs
    from trainables.student import train_student

    checkpoints = {}
    with progress() as bar:
        for activation in activations:
            record = out / activation / "student.json"
            if record.exists():
                checkpoints[activation] = Path(json.loads(record.read_text())["checkpoint"])
                continue
            task = bar.add_task(f"YOLO-n {activation}", total=epochs, info="")
            result = train_student(TrainKnobs(activation=activation, epochs=epochs, img_size=128), train, val,
                                   out / activation / "train", base=TrainConfig(torch_threads=threads),
                                   on_epoch=lambda r, _c, t=task: bar.update(
                                       t, completed=r.epoch,
                                       info=f"mAP {r.metrics['map50_95']:.3f}" if r.metrics else ""))
            record.write_text(json.dumps({"checkpoint": str(result.checkpoint), "epochs": epochs,
                                          "val_map50_95": result.final_metrics.get("map50_95")}))
            checkpoints[activation] = Path(result.checkpoint)
    return checkpoints


def variants_of(activation: str, checkpoint: Path, train: CocoDataset, out: Path, *, calib_images: int,
                threads: int, tflite: bool) -> list[Variant]:
    here = out / activation / "artifacts"
    formats = ["onnx", "onnx-dynamic"] + (["tflite", "tflite-int8"] if tflite else [])
    made = {a.format: a for a in export_formats(checkpoint, formats, here, img_size=128, calibration=train,
                                                calib_images=calib_images)}
    plain, no_xnnpack = RuntimeOptions(threads=threads), RuntimeOptions(threads=threads, xnnpack=False)
    variants = [Variant(activation, "onnx fp32", made["onnx"], plain, "onnx fp32"),
                Variant(activation, "onnx dynamic (thesis)", made["onnx-dynamic"], plain, "onnx fp32")]
    images = calibration_images(train, count=calib_images, img_size=128)
    for i, (name, options) in enumerate(ONNX_INT8.items()):
        path = here / f"onnx-int8-variant{i}.onnx"
        settings = quantize_onnx_static(made["onnx"].path, path, images, **options)
        variants.append(Variant(activation, f"onnx int8: {name}",
                                describe(path, format=f"onnx-int8 {name}", runtime="onnxruntime", img_size=128,
                                         settings=settings), plain, "onnx fp32"))
    if tflite:
        variants += [Variant(activation, "tflite fp32", made["tflite"], plain, "tflite fp32"),
                     Variant(activation, "tflite fp32, no XNNPACK", made["tflite"], no_xnnpack, "tflite fp32"),
                     Variant(activation, "tflite int8", made["tflite-int8"], plain, "tflite fp32"),
                     Variant(activation, "tflite int8, no XNNPACK", made["tflite-int8"], no_xnnpack, "tflite fp32")]
    return variants


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--activations", default=",".join(ACTIVATIONS))
    p.add_argument("--epochs", type=int, default=10, help="training epochs of each student")
    p.add_argument("--val-subset", type=int, default=200, help="seeded subset of val images for mAP")
    p.add_argument("--calib-images", type=int, default=64)
    p.add_argument("--threads", type=int, default=1, help="inference threads (the board's default)")
    p.add_argument("--train-threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=3, help="interleaved timing rounds per file")
    p.add_argument("--min-seconds", type=float, default=1.0, help="timed duration per file and round")
    p.add_argument("--out", type=Path, default=Path("runs/bench/int8_variants"))
    args = p.parse_args()

    activations = student_activations(p, args.activations)
    splits = splits_in(embedded_default(), val_subset=args.val_subset)
    train, val = CocoDataset(splits.train), CocoDataset(splits.val)
    checkpoints = train_students(activations, train, CocoDataset(splits.val), args.epochs, args.out, args.train_threads)
    if not HAS_TFLITE_TOOLS:
        console.print("[yellow]TFLite converters (the `tflite` extra) missing: ONNX Runtime variants only[/yellow]")
    variants = [v for a in activations for v in variants_of(a, checkpoints[a], train, args.out,
                                                             calib_images=args.calib_images, threads=args.threads,
                                                             tflite=HAS_TFLITE_TOOLS)]
    measured = measure([v.artifact for v in variants], val, threads=args.threads,
                       protocol=TimingProtocol(min_seconds=args.min_seconds), rounds=args.rounds,
                       options=[v.options for v in variants])
    by_name = {(v.activation, v.name): m for v, m in zip(variants, measured)}
    rows = []
    for v, m in zip(variants, measured):
        base = by_name[(v.activation, v.baseline)]
        rows.append([v.activation, v.name, m.median_ms, f"{base.median_ms / m.median_ms:.2f}x", m.map50_95,
                     f"{100 * (m.map50_95 - base.map50_95):+.2f}", m.artifact.size_mb])
    engines = ", ".join(sorted({f"{a} {get_runtime(a).version()}" for a in ("onnxruntime", "tflite")
                                if get_runtime(a).available()}))
    facts = board_facts()
    stdout.print(table(f"{facts.cpu_model} x{facts.cores} (SIMD: {facts.simd or 'none of ' + '/'.join(INT8_SIMD)}). "
                       f"YOLO-n per activation, {args.epochs} epochs, 128 px, {len(val)} val images, "
                       f"{args.threads} inference thread(s), {engines}: speedup and ΔmAP (points) against the same "
                       f"activation's fp32 file in the same runtime",
                       ["activation", "variant", "latency ms", "speedup", "mAP@.5:.95", "ΔmAP", "size MB"], rows))
    reference = by_name.get(("silu", "onnx fp32"))
    if reference is not None:
        best = []
        for a in activations:
            int8 = [(v, m) for v, m in zip(variants, measured) if v.activation == a and "int8" in v.name]
            v, m = min(int8, key=lambda vm: vm[1].median_ms)
            best.append([a, v.name, m.median_ms, f"{reference.median_ms / m.median_ms:.2f}x", m.map50_95,
                         f"{100 * (m.map50_95 - reference.map50_95):+.2f}"])
        stdout.print(table(f"Each activation's fastest int8 file against SiLU's ONNX fp32 ({reference.median_ms:.2f} ms, "
                           f"mAP {reference.map50_95:.4f}): what switching activation buys",
                           ["activation", "fastest int8", "latency ms", "speedup vs silu fp32", "mAP@.5:.95",
                            "ΔmAP vs silu fp32"], best))
    rows_file = args.out / "results.jsonl"
    with rows_file.open("w") as f:
        for v, m in zip(variants, measured):
            f.write(json.dumps({"cpu": facts.cpu_model, "simd": facts.simd, "activation": v.activation,
                                "variant": v.name, "latency_ms": m.median_ms,
                                "map50_95": m.map50_95, "map50": m.map50, "size_mb": m.artifact.size_mb,
                                "xnnpack": v.options.xnnpack, "settings": m.artifact.settings}, default=str) + "\n")
    console.print(f"rows in {rows_file}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
