"""Knowledge distillation on the embedded default: every method against the plain baseline.

    python bench/kd_methods.py                        # none, output, feature, cwd, pkd; seeds 0,1,2
    python bench/kd_methods.py --methods none,cwd --seeds 0 --parallel 1 --threads 2

The teacher (default YOLO-s, trained once and cached under EDGESWEEP_CACHE) and every student
(YOLO-n) train on the same data for the same epochs; each (method, seed) runs in its own process.
Prints mean +- std of mAP@.5:.95 and mAP@.5 per method over the seeds, the difference to the
baseline, and the cost in seconds per epoch with and without a teacher. Target: the best method
beats the baseline by >= 1.0 point mean mAP@.5:.95 and by more than the seeds' std.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _datasets():
    from detection.coco import CocoDataset
    from orchestrator.datasets import embedded_default, splits_in

    splits = splits_in(embedded_default())
    return CocoDataset(splits.train), CocoDataset(splits.val)


def train_teacher(size: str, epochs: int, threads: int) -> str:
    from orchestrator.datasets import cache_dir
    from trainables.kd.teachers import ensure_teacher, teacher_config
    from trainables.hyper import TrainConfig

    train, val = _datasets()
    cfg = teacher_config(TrainConfig(threads=threads), epochs=epochs, img_size=TrainConfig().img_size, seed=0)
    return str(ensure_teacher(size, train, val, cfg, cache_dir()))


def train_one(method: str, seed: int, teacher: str, epochs: int, threads: int, factor: float | None) -> dict:
    from trainables.hyper import TrainConfig, TrainKnobs
    from trainables.student import train_student

    train, val = _datasets()
    knobs = TrainKnobs(student="n", epochs=epochs, kd_method=method, seed=seed,
                       kd_factor=factor if factor is not None else TrainKnobs.kd_factor)
    with tempfile.TemporaryDirectory() as out:
        result = train_student(knobs, train, val, Path(out), base=TrainConfig(threads=threads, val_every=epochs),
                               teacher_checkpoint=Path(teacher) if knobs.distills else None)
    m = result.final_metrics
    # training time only (an epoch's seconds also hold its val pass): images per epoch / throughput
    return {"method": method, "seed": seed, "map50_95": m["map50_95"], "map50": m["map50"],
            "s_per_epoch": statistics.mean(len(train) / h.images_per_second for h in result.history)}


def _run_child(args: argparse.Namespace, method: str, seed: int, teacher: str) -> dict:
    cmd = [sys.executable, __file__, "--one", f"{method}:{seed}", "--teacher-path", teacher, "--epochs",
           str(args.epochs), "--threads", str(args.threads)]
    if args.factor is not None:
        cmd += ["--factor", str(args.factor)]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode:
        raise RuntimeError(f"{method} seed {seed} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def summarise(rows: list[dict]) -> list[list]:
    by_method: dict[str, list[dict]] = {}
    for r in rows:
        by_method.setdefault(r["method"], []).append(r)

    def stats(values: list[float]) -> tuple[float, float]:
        return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0

    base, _ = stats([r["map50_95"] for r in by_method.get("none", [])]) if "none" in by_method else (None, None)
    table = []
    for method, rs in by_method.items():
        m, sd = stats([r["map50_95"] for r in rs])
        m50, sd50 = stats([r["map50"] for r in rs])
        delta = f"{(m - base) * 100:+.2f}" if base is not None and method != "none" else "-"
        table.append([method, len(rs), f"{m:.4f} ± {sd:.4f}", f"{m50:.4f} ± {sd50:.4f}", delta,
                      f"{statistics.mean(r['s_per_epoch'] for r in rs):.1f}"])
    return table


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--methods", default="none,output,feature,cwd,pkd")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--teacher", default="s", help="teacher model size")
    p.add_argument("--teacher-epochs", type=int, default=10)
    p.add_argument("--factor", type=float, default=None, help="distillation factor for every method (default 1)")
    p.add_argument("--parallel", type=int, default=2, help="runs at once")
    p.add_argument("--threads", type=int, default=1, help="torch threads per run")
    p.add_argument("--json", type=Path, default=None, help="also write the raw rows here")
    p.add_argument("--one", help=argparse.SUPPRESS)
    p.add_argument("--teacher-path", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.one:
        method, seed = args.one.split(":")
        print(json.dumps(train_one(method, int(seed), args.teacher_path, args.epochs, args.threads, args.factor)))
        return 0

    from orchestrator.console import console, stdout, table

    console.print(f"teacher YOLO-{args.teacher}, {args.teacher_epochs} epochs (cached after the first run) ...")
    teacher = train_teacher(args.teacher, args.teacher_epochs, threads=args.threads * args.parallel)
    from trainables.kd.teachers import teacher_metrics

    t = teacher_metrics(Path(teacher))
    console.print(f"teacher mAP@.5:.95 {t.get('map50_95', float('nan')):.4f}, mAP@.5 {t.get('map50', float('nan')):.4f}")
    jobs = [(m, int(s)) for s in args.seeds.split(",") for m in args.methods.split(",")]
    with ThreadPoolExecutor(args.parallel) as pool:
        rows = list(pool.map(lambda job: _run_child(args, job[0], job[1], teacher), jobs))
    if args.json:
        args.json.write_text(json.dumps({"teacher": t, "rows": rows}, indent=2))
    stdout.print(table(f"KD on the embedded default: YOLO-n student, YOLO-{args.teacher} teacher, "
                       f"{args.epochs} epochs, seeds {args.seeds}",
                       ["method", "seeds", "mAP@.5:.95", "mAP@.5", "Δ mAP@.5:.95 (points)", "s/epoch"],
                       summarise(rows)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
