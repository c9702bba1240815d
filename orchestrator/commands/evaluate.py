"""`eval`: COCO mAP of a checkpoint on a val split, with per-stage timings."""
from __future__ import annotations

import argparse
from pathlib import Path

from orchestrator.commands.train import add_data_args
from trainables.hyper import TrainKnobs


def add_parser(sub) -> None:
    p = sub.add_parser("eval", help="evaluate a checkpoint (COCO mAP via pycocotools)")
    p.add_argument("--checkpoint", type=Path, required=True)
    add_data_args(p)
    p.add_argument("--img-size", type=int, default=TrainKnobs.img_size)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--device", default="auto")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from orchestrator.commands.train import load_data
    from orchestrator.console import progress, stdout, table
    from trainables.checkpoint import load_model
    from trainables.evaluate import evaluate
    from trainables.train import select_device

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
    m = res.metrics
    stdout.print(table(f"{args.checkpoint} on {m.images} images at {args.img_size}px",
                       ["mAP@.5:.95", "mAP@.5", f"precision@{m.conf_threshold}", f"recall@{m.conf_threshold}",
                        "pre ms", "infer ms", "post ms"],
                       [[m.map50_95, m.map50, m.precision, m.recall,
                         res.preprocess_ms, res.inference_ms, res.postprocess_ms]]))
    return 0
