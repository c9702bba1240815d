"""Structured pruning of the demo student: mAP, latency (x86 and emulated ARM), parameters and MACs
against prune_ratio, and the accuracy/latency Pareto plot.

Issue 30, "Show it". One YOLO-n (the demo's student: SiLU, 128 px, the embedded default data set) is
trained from scratch for --base-epochs; then, for each ratio, `train_student` prunes that checkpoint
(the sweep's `prune_ratio` / `prune_method` knobs, Torch-Pruning) and fine-tunes it for
--finetune-epochs. Ratio 0 is the same student fine-tuned as long, unpruned, so every row had the
same training. Each student is exported to ONNX fp32 and:

- scored (COCO mAP@.5:.95 through ONNX Runtime on the val split) and timed here (interleaved rounds,
  `bench/export_table.py`'s `measure`);
- timed on emulated ARM: the aarch64 onnxruntime of the `scripts/arm-board.sh build` root file system,
  run by qemu-user as a Cortex-A53 (`--arm-rootfs`; skipped when missing). That is ARM code at
  emulation speed, not an A53's: the ratios between rows are what it says, not the milliseconds.

Students are trained once into --out and reused. Run: `.venv/bin/python bench/prune.py` (about 15 min
on 2 free cores with the defaults).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

ARM_ROOTFS = Path(os.environ.get("EDGESWEEP_CACHE", Path.home() / ".cache" / "edgesweep")) / "arm-board"
ARM_PYTHON = "/usr/bin/python3.11"  # Debian bookworm's, inside the root file system
ARM_SITE = "/opt/venv/lib/python3.11/site-packages"  # where `arm-board.sh build` installs '.[board]'


def time_onnx_files(paths: list[str], runs: int) -> dict[str, float]:
    """Median ms of `runs` single-threaded inferences of each file, after two warm-up runs: this half
    runs under emulation, so it needs only numpy and onnxruntime."""
    import numpy as np
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    medians = {}
    for path in paths:
        session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        meta = session.get_inputs()[0]
        image = np.random.default_rng(0).random([int(d) for d in meta.shape], dtype=np.float32)
        times = []
        for i in range(runs + 2):
            start = time.perf_counter()
            session.run(None, {meta.name: image})
            if i >= 2:
                times.append((time.perf_counter() - start) * 1000)
        medians[path] = statistics.median(times)
    return medians


def time_on_emulated_arm(paths: list[Path], runs: int, rootfs: Path) -> dict[Path, float] | None:
    """`time_onnx_files` in the aarch64 Python of `rootfs`, under qemu-user as a Cortex-A53. ONNX
    Runtime crashes under qemu-user unless /proc/cpuinfo describes an ARM CPU, so a private mount
    namespace (`unshare -m`, nothing outside it sees the mount) lays the board's fake cpuinfo over it."""
    root, cpuinfo, qemu = rootfs / "rootfs", rootfs / "cpuinfo", shutil.which("qemu-aarch64-static")
    if not (root / ARM_SITE.lstrip("/")).is_dir() or not cpuinfo.is_file() or qemu is None or os.geteuid() != 0:
        return None
    inner = (f"mount --bind {cpuinfo} /proc/cpuinfo && exec {qemu} -L {root} {root}{ARM_PYTHON} {Path(__file__)} "
             f"--time-onnx {' '.join(str(p) for p in paths)} --runs {runs}")
    env = {**os.environ, "QEMU_CPU": "cortex-a53", "PYTHONPATH": ARM_SITE}
    done = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c", inner], env=env,
                          capture_output=True, text=True, check=True)
    medians = json.loads(done.stdout.strip().splitlines()[-1])
    return {Path(p): ms for p, ms in medians.items()}


def train_students(ratios: list[float], method: str, base_epochs: int, finetune_epochs: int, out: Path,
                   threads: int, train_subset: int | None):
    """The base student, then one pruned and fine-tuned student per ratio; finished ones are reused."""
    from detection.coco import CocoDataset
    from orchestrator.console import progress
    from orchestrator.datasets import embedded_default, splits_in
    from trainables.hyper import TrainConfig, TrainKnobs
    from trainables.student import train_student

    splits = splits_in(embedded_default(), train_subset=train_subset)
    train, val = CocoDataset(splits.train), CocoDataset(splits.val)
    base = TrainConfig(torch_threads=threads)

    def trained(name: str, knobs: TrainKnobs, bar) -> Path:
        record = out / name / "student.json"
        if record.exists():
            return Path(json.loads(record.read_text())["checkpoint"])
        task = bar.add_task(name, total=knobs.epochs, info="")
        started = time.perf_counter()
        result = train_student(knobs, train, None, out / name / "train", base=base,
                               on_epoch=lambda r, _c: bar.update(task, completed=r.epoch))
        record.write_text(json.dumps({"checkpoint": str(result.checkpoint), "knobs": repr(knobs),
                                      "train_s": time.perf_counter() - started}))
        return Path(result.checkpoint)

    with progress() as bar:
        start = trained("base", TrainKnobs(epochs=base_epochs, img_size=128), bar)
        students = {r: trained(f"ratio-{r:g}", TrainKnobs(epochs=finetune_epochs, img_size=128, student_init=str(start),
                                                         prune_ratio=r, prune_method=method), bar)
                    for r in ratios}
    return students, train, val


