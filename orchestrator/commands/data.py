"""`data synth`: write the embedded default COCO-format data set."""
from __future__ import annotations

import argparse
from pathlib import Path

from orchestrator.datasets import EmbeddedDefault


def add_parser(sub) -> None:
    p = sub.add_parser("data", help="data set tools")
    dsub = p.add_subparsers(dest="data_command", required=True, metavar="ACTION")
    s = dsub.add_parser("synth", help="generate the synthetic COCO-format detection set")
    s.add_argument("--out", type=Path, required=True, help="output directory")
    s.add_argument("--train", type=int, default=EmbeddedDefault.train, help="training images")
    s.add_argument("--val", type=int, default=EmbeddedDefault.val, help="validation images")
    s.add_argument("--size", type=int, default=EmbeddedDefault.size, help="image side in pixels")
    s.add_argument("--seed", type=int, default=EmbeddedDefault.seed, help="same seed, same bytes")
    s.set_defaults(run=run_synth)


def run_synth(args: argparse.Namespace) -> int:
    from detection.synth import SynthConfig, generate
    from orchestrator.console import console, progress, stdout, table

    with progress() as bar:
        task = bar.add_task("generating", total=args.train + args.val, info="")
        summary = generate(args.out, train=args.train, val=args.val, seed=args.seed,
                           config=SynthConfig(size=args.size),
                           progress=lambda done, total: bar.update(task, completed=done, total=total))
    stdout.print(table(f"Synthetic data set in {summary.out_dir}", ["split", "images", "objects"],
                       [["train", summary.train_images, summary.num_objects["train"]],
                        ["val", summary.val_images, summary.num_objects["val"]]]))
    console.print("classes: " + ", ".join(f"{c['id']}={c['name']}" for c in summary.categories))
    return 0
