"""`import yolov5 FILE.pt --out CKPT`: Ultralytics YOLOv5 weights as an EdgeSweep checkpoint, for a
sweep's `student.init`, a teacher's `checkpoint`, `train --init`, `eval` and `export`."""
from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(sub) -> None:
    p = sub.add_parser("import", help="convert another tool's weights into an EdgeSweep checkpoint")
    isub = p.add_subparsers(dest="import_layout", required=True, metavar="LAYOUT")
    y = isub.add_parser("yolov5", help="Ultralytics YOLOv5 v6.0+ (n/s/m/l/x, any class count): a .pt from their "
                                       "train.py or a plain state dict; read without running code from the file")
    y.add_argument("weights", type=Path, help="e.g. yolov5s.pt or runs/train/exp/weights/best.pt")
    y.add_argument("--out", type=Path, required=True, help="the EdgeSweep checkpoint to write")
    y.set_defaults(run=run_yolov5)


def run_yolov5(args: argparse.Namespace) -> int:
    from orchestrator.console import stdout
    from trainables.yolov5_weights import import_yolov5

    spec = import_yolov5(args.weights, args.out)
    anchors = "; ".join(" ".join(f"{w:g}x{h:g}" for w, h in level) for level in spec.anchors)
    stdout.print(f"{args.out}: YOLOv5{spec.size}, {spec.num_classes} classes, anchors {anchors}\n"
                 f"use it as `student: {{model: {spec.size}, init: {args.out}}}` or a teacher's `checkpoint:`; its "
                 f"class count must be the data set's", soft_wrap=True, markup=False)
    return 0
