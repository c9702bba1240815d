"""Knowledge distillation on the embedded default: every method against the plain baseline.

    python bench/kd_methods.py                        # none, output, feature, cwd, pkd; seeds 0-4
    python bench/kd_methods.py --methods none,cwd --seeds 0 --parallel 1 --threads 2

The teacher (default YOLO-s, trained once and cached under EDGESWEEP_CACHE) and every student
(YOLO-n) train on the same data for the same epochs; each (method, seed) runs in its own process.
A seed fixes the student's initialisation and the data order, so every method's run is paired
with the baseline's of the same seed. Prints mean +- std of mAP@.5:.95 and mAP@.5 per method, the
paired difference to the baseline with its 95 % interval (Student's t over the seeds; "not
significant" when it holds 0), the first epoch's KD/detection loss ratio at the given factor and
the cost in seconds per epoch. `--ablate-fm-nms` adds output KD without Feature-Map NMS,
`--compute-matched` the baseline trained for as many seconds as the slowest KD method's runs.
Every finished run is appended to `--rows` (default runs/bench/kd_methods.jsonl), so an interrupted
bench loses nothing and a second invocation (more seeds, another method) runs only what is missing.
Target: the best method beats the baseline by >= 1.0 point with the interval's lower end above 0.
"""
from __future__ import annotations

import argparse
import json
import math
import statistics
import subprocess
import sys
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
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
    cfg = teacher_config(TrainConfig(torch_threads=threads), epochs=epochs, img_size=TrainConfig().img_size, seed=0)
    return str(ensure_teacher(size, train, val, cfg, cache_dir()))


def train_one(method: str, seed: int, teacher: str, epochs: int, threads: int, factor: float | None,
              params: dict) -> dict:
    from trainables.hyper import TrainConfig, TrainKnobs
    from trainables.student import train_student

    train, val = _datasets()
    knobs = TrainKnobs(student="n", epochs=epochs, kd_method=method, seed=seed, kd_params=params,
                       kd_factor=factor if factor is not None else TrainKnobs.kd_factor)
    with tempfile.TemporaryDirectory() as out:
        result = train_student(knobs, train, val, Path(out), base=TrainConfig(torch_threads=threads, val_every=epochs),
                               teacher_checkpoint=Path(teacher) if knobs.distills else None)
    m = result.final_metrics
    # training time only (an epoch's seconds also hold its val pass): images per epoch / throughput
    return {"method": method, "seed": seed, "epochs": epochs, "params": params, "map50_95": m["map50_95"],
            "map50": m["map50"], "kd_to_detection": [h.losses.get("kd_to_detection") for h in result.history],
            "s_per_epoch": statistics.mean(len(train) / h.images_per_second for h in result.history)}


@dataclass(frozen=True)
class Job:
    label: str  # the table's row: a method, an ablation or the compute-matched baseline
    method: str
    seed: int
    epochs: int
    params: tuple = ()  # the method's own knobs, as (name, value) pairs


def _run_child(args: argparse.Namespace, job: Job, teacher: str) -> dict:
    cmd = [sys.executable, __file__, "--one", json.dumps({"method": job.method, "seed": job.seed, "epochs": job.epochs,
                                                          "params": dict(job.params)}),
           "--teacher-path", teacher, "--threads", str(args.threads)]
    if args.factor is not None:
        cmd += ["--factor", str(args.factor)]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode:
        raise RuntimeError(f"{job.label} seed {job.seed} failed:\n{out.stderr[-3000:]}")
    return {**json.loads(out.stdout.strip().splitlines()[-1]), "label": job.label}


MATCHED = "none, compute-matched"  # the baseline given the seconds of the slowest KD method


def paired_difference(kd: dict[int, float], base: dict[int, float]) -> tuple[int, float, float, float]:
    """(seeds, mean, 95 % interval low, high) of kd - base in points, paired by seed (Student's t)."""
    from scipy import stats  # MLflow's dependency: present wherever the orchestrator is installed

    diffs = [(kd[s] - base[s]) * 100 for s in sorted(set(kd) & set(base))]
    n = len(diffs)
    mean = statistics.mean(diffs) if diffs else math.nan
    if n < 2:
        return n, mean, math.nan, math.nan
    half = stats.t.ppf(0.975, n - 1) * statistics.stdev(diffs) / math.sqrt(n)
    return n, mean, mean - half, mean + half


def summarise(rows: list[dict]) -> list[list]:
    by_label: dict[str, list[dict]] = {}
    for r in rows:
        by_label.setdefault(r["label"], []).append(r)

    def stats(values: list[float]) -> tuple[float, float]:
        return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0

    base = {r["seed"]: r["map50_95"] for r in by_label.get("none", [])}
    matched = {r["seed"]: r["map50_95"] for r in by_label.get(MATCHED, [])}

    def versus(rs: list[dict], reference: dict) -> tuple[str, str]:
        n, mean, low, high = paired_difference({r["seed"]: r["map50_95"] for r in rs}, reference)
        if n < 2:
            return f"{mean:+.2f}", "-"
        verdict = "significant" if low > 0 or high < 0 else "not significant"
        return f"{mean:+.2f}", f"[{low:+.2f}, {high:+.2f}] {verdict}"

    table = []
    for label, rs in by_label.items():
        m, sd = stats([r["map50_95"] for r in rs])
        m50, sd50 = stats([r["map50"] for r in rs])
        delta, interval = versus(rs, base) if base and label != "none" else ("-", "-")
        against = versus(rs, matched) if matched and label not in ("none", MATCHED) else ("-", "-")
        ratio = [r["kd_to_detection"][0] for r in rs if r["kd_to_detection"] and r["kd_to_detection"][0] is not None]
        table.append([label, len(rs), rs[0]["epochs"], f"{m:.4f} ± {sd:.4f}", f"{m50:.4f} ± {sd50:.4f}", delta,
                      interval, "-" if against[0] == "-" else f"{against[0]} {against[1]}", f"{statistics.mean(ratio):.2f}" if ratio else "-",
                      f"{statistics.mean(r['s_per_epoch'] for r in rs):.1f}"])
    return table


