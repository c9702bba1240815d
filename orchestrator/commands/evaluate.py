"""`eval`: COCO mAP of a checkpoint, or of an exported artifact through its own runtime, on a val
split, with per-stage timings. An artifact scores as the sweep scores it (`evaluate_artifact`), so
the same file gives the same mAP here as in the sweep's table."""
from __future__ import annotations

import argparse
from pathlib import Path

from device_actors.runtimes.base import RuntimeOptions
from orchestrator.commands.train import add_data_args
from trainables.hyper import TrainKnobs


def add_parser(sub) -> None:
    p = sub.add_parser("eval", help="evaluate a checkpoint or an exported .onnx/.tflite file (COCO mAP via pycocotools)")
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--checkpoint", type=Path, help="a training checkpoint (.pt), run in PyTorch")
    what.add_argument("--model", type=Path, help="an exported artifact (.onnx, .tflite), run in its runtime")
    add_data_args(p)
    p.add_argument("--img-size", type=int, default=TrainKnobs.img_size,
                   help="--checkpoint only (an artifact's input size is the one it was exported at)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--device", default="auto", help="--checkpoint only: auto, cpu, cuda ...")
    p.add_argument("--threads", type=int, default=RuntimeOptions.threads, help="--model only: the runtime's threads")
    p.add_argument("--onnx-layout", choices=("yolov5", "yolov8"), default="yolov5",
                   help="--model FILE.onnx only: its output layout, yolov5 (1, N, 5+C; ours too) or yolov8 (1, 4+C, N)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from orchestrator.commands.train import load_data
    from orchestrator.console import progress
    from trainables.checkpoint import load_model
    from trainables.evaluate import evaluate
    from trainables.train import select_device

    if args.model is not None:
        return _run_artifact(args)
    _, val_data = load_data(args)
    model = load_model(args.checkpoint)
    if model.spec.num_classes != val_data.num_classes:
        raise ValueError(f"{args.checkpoint} predicts {model.spec.num_classes} classes; "
                         f"the data set has {val_data.num_classes}")
    device = select_device(args.device)
    with progress() as bar:
        task = bar.add_task("evaluating", total=len(val_data), info="")
        res = evaluate(model.to(device), val_data, img_size=args.img_size, batch_size=args.batch_size,
                       device=device, progress=lambda done, total: bar.update(task, completed=done, total=total))
    _print(f"{args.checkpoint} on {res.metrics.images} images at {args.img_size}px", res)
    return 0


def _run_artifact(args: argparse.Namespace) -> int:
    from device_actors.accuracy import evaluate_artifact
    from device_actors.runtimes import runtime_for
    from orchestrator.commands.train import load_data
    from orchestrator.console import progress

    if not args.model.is_file():
        raise FileNotFoundError(f"model file not found: {args.model}")
    runtime = runtime_for(args.model.name)
    _, val_data = load_data(args)
    model = args.model.read_bytes()
    if args.onnx_layout != "yolov5":  # brought to the (1, N, 5+C) layout the scorer reads, as a sweep does
        import tempfile

        from trainables.export.onnx_model import normalised_onnx

        with tempfile.TemporaryDirectory(prefix="edgesweep-eval-") as tmp:
            normalised_onnx(args.model, Path(tmp) / "model.onnx", layout=args.onnx_layout,
                            num_classes=val_data.num_classes)
            model = (Path(tmp) / "model.onnx").read_bytes()
    with progress() as bar:
        task = bar.add_task("evaluating", total=len(val_data), info=runtime.name)
        res = evaluate_artifact(model, runtime.name, val_data,
                                options=RuntimeOptions(threads=args.threads),
                                progress=lambda done, total: bar.update(task, completed=done, total=total))
    _print(f"{args.model} ({runtime.name}) on {res.metrics.images} images", res)
    return 0


def _print(title: str, res) -> None:
    from orchestrator.console import stdout, table

    m = res.metrics
    stdout.print(table(title,
                       ["mAP@.5:.95", "mAP@.5", f"precision@{m.conf_threshold}", f"recall@{m.conf_threshold}",
                        "pre ms", "infer ms", "post ms"],
                       [[m.map50_95, m.map50, m.precision, m.recall,
                         res.preprocess_ms, res.inference_ms, res.postprocess_ms]]))
