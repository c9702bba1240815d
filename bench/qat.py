"""QAT against PTQ: the int8 mAP drop of post-training quantization and of quantization-aware training,
paired by seed, in ONNX Runtime and TFLite (issue 30, "Show it").

Per seed: a YOLO-n student trained from scratch on the generated data set (the demo's kind of student,
small here so that several seeds fit), exported as float (onnx, tflite), post-training int8
(onnx-int8, tflite-int8, calibrated on training images) and QAT (onnx-qat, tflite-qat: `--qat-epochs`
of fake-quantized fine-tuning, `trainables.export.qat`). Every file is scored through its runtime on the
val split. A format's drop is its float file's mAP@.5:.95 minus its own, in points; the paired
difference is PTQ's drop minus QAT's (positive: QAT loses less), with its 95 % interval (Student's t
over the seeds). QAT also trains `--qat-epochs` more at a low learning rate, which is part of what it
is; the table shows the float mAP so that can be judged.

Run: `.venv/bin/python bench/qat.py --seeds 0,1,2,3 --epochs 8 --qat-epochs 1` (results kept in
--out/results.jsonl; a seed already there is not run again).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from kd_methods import paired_difference  # noqa: E402

from detection.coco import CocoDataset, SplitSpec  # noqa: E402
from orchestrator.console import stdout, table  # noqa: E402

IMG_SIZE = 128
RUNTIMES = {"ONNX Runtime": ("onnx", "onnx-int8", "onnx-qat"), "TFLite": ("tflite", "tflite-int8", "tflite-qat")}


def _data(root: Path, train: int, val: int) -> tuple[CocoDataset, CocoDataset]:
    from detection.synth import SynthConfig, generate

    if not (root / "instances_val.json").exists():
        generate(root, train=train, val=val, seed=0, config=SynthConfig(size=IMG_SIZE))
    return (CocoDataset(SplitSpec(root / "train", root / "instances_train.json")),
            CocoDataset(SplitSpec(root / "val", root / "instances_val.json")))


def run_seed(seed: int, args, train: CocoDataset, val: CocoDataset) -> dict:
    import torch

    from device_actors.accuracy import evaluate_artifact
    from trainables.export import export_formats
    from trainables.hyper import TrainConfig
    from trainables.models.yolo import ModelSpec
    from trainables.train import fit

    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    work = args.out / f"seed{seed}"
    result = fit(ModelSpec("n", train.num_classes), train, None,
                 TrainConfig(epochs=args.epochs, img_size=IMG_SIZE, torch_threads=args.threads, lr0=0.002, seed=seed),
                 work / "run")
    trained = time.perf_counter() - started
    formats = [f for names in RUNTIMES.values() for f in names]
    artifacts = export_formats(result.checkpoint, formats, work / "files", img_size=IMG_SIZE, calibration=train,
                               calib_images=args.calib_images, calib_seed=seed, qat_epochs=args.qat_epochs)
    maps = {a.format: evaluate_artifact(a.read_bytes(), a.runtime, val).metrics.map50_95 for a in artifacts}
    return {"seed": seed, "epochs": args.epochs, "qat_epochs": args.qat_epochs, "train_s": round(trained, 1),
            "total_s": round(time.perf_counter() - started, 1), "map50_95": maps}


def summary(rows: list[dict]) -> list[list]:
    out = []
    for runtime, (fp32, ptq, qat) in RUNTIMES.items():
        ptq_drop = {r["seed"]: r["map50_95"][fp32] - r["map50_95"][ptq] for r in rows}
        qat_drop = {r["seed"]: r["map50_95"][fp32] - r["map50_95"][qat] for r in rows}
        n, mean, low, high = paired_difference(ptq_drop, qat_drop)
        float_map = statistics.mean(r["map50_95"][fp32] for r in rows) * 100
        out.append([runtime, n, f"{float_map:.2f}", f"{statistics.mean(ptq_drop.values()) * 100:.2f}",
                    f"{statistics.mean(qat_drop.values()) * 100:.2f}", f"{mean:+.2f} [{low:+.2f}, {high:+.2f}]"])
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", default="0,1,2,3")
    p.add_argument("--epochs", type=int, default=8, help="student training epochs")
    p.add_argument("--qat-epochs", type=int, default=1)
    p.add_argument("--train-images", type=int, default=400)
    p.add_argument("--val-images", type=int, default=100)
    p.add_argument("--calib-images", type=int, default=64)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", type=Path, default=ROOT / "runs" / "bench" / "qat")
    args = p.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    train, val = _data(args.out / "data", args.train_images, args.val_images)
    log = args.out / "results.jsonl"
    rows = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    for seed in (int(s) for s in args.seeds.split(",")):
        if any(r["seed"] == seed for r in rows):
            continue
        row = run_seed(seed, args, train, val)
        rows.append(row)
        with log.open("a") as f:
            f.write(json.dumps(row) + "\n")
        stdout.print(f"seed {seed}: {row['total_s']:.0f} s, " + ", ".join(f"{k} {v * 100:.2f}"
                                                                          for k, v in row["map50_95"].items()))
    stdout.print(table("int8 mAP@.5:.95 drop against the float file (points), PTQ vs QAT paired by seed",
                       ["runtime", "seeds", "float mAP", "PTQ drop", "QAT drop", "PTQ - QAT drop, 95 %"],
                       summary(rows)))


if __name__ == "__main__":
    main()