def _run_key(label: str, seed: int, epochs: int) -> tuple:
    return label, int(seed), int(epochs)


def _finished_runs(rows: Path, teacher: str, factor: float | None) -> dict[tuple, dict]:
    """Runs of earlier invocations with the same teacher file and factor, by (label, seed, epochs)."""
    if not rows.is_file():
        return {}
    found = (json.loads(line) for line in rows.read_text().splitlines() if line.strip())
    return {_run_key(r["label"], r["seed"], r["epochs"]): r for r in found
            if r.get("teacher") == teacher and r.get("factor") == factor}


def jobs_for(args: argparse.Namespace) -> list[Job]:
    seeds = [int(s) for s in args.seeds.split(",")]
    jobs = [Job(m, m, s, args.epochs) for s in seeds for m in args.methods.split(",")]
    if args.ablate_fm_nms:
        jobs += [Job("output, no FM-NMS", "output", s, args.epochs, (("fm_nms", False),)) for s in seeds]
    return jobs


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--methods", default="none,output,feature,cwd,pkd")
    p.add_argument("--seeds", default="0,1,2,3,4")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--teacher", default="s", help="teacher model size")
    p.add_argument("--teacher-epochs", type=int, default=10)
    p.add_argument("--factor", type=float, default=None, help="distillation factor for every method (default 1)")
    p.add_argument("--parallel", type=int, default=2, help="runs at once")
    p.add_argument("--threads", type=int, default=1, help="torch threads per run")
    p.add_argument("--ablate-fm-nms", action="store_true", help="also output KD without Feature-Map NMS")
    p.add_argument("--compute-matched", action="store_true",
                   help="also the baseline for as many seconds as the slowest KD method's runs (more epochs)")
    p.add_argument("--rows", type=Path, default=ROOT / "runs" / "bench" / "kd_methods.jsonl",
                   help="every finished run is appended here; runs already in it are reused, not run again")
    p.add_argument("--one", help=argparse.SUPPRESS)
    p.add_argument("--teacher-path", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.one:
        one = json.loads(args.one)
        print(json.dumps(train_one(one["method"], one["seed"], args.teacher_path, one["epochs"], args.threads,
                                   args.factor, one["params"])))
        return 0

    from orchestrator.console import console, progress, stdout, table

    console.print(f"teacher YOLO-{args.teacher}, {args.teacher_epochs} epochs (cached after the first run) ...")
    teacher = train_teacher(args.teacher, args.teacher_epochs, threads=args.threads * args.parallel)
    from trainables.kd.teachers import teacher_metrics

    t = teacher_metrics(Path(teacher))
    console.print(f"teacher mAP@.5:.95 {t.get('map50_95', float('nan')):.4f}, mAP@.5 {t.get('map50', float('nan')):.4f}")
    jobs = jobs_for(args)
    done = _finished_runs(args.rows, teacher, args.factor)
    lock = threading.Lock()
    with ThreadPoolExecutor(args.parallel) as pool, progress() as bar:
        task = bar.add_task("students", total=len(jobs) + (len(jobs) // len(args.methods.split(",")) if
                                                           args.compute_matched else 0), info="")

        def run(job: Job) -> dict:
            key = _run_key(job.label, job.seed, job.epochs)
            row = done.get(key)
            if row is None:
                row = _run_child(args, job, teacher)
                with lock:  # appended at once: an interrupted bench loses no finished run
                    args.rows.parent.mkdir(parents=True, exist_ok=True)
                    with args.rows.open("a") as f:
                        f.write(json.dumps({**row, "teacher": teacher, "factor": args.factor}) + "\n")
            bar.update(task, advance=1, info=f"{job.label} seed {job.seed}: {row['map50_95']:.4f}")
            return row

        rows = list(pool.map(run, jobs))
        if args.compute_matched:  # the baseline given the seconds of the slowest method (a teacher costs time)
            per_epoch = {}
            for r in rows:
                per_epoch.setdefault(r["label"], []).append(r["s_per_epoch"])
            slowest = max(statistics.mean(v) for k, v in per_epoch.items() if k != "none")
            epochs = round(args.epochs * slowest / statistics.mean(per_epoch["none"]))
            matched = [Job(MATCHED, "none", s, epochs) for s in sorted({r["seed"] for r in rows})]
            rows += list(pool.map(run, matched))
    console.print(f"runs in {args.rows}")
    stdout.print(table(f"KD on the embedded default: YOLO-n student, YOLO-{args.teacher} teacher, "
                       f"{args.epochs} epochs, seeds {args.seeds}",
                       ["method", "seeds", "epochs", "mAP@.5:.95", "mAP@.5", "Δ vs none (points, paired)",
                        "95 % interval", "Δ vs compute-matched none, 95 %", "kd/det epoch 1", "s/epoch"],
                       summarise(rows)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
