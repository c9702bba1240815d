"""The same artifacts scored on x86 and on ARM kernels: does the board see the accuracy the export node saw?

For the default YOLO-n student (the one `bench/export_table.py` trains and caches) this exports
ONNX fp32 / static int8 and TFLite fp32 / full int8 at 128 px, scores each file here (x86_64) and on
a board node through the board's own runtime (`Board.score`), and prints both mAPs and the
difference in points. With the emulated ARM node of scripts/arm-board.sh the ARM numbers come from
the real aarch64 kernels of onnxruntime and LiteRT, run under qemu (slow, but bit-for-bit ARM code).

    ray start --head --port 6379 --num-cpus 2 --include-dashboard=false   # with RAY_AUTH_MODE=token and
    sudo scripts/arm-board.sh build && sudo scripts/arm-board.sh start --address 127.0.0.1:6379   # ..._LEVEL=minor
    RAY_AUTH_MODE=token RAY_DEFAULT_PYTHON_VERSION_MATCH_LEVEL=minor \\
        .venv/bin/python bench/arm_accuracy.py --address 127.0.0.1:6379 --board imx8mp-qemu
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

FORMATS = ("onnx", "onnx-int8", "tflite", "tflite-int8")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--address", required=True, help="the head the board joined, HOST:PORT")
    p.add_argument("--board", default="imx8mp-qemu")
    p.add_argument("--checkpoint", type=Path, default=None, help="default: the bench's cached YOLO-n student")
    p.add_argument("--val-subset", type=int, default=150, help="val images scored on both machines")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, default=Path("runs/bench/arm_accuracy"))
    args = p.parse_args()

    import ray

    from detection.coco import CocoDataset
    from detection.packed import PackedSplit
    from device_actors.accuracy import evaluate_artifact
    from device_actors.client import connect_board
    from device_actors.naming import NAMESPACE
    from device_actors.runtimes import RuntimeOptions
    from export_table import train_default_student
    from orchestrator._ray_internals import reload_auth_config
    from orchestrator.console import console, stdout, table
    from orchestrator.datasets import embedded_default, splits_in
    from trainables.export import export_formats

    data_root = embedded_default()
    checkpoint = args.checkpoint or train_default_student(data_root, 10)
    splits = splits_in(data_root, val_subset=args.val_subset)
    train, val = CocoDataset(splits.train), CocoDataset(splits.val)
    artifacts = export_formats(checkpoint, list(FORMATS), args.out, img_size=128, calibration=train)
    options = RuntimeOptions(threads=args.threads)

    os.environ.setdefault("RAY_AUTH_MODE", "token")
    reload_auth_config()
    ray.init(address=args.address, namespace=NAMESPACE, logging_level="WARNING", log_to_driver=False)
    try:
        board = connect_board(args.board, emulate_if_missing=False)
        facts = board.status().facts
        split = ray.put(PackedSplit.of(val))
        rows = []
        for artifact in artifacts:
            here = evaluate_artifact(artifact.read_bytes(), artifact.runtime, val, options=options).metrics
            console.print(f"{artifact.format}: {here.map50_95:.4f} here; scoring on {args.board} ...")
            there = board.score(artifact.path, split, runtime=artifact.runtime, options=options, timeout_s=7200)
            rows.append([artifact.format, f"{here.map50_95:.4f}", f"{there['map50_95']:.4f}",
                         f"{100 * (there['map50_95'] - here.map50_95):+.2f}", f"{here.map50:.4f}",
                         f"{there['map50']:.4f}"])
    finally:
        ray.shutdown()
    where = f"{facts['machine']} {facts['cpu_model']}" + (f", EMULATED: {facts['emulation']}" if facts.get("emulation")
                                                          else "")
    stdout.print(table(f"{checkpoint.name} at 128 px on {len(val)} val images: x86_64 (here) against board "
                       f"{args.board} ({where})",
                       ["format", "mAP@.5:.95 x86", "mAP@.5:.95 board", "Δ points", "mAP@.5 x86", "mAP@.5 board"],
                       rows), width=None if stdout.is_terminal else 140)
    return 0


if __name__ == "__main__":
    sys.exit(main())
