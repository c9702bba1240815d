"""The same artifacts scored on x86 and on ARM kernels: does the board see the accuracy the export node saw?

For one YOLO-n student per activation (the students and variants of `bench/int8_variants.py`,
trained once into its --out and shared with it) this exports the chosen quantization variants,
scores each file here (x86_64) and on a board node through the board's own runtime (`Board.score`),
and prints both mAPs and the difference in points. With the emulated ARM node of
scripts/arm-board.sh the ARM numbers come from the real aarch64 kernels of onnxruntime and LiteRT,
run under qemu (slow, but bit-for-bit ARM code): about 1 min per ONNX fp32 file on 100 val images.

    ray start --head --port 6379 --num-cpus 2 --include-dashboard=false   # with RAY_AUTH_MODE=token and
    scripts/arm-board.sh build && scripts/arm-board.sh start --address 127.0.0.1:6379   # (as root) ..._LEVEL=minor
    RAY_AUTH_MODE=token RAY_DEFAULT_PYTHON_VERSION_MATCH_LEVEL=minor \\
        .venv/bin/python bench/arm_accuracy.py --address 127.0.0.1:6379 --board imx8mp-qemu \\
        --activations silu,relu6 --variant "onnx fp32" --variant "onnx int8: QOperator"
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

# what the sweep exports: fp32 and int8 in both runtimes
DEFAULT_VARIANTS = ("onnx fp32", "onnx int8: QDQ u8s8 per-channel, float stem (sweep)", "tflite fp32", "tflite int8")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--address", required=True, help="the head the board joined, HOST:PORT")
    p.add_argument("--board", default="imx8mp-qemu")
    p.add_argument("--activations", default="silu", help="students, comma-separated (int8_variants' activations)")
    p.add_argument("--variant", action="append", dest="variants", metavar="NAME",
                   help=f"a variant of bench/int8_variants.py, repeatable (default: {'; '.join(DEFAULT_VARIANTS)})")
    p.add_argument("--epochs", type=int, default=10, help="training epochs of a student not trained yet")
    p.add_argument("--val-subset", type=int, default=150, help="val images scored on both machines")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--train-threads", type=int, default=2)
    p.add_argument("--out", type=Path, default=Path("runs/bench/int8_variants"), help="students and artifacts")
    args = p.parse_args()

    import ray

    from detection.coco import CocoDataset
    from detection.packed import PackedSplit
    from device_actors.accuracy import evaluate_artifact
    from device_actors.client import connect_board
    from device_actors.naming import NAMESPACE
    from int8_variants import HAS_TFLITE_TOOLS, train_students, variants_of
    from orchestrator._ray_internals import reload_auth_config
    from orchestrator.console import console, stdout, table
    from orchestrator.datasets import embedded_default, splits_in
    from trainables.models.family import ACTIVATIONS

    activations = [a.strip() for a in args.activations.split(",")]
    unknown = [a for a in activations if a not in ACTIVATIONS]
    if unknown:
        p.error(f"--activations: unknown {', '.join(unknown)}; known: {', '.join(ACTIVATIONS)}")
    splits = splits_in(embedded_default(), val_subset=args.val_subset)
    train, val = CocoDataset(splits.train), CocoDataset(splits.val)
    checkpoints = train_students(activations, train, val, args.epochs, args.out, args.train_threads)
    wanted = args.variants or list(DEFAULT_VARIANTS)
    variants = [v for a in activations for v in variants_of(a, checkpoints[a], train, args.out, calib_images=64,
                                                             threads=args.threads, tflite=HAS_TFLITE_TOOLS)]
    unknown = sorted(set(wanted) - {v.name for v in variants})
    if unknown:
        p.error(f"--variant: unknown {'; '.join(unknown)}; known: {'; '.join(dict.fromkeys(v.name for v in variants))}")
    variants = [v for v in variants if v.name in wanted]

    os.environ.setdefault("RAY_AUTH_MODE", "token")
    reload_auth_config()
    ray.init(address=args.address, namespace=NAMESPACE, logging_level="WARNING", log_to_driver=False)
    try:
        board = connect_board(args.board, emulate_if_missing=False)
        facts = board.status().facts
        split = ray.put(PackedSplit.of(val))
        rows = []
        for v in variants:
            artifact = v.artifact
            here = evaluate_artifact(artifact.read_bytes(), artifact.runtime, val, options=v.options).metrics
            console.print(f"{v.activation} {v.name}: {here.map50_95:.4f} here; scoring on {args.board} ...")
            there = board.score(artifact.path, split, runtime=artifact.runtime, options=v.options, timeout_s=7200)
            rows.append([v.activation, v.name, f"{here.map50_95:.4f}", f"{there['map50_95']:.4f}",
                         f"{100 * (there['map50_95'] - here.map50_95):+.2f}", f"{here.map50:.4f}",
                         f"{there['map50']:.4f}"])
    finally:
        ray.shutdown()
    where = f"{facts['machine']} {facts['cpu_model']}" + (f", EMULATED: {facts['emulation']}" if facts.get("emulation")
                                                          else "")
    stdout.print(table(f"YOLO-n per activation, {args.epochs} epochs, 128 px, on {len(val)} val images: x86_64 (here) "
                       f"against board {args.board} ({where})",
                       ["activation", "variant", "mAP@.5:.95 x86", "mAP@.5:.95 board", "Δ points", "mAP@.5 x86",
                        "mAP@.5 board"],
                       rows), width=None if stdout.is_terminal else 140)
    return 0


if __name__ == "__main__":
    sys.exit(main())
