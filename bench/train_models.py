"""Train the default student and teacher sizes on the embedded default and print their accuracy.

    python bench/train_models.py                      # n and s, default epochs, both in parallel
    python bench/train_models.py --models n,s,m --epochs 12

Prints: model, params, epochs, images/s, mAP@.5:.95, mAP@.5 (val split, EMA weights). The issue's
target: the default student reaches mAP@.5:.95 >= 0.30 and the default teacher beats it by >= 8
points at the same epochs, within a budget that lets the demo sweep finish in 15 minutes.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def train_one(size: str, epochs: int, threads: int, out: Path) -> dict:
    import torch

    from detection.coco import CocoDataset
    from orchestrator.datasets import embedded_default, splits_in
    from trainables.models.yolo import ModelSpec, build_model, count_parameters
    from trainables.hyper import TrainConfig
    from trainables.train import fit

    torch.set_num_threads(threads)
    splits = splits_in(embedded_default())
    train, val = CocoDataset(splits.train), CocoDataset(splits.val)
    spec = ModelSpec(size, train.num_classes)
    started = time.perf_counter()
    result = fit(spec, train, val, TrainConfig(epochs=epochs, torch_threads=threads, val_every=epochs), out)
    m = result.final_metrics
    ips = sum(h.images_per_second for h in result.history) / len(result.history)
    return {"model": f"yolo{size}", "params_m": count_parameters(build_model(spec)) / 1e6, "epochs": epochs,
            "images_per_s": ips, "map50_95": m["map50_95"], "map50": m["map50"],
            "minutes": (time.perf_counter() - started) / 60}


def main() -> int:
    from trainables.hyper import TrainConfig

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="n,s")
    p.add_argument("--epochs", type=int, default=TrainConfig().epochs)
    p.add_argument("--threads", type=int, default=1, help="torch threads per model (models train in parallel)")
    p.add_argument("--one", help=argparse.SUPPRESS)  # internal: train one size, print JSON
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args()
    if args.one:
        print(json.dumps(train_one(args.one, args.epochs, args.threads, args.out)))
        return 0
    from orchestrator.console import stdout, table
    from orchestrator.datasets import embedded_default

    embedded_default()  # generate once before the parallel runs
    out = args.out or Path(tempfile.mkdtemp(prefix="bench-train-"))
    procs = {size: subprocess.Popen([sys.executable, __file__, "--one", size, "--epochs", str(args.epochs),
                                     "--threads", str(args.threads), "--out", str(out / size)],
                                    stdout=subprocess.PIPE, text=True)
             for size in args.models.split(",")}
    rows = []
    for size, proc in procs.items():
        stdout_text, _ = proc.communicate()
        if proc.returncode:
            print(f"training YOLO-{size} failed", file=sys.stderr)
            return proc.returncode
        rows.append(json.loads(stdout_text.strip().splitlines()[-1]))
    stdout.print(table("Embedded default: models at equal epochs",
                       ["model", "params (M)", "epochs", "images/s", "mAP@.5:.95", "mAP@.5", "minutes"],
                       [[r["model"], r["params_m"], r["epochs"], r["images_per_s"], r["map50_95"], r["map50"],
                         r["minutes"]] for r in rows]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
