"""The NPU knobs' price in accuracy: per-tensor against per-channel int8, per student activation.

Issue "The board's NPU", item 1. VeriSilicon NPUs (the i.MX8M Plus's) run per-tensor int8 and push
per-channel layers back to the CPU, so the question a user asks before flipping `int8_granularity`
is what per-tensor costs in mAP, and whether it costs more with SiLU than with ReLU6. For each
student (the demo's kind: YOLO-n at 128 px, trained by `bench/int8_variants.py`'s `train_students`
into the same --out, so both benches share them) this exports:

- ONNX Runtime int8 (`onnx-int8`) per-channel and per-tensor, against the student's float ONNX;
- TFLite int8 (`tflite-int8`) per-channel and per-tensor with today's CPU shape (NCHW int8 in,
  float decode tail), and both again in the NPU shape (`int8_io: nhwc-uint8`, `decode: host`);

scores every file through its runtime on the val split (x86 here; with --address, the same files
again on a joined board, e.g. the emulated ARM node of scripts/arm-board.sh, as `bench/arm_accuracy.py`
does), and counts each TFLite file's operators that fall back to the CPU under the i.MX8M Plus
profile (`device_actors.npu`, profile `vx`: what `python -m orchestrator inspect --npu vx` prints).

    .venv/bin/python bench/npu_int8.py --activations silu,relu6 --epochs 10   # --train-subset N for a shorter look
    .venv/bin/python bench/npu_int8.py --board-only --address 127.0.0.1:6391   # the same files, on the board

--board-only scores the files of the last run (its npu_int8.jsonl in --out) on the board without
exporting again, so the board's half can run when the board is up.
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from int8_variants import HAS_TFLITE_TOOLS, student_activations, train_students  # noqa: E402

from detection.coco import CocoDataset  # noqa: E402
from device_actors.accuracy import evaluate_artifact  # noqa: E402
from orchestrator.console import console, stdout, table  # noqa: E402
from orchestrator.datasets import embedded_default, splits_in  # noqa: E402
from trainables.export import Artifact, artifact_filename, export_formats, get_format  # noqa: E402
from trainables.export.artifact import describe  # noqa: E402
from trainables.export.registry import ArtifactShape  # noqa: E402

CPU_SHAPE = {}  # today's artifact
NPU_SHAPE = {"int8_io": "nhwc-uint8", "decode": "host"}  # the camera's bytes in, the head convs out
# variant name -> (formats exported together, the shape's knobs)
VARIANTS = {
    "per-channel": (["onnx", "onnx-int8", "tflite-int8"], CPU_SHAPE),
    "per-tensor": (["onnx-int8", "tflite-int8"], {"int8_granularity": "per-tensor"}),
    "NPU shape, per-channel": (["tflite-int8"], NPU_SHAPE),
    "NPU shape, per-tensor": (["tflite-int8"], {**NPU_SHAPE, "int8_granularity": "per-tensor"}),
}
NPU_PROFILE = "vx"  # the i.MX8M Plus VX delegate (device_actors/npu/profiles/vx.yaml)


@dataclass(frozen=True)
class Row:
    activation: str
    variant: str
    artifact: Artifact


def variant_dir(out: Path, activation: str, variant: str) -> Path:
    return out / activation / "npu" / f"variant{list(VARIANTS).index(variant)}"


def exports_of(activation: str, checkpoint: Path, train: CocoDataset, out: Path, calib_images: int) -> list[Row]:
    rows = []
    for variant, (formats, knobs) in VARIANTS.items():
        if not HAS_TFLITE_TOOLS:
            formats = [f for f in formats if not f.startswith("tflite")]
        made = export_formats(checkpoint, formats, variant_dir(out, activation, variant), img_size=128,
                              calibration=train, calib_images=calib_images, shape=ArtifactShape(**knobs))
        rows += [Row(activation, "float" if a.format == "onnx" else variant, a) for a in made]
    return rows


def rows_of_last_run(out: Path) -> tuple[list[Row], list[float], list[dict]]:
    """The rows, x86 mAPs and records of the run whose npu_int8.jsonl is in `out` (its files stay in `out`)."""
    rows, maps, records = [], [], []
    for line in (out / "npu_int8.jsonl").read_text().splitlines():
        record = json.loads(line)
        fmt = get_format(record["format"])
        variant = "per-channel" if record["variant"] == "float" else record["variant"]
        path = variant_dir(out, record["activation"], variant) / artifact_filename(fmt, 128)
        rows.append(Row(record["activation"], record["variant"],
                        describe(path, format=fmt.name, runtime=fmt.runtime, img_size=128, settings=record["settings"])))
        maps.append(float(record["mAP@.5:.95 x86"]))
        records.append(record)
    return rows, maps, records


def fallbacks(artifact: Artifact) -> str:
    """'F of N' operators falling back to the CPU under the NPU profile (TFLite; ONNX: not placed)."""
    if artifact.runtime != "tflite":
        return "-"
    from device_actors.npu.placement import model_placement
    from device_actors.npu.profiles import load_profile

    placement = model_placement(artifact.read_bytes(), load_profile(NPU_PROFILE))
    return f"{placement.fallback} of {len(placement.ops)}"


def board_maps(rows: list[Row], val: CocoDataset, address: str, board_name: str,
               runtimes: tuple[str, ...]) -> tuple[list[float | None], str]:
    """Each row's mAP@.5:.95 scored by a joined board's own runtimes (`Board.score`; None for a row whose
    runtime is not in `runtimes`), and where it ran."""
    import os

    import ray

    from detection.packed import PackedSplit
    from device_actors.client import connect_board
    from device_actors.naming import NAMESPACE
    from device_actors.runtimes import RuntimeOptions
    from orchestrator._ray_internals import reload_auth_config

    os.environ.setdefault("RAY_AUTH_MODE", "token")
    reload_auth_config()
    ray.init(address=address, namespace=NAMESPACE, logging_level="WARNING", log_to_driver=False)
    try:
        board = connect_board(board_name, emulate_if_missing=False)
        facts = board.status().facts
        split = ray.put(PackedSplit.of(val))
        maps = []
        for row in rows:
            if row.artifact.runtime not in runtimes:
                maps.append(None)
                continue
            console.print(f"{row.activation} {row.variant} {row.artifact.format}: scoring on {board_name} ...")
            scored = board.score(row.artifact.path, split, runtime=row.artifact.runtime, options=RuntimeOptions(),
                                 timeout_s=7200)
            maps.append(scored["map50_95"])
    finally:
        ray.shutdown()
    where = f"{facts['machine']} {facts['cpu_model']}" + (f", EMULATED: {facts['emulation']}"
                                                          if facts.get("emulation") else "")
    return maps, where


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--activations", default="silu,relu6", help="students, comma-separated")
    p.add_argument("--epochs", type=int, default=10, help="training epochs of a student not trained yet")
    p.add_argument("--train-subset", type=int, default=None, help="seeded subset of training images (default: all)")
    p.add_argument("--val-subset", type=int, default=200, help="seeded subset of val images for mAP")
    p.add_argument("--calib-images", type=int, default=64)
    p.add_argument("--train-threads", type=int, default=2)
    p.add_argument("--address", default=None, help="also score on the board joined to this Ray head, HOST:PORT")
    p.add_argument("--board", default="imx8mp-qemu")
    p.add_argument("--board-runtimes", default="tflite",
                   help="runtimes whose files the board scores too, comma-separated (under qemu an ONNX file at "
                        "200 images takes minutes; the NPU runs TFLite)")
    p.add_argument("--out", type=Path, default=Path("runs/bench/int8_variants"),
                   help="students (shared with bench/int8_variants.py) and artifacts")
    p.add_argument("--board-only", action="store_true", help="score the last run's files on the board (--address)")
    args = p.parse_args()
    if args.board_only and not args.address:
        p.error("--board-only needs --address")

    activations = student_activations(p, args.activations)
    splits = splits_in(embedded_default(), train_subset=args.train_subset, val_subset=args.val_subset)
    train, val = CocoDataset(splits.train), CocoDataset(splits.val)
    if args.board_only:
        rows, here, _ = rows_of_last_run(args.out)
    else:
        checkpoints = train_students(activations, train, val, args.epochs, args.out, args.train_threads)
        rows = [r for a in activations for r in exports_of(a, checkpoints[a], train, args.out, args.calib_images)]
        here = []
        for r in rows:
            here.append(evaluate_artifact(r.artifact.read_bytes(), r.artifact.runtime, val).metrics.map50_95)
            console.print(f"{r.activation} {r.variant} {r.artifact.format}: mAP {here[-1]:.4f} (x86)")
    there, where = (board_maps(rows, val, args.address, args.board, tuple(args.board_runtimes.split(",")))
                    if args.address else ([None] * len(rows), ""))
    floats = {r.activation: m for r, m in zip(rows, here) if r.variant == "float"}
    columns = ["activation", "format", "variant", "mAP@.5:.95 x86", "Δ vs float (points)",
               f"fallback ops ({NPU_PROFILE})"] + ([f"mAP@.5:.95 {args.board}"] if args.address else [])
    table_rows = []
    for r, m, b in zip(rows, here, there):
        table_rows.append([r.activation, r.artifact.format, r.variant, f"{m:.4f}",
                           f"{100 * (m - floats[r.activation]):+.2f}", fallbacks(r.artifact)]
                          + ([f"{b:.4f}" if b is not None else "-"] if args.address else []))
    title = (f"YOLO-n per activation, {args.epochs} epochs on {len(train)} images, 128 px, {len(val)} val images, "
             f"{args.calib_images} "
             f"calibration images" + (f"; board {args.board}: {where}" if args.address else ""))
    stdout.print(table(title, columns, table_rows), width=None if stdout.is_terminal else 160)
    results = args.out / ("npu_int8-board.jsonl" if args.board_only else "npu_int8.jsonl")
    with results.open("w") as f:
        for row, table_row in zip(rows, table_rows):
            f.write(json.dumps({**dict(zip(columns, table_row)), "settings": row.artifact.settings}, default=str) + "\n")
    console.print(f"rows in {results}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