def pareto_plot(rows: list[dict], path: Path, arm: bool) -> None:
    """mAP against latency, one point per ratio (labelled), the non-dominated ones joined; x86 and ARM side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [("x86_ms", "x86 (this machine), ONNX Runtime fp32, median ms")]
    if arm:
        panels.append(("arm_ms", "EMULATED ARM (qemu Cortex-A53), ONNX Runtime fp32, median ms"))
    fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 4.5), squeeze=False)
    for ax, (key, label) in zip(axes[0], panels):
        points = sorted((r[key], r["map50_95"], r["ratio"]) for r in rows)
        front, best = [], -1.0
        for ms, m, ratio in points:
            if m > best:
                front.append((ms, m))
                best = m
        ax.plot(*zip(*front), "-", color="#d62728", label="Pareto front")
        ax.scatter([p[0] for p in points], [p[1] for p in points], color="#1f77b4", zorder=3)
        for ms, m, ratio in points:
            ax.annotate(f"{ratio:g}", (ms, m), textcoords="offset points", xytext=(4, 4), fontsize=8)
        ax.set_xlabel(label)
        ax.set_ylabel("mAP@.5:.95 of the ONNX file")
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right")
    fig.suptitle("YOLO-n, structured pruning (labels: prune_ratio), pruned then fine-tuned")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ratios", default="0,0.1,0.3,0.5,0.7")
    p.add_argument("--method", default="l1", help="prune_method: l1, group-norm or bn-scale")
    p.add_argument("--base-epochs", type=int, default=6, help="training of the unpruned student, from scratch")
    p.add_argument("--finetune-epochs", type=int, default=3, help="training after pruning (ratio 0 too)")
    p.add_argument("--train-subset", type=int, default=None, help="seeded subset of the 2000 training images")
    p.add_argument("--threads", type=int, default=1, help="inference threads (the board's default)")
    p.add_argument("--train-threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=3, help="interleaved x86 timing rounds per file")
    p.add_argument("--min-seconds", type=float, default=1.0, help="timed duration per file and round (x86)")
    p.add_argument("--arm-runs", type=int, default=10, help="timed inferences per file on emulated ARM")
    p.add_argument("--arm-rootfs", type=Path, default=ARM_ROOTFS, help="scripts/arm-board.sh's cache directory")
    p.add_argument("--out", type=Path, default=Path("runs/bench/prune"))
    p.add_argument("--time-onnx", nargs="+", help=argparse.SUPPRESS)  # the half that runs under emulation
    p.add_argument("--runs", type=int, default=15, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.time_onnx:
        print(json.dumps(time_onnx_files(args.time_onnx, args.runs)))
        return 0

    from export_table import measure

    from device_actors.runtimes import get_runtime
    from device_actors.sysinfo import board_facts
    from device_actors.timing import TimingProtocol
    from orchestrator.console import console, stdout, table
    from trainables.checkpoint import load_model
    from trainables.export import export_formats
    from trainables.prune import ModelCost

    ratios = [float(r) for r in args.ratios.split(",")]
    args.out.mkdir(parents=True, exist_ok=True)
    students, train, val = train_students(ratios, args.method, args.base_epochs, args.finetune_epochs, args.out,
                                          args.train_threads, args.train_subset)
    artifacts = [export_formats(students[r], ["onnx"], args.out / f"ratio-{r:g}" / "onnx", img_size=128)[0]
                 for r in ratios]
    costs = [ModelCost.of(load_model(students[r]), 128) for r in ratios]
    measured = measure(artifacts, val, threads=args.threads, protocol=TimingProtocol(min_seconds=args.min_seconds),
                       rounds=args.rounds)
    console.print("timing on emulated ARM (qemu) ...")
    arm = time_on_emulated_arm([a.path for a in artifacts], args.arm_runs, args.arm_rootfs)
    if arm is None:
        console.print(f"[yellow]no emulated ARM: needs root, qemu-aarch64-static and {args.arm_rootfs} "
                      f"(scripts/arm-board.sh build); x86 only[/yellow]")
    rows = []
    for r, a, c, m in zip(ratios, artifacts, costs, measured):
        rows.append({"ratio": r, "method": args.method, "parameters": c.parameters, "macs": c.macs,
                     "map50_95": m.map50_95, "map50": m.map50, "x86_ms": m.median_ms,
                     "arm_ms": arm[a.path] if arm else None, "size_mb": a.size_mb})
    base = rows[0]
    facts = board_facts()
    stdout.print(table(
        f"YOLO-n, {args.base_epochs} epochs, then pruned ({args.method}) and fine-tuned {args.finetune_epochs} epochs; "
        f"128 px, {len(val)} val images, ONNX fp32, onnxruntime {get_runtime('onnxruntime').version()}, "
        f"{args.threads} thread(s); x86: {facts.cpu_model}; ARM: EMULATED (qemu-user, Cortex-A53)",
        ["prune_ratio", "params M", "MACs M", "size MB", "mAP@.5:.95", "x86 ms", "x86 speedup", "ARM ms (emulated)",
         "ARM speedup"],
        [[f"{r['ratio']:g}", r["parameters"] / 1e6, r["macs"] / 1e6, r["size_mb"], r["map50_95"], r["x86_ms"],
          f"{base['x86_ms'] / r['x86_ms']:.2f}x", r["arm_ms"] if arm else "-",
          f"{base['arm_ms'] / r['arm_ms']:.2f}x" if arm else "-"] for r in rows]))
    with (args.out / "results.jsonl").open("w") as f:
        for r in rows:
            f.write(json.dumps({"cpu": facts.cpu_model, **r}) + "\n")
    pareto_plot(rows, args.out / "pareto.png", arm=arm is not None)
    console.print(f"rows in {args.out / 'results.jsonl'}, plot in {args.out / 'pareto.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
