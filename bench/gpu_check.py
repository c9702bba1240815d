"""The GPU day's figures, each part within a time budget: trainer images/s, trainer-pool overhead, a demo sweep.

    bench/gpu_check.sh                                     # all parts on one CUDA GPU, within 8 minutes
    python bench/gpu_check.py preflight                    # what this Python can run, and what it lacks
    python bench/gpu_check.py images-per-second --device cuda   # fp32 and AMP on the GPU, and the CPU's
    python bench/gpu_check.py pool-overhead --device cuda       # bench/trainer_slots.py with a real GPU
    python bench/gpu_check.py sweep --device cuda               # examples/kd.yaml, 4 trials, training on the GPU

Parts:

- `images-per-second`: the project's trainer (`trainables.train.fit`) on the demo's data (its
  `data:` section, 1000 generated images at 128 px, YOLO-n, its `training:` settings), timed over a
  slice of `--seconds` after `--warmup-batches` batches, in fp32 and with AMP
  (`TrainSettings.amp`: float16 on CUDA, bfloat16 on a CPU with native bf16, else no AMP run), on
  the GPU and on the CPU with the demo's torch threads. Also the seconds a fresh process pays to
  create its CUDA context.
- `pool-overhead`: `bench/trainer_slots.py`'s three ways to serve a training slot, on a real GPU
  (with `--device cpu`, its mock GPU): wall time of a 1-epoch training minus its epoch's seconds.
- `sweep`: the demo (`examples/kd.yaml`) with `searcher.trials: 4` and `resources.train.gpu: 1`
  (0 with `--device cpu`), in a fresh sweep directory under `--work`; prints each trial as it ends
  and the wall time from the sweep's start (Ray, MLflow and the teacher included) to its report.
  TFLite is left out of `search.runtime` when its converter or runtime is not installed.

Every part prints its figures as they come, adds them to `--json` (default `$OUT/gpu_check.json`
when OUT is set) as they come, so a run cut off by its budget still leaves them, and exits 3,
naming the missing Python packages, when this Python cannot run it. `--quick` shrinks every part
to seconds on a CPU (tiny data, 1 epoch, 2 baseline trials): what the tests run. `--set KEY=YAML`
and `--drop KEY` change the demo's sweep file (`--set fixed.epochs=3`, `--drop search.kd_factor`).
"""
from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import math
import os
import platform
import shutil
import signal
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

DEMO = REPO / "examples" / "kd.yaml"
SKIPPED = 3  # exit status of a part this Python cannot run (missing packages, no CUDA device)

# What each part imports, by top-level module, and the package that provides each (to carry or install).
PACKAGES = {"torch": "torch", "numpy": "numpy", "PIL": "pillow", "yaml": "pyyaml", "pydantic": "pydantic",
            "pycocotools": "pycocotools", "ray": "ray", "mlflow": "mlflow", "optuna": "optuna", "onnx": "onnx",
            "onnxslim": "onnxslim", "onnxruntime": "onnxruntime", "sqlalchemy": "sqlalchemy", "alembic": "alembic",
            "pandas": "pandas", "matplotlib": "matplotlib", "plotly": "plotly", "rich": "rich"}
TRAINER = ("torch", "numpy", "PIL", "yaml", "pydantic", "pycocotools")
PARTS = {
    "images-per-second": (TRAINER, ("orchestrator.config", "trainables.train")),
    "pool-overhead": ((*TRAINER, "ray"), ("orchestrator.trainers", "orchestrator.stages")),
    "sweep": ((*TRAINER, "ray", "mlflow", "optuna", "onnx", "onnxslim", "onnxruntime", "sqlalchemy", "alembic",
               "pandas", "matplotlib", "plotly", "rich"), ("orchestrator.sweep", "ray.tune.search.optuna")),
}
TFLITE_TOOLS = ("litert_torch", "ai_edge_quantizer", "ai_edge_litert")  # convert, quantize, run

# --quick: every part in seconds on a CPU. A small generated set (the same generator, fewer images).
QUICK_SETS = ("data.synth={train: 48, val: 16}", "data.train_subset=48", "data.val_subset=16",
              "data.calibration_images=8")
QUICK_SWEEP_SETS = ("fixed.epochs=1", "search.quantization={choice: [fp32]}",
                    "board.timing={warmup_runs: 1, min_runs: 3, min_seconds: 0}")
QUICK_SWEEP_DROPS = ("search.kd_method", "search.kd_factor")  # baselines only: no teacher to train


def say(text: str) -> None:
    print(text, flush=True)


# ---- what this Python can run -----------------------------------------------------------------------

def missing_modules(part: str) -> list[str]:
    """What keeps `part` from running here, in words: modules not installed (with their packages), else
    the first of its own modules that does not import, and why."""
    needed, entries = PARTS[part]
    missing = [f"no module {m} (pip: {PACKAGES[m]})" for m in needed if importlib.util.find_spec(m) is None]
    if missing:
        return missing
    for entry in entries:
        try:
            importlib.import_module(entry)
        except Exception as e:  # noqa: BLE001 - a package built for another Python fails in many ways
            return [f"{entry} does not import ({type(e).__name__}: {e})"]
    return []


def require(part: str, device: str) -> None:
    """Exit SKIPPED, saying why, when this Python cannot run `part` on `device`."""
    missing = missing_modules(part)
    if missing:
        say(f"SKIPPED {part} with {sys.executable}: {', '.join(missing)}; bench/gpu_site.sh packs the packages "
            f"that the GPU image lacks")
        sys.exit(SKIPPED)
    if device == "cuda":
        import torch

        if not torch.cuda.is_available():
            say(f"SKIPPED {part}: no CUDA device for torch {torch.__version__} (built for CUDA "
                f"{torch.version.cuda}; CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', 'unset')})")
            sys.exit(SKIPPED)


def environment() -> dict:
    env = {"python": platform.python_version(), "executable": sys.executable, "cpus": os.cpu_count(),
           "machine": platform.machine(), "torch": None, "cuda": None, "gpu": None}
    if importlib.util.find_spec("torch") is not None:
        import torch

        env.update(torch=torch.__version__, cuda=torch.version.cuda)
        if torch.cuda.is_available():
            env["gpu"] = torch.cuda.get_device_name(0)
    return env


def preflight(args: argparse.Namespace) -> int:
    env = environment()
    say(f"python {env['python']} ({env['executable']}), {env['cpus']} CPUs, {env['machine']}")
    say(f"torch {env['torch'] or 'MISSING'}" + (f", built for CUDA {env['cuda']}" if env["cuda"] else ", CPU build")
        + (f", GPU: {env['gpu']}" if env["gpu"] else ", no CUDA device visible"))
    runnable = {}
    for part in PARTS:
        missing = missing_modules(part)
        runnable[part] = not missing
        say(f"  {part:18} " + ("ready" if not missing else "cannot run: " + ", ".join(missing)))
    tflite = [m for m in TFLITE_TOOLS if importlib.util.find_spec(m) is None]
    say("  tflite             " + ("ready" if not tflite else f"lacks {', '.join(tflite)}: the sweep times ONNX only"))
    Figures(args.json).add("environment", {**env, "runnable": runnable, "tflite_missing": tflite})
    return 0 if all(runnable.values()) else SKIPPED


# ---- figures, written as they come --------------------------------------------------------------------

class Figures:
    """One JSON object of every part's figures; each `add` rewrites the file whole (renamed into place)."""

    def __init__(self, path: Path | None) -> None:
        self.path = path

    def add(self, key: str, value: object) -> None:
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            figures = json.loads(self.path.read_text())
        except (OSError, ValueError):
            figures = {}
        figures[key] = value
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(json.dumps(figures, indent=2, default=str))
        tmp.replace(self.path)


# ---- the demo's sweep file, changed ---------------------------------------------------------------------

def set_key(raw: dict, assignment: str) -> None:
    """`a.b.c=YAML`: set raw["a"]["b"]["c"] to the YAML value, making the mappings on the way."""
    import yaml

    key, sep, value = assignment.partition("=")
    if not sep or not key:
        raise SystemExit(f"--set {assignment!r}: expected KEY=VALUE, e.g. fixed.epochs=3")
    *path, last = key.strip().split(".")
    node = raw
    for part in path:
        node = node.setdefault(part, {})
    node[last] = yaml.safe_load(value)


def drop_key(raw: dict, key: str) -> None:
    """`a.b.c`: remove raw["a"]["b"]["c"] where it is."""
    *path, last = key.strip().split(".")
    node = raw
    for part in path:
        node = node.get(part) or {}
    node.pop(last, None)


def demo_raw(sets: list[str], drops: list[str] = ()) -> dict:
    import yaml

    raw = yaml.safe_load(DEMO.read_text())
    for key in drops:
        drop_key(raw, key)
    for assignment in sets:
        set_key(raw, assignment)
    return raw


def parse_demo(raw: dict):
    from orchestrator.config import parse_config

    return parse_config(raw, source=f"{DEMO} (bench/gpu_check.py)", base_dir=DEMO.parent)


def default_work() -> Path:
    return Path(os.environ.get("GPU_CHECK_WORK") or REPO / "runs" / "gpu-check")


def part_sets(args: argparse.Namespace, *extra_quick: str) -> list[str]:
    return [*(QUICK_SETS + extra_quick if args.quick else ()), *args.set]


# ---- images-per-second ----------------------------------------------------------------------------------

class _SliceDone(Exception):
    """Raised from the trainer's batch callback once the slice is timed."""


class BatchClock:
    """`fit`'s `on_batch`: starts the clock after `warmup` batches, counts images until `seconds` have
    passed, then stops the training. The trainer reads each batch's losses as Python floats, which
    waits for the device, so the host clock sees finished batches."""

    def __init__(self, images: int, batch_size: int, warmup: int, seconds: float) -> None:
        self.images, self.batch_size, self.warmup, self.seconds = images, batch_size, warmup, seconds
        self.batches = self.counted = 0
        self.started = self.last = None

    def __call__(self, epoch: int, batch: int, batches: int, losses: dict) -> None:
        now = time.perf_counter()
        self.batches += 1
        if self.batches == self.warmup:
            self.started = now
        elif self.batches > self.warmup:
            self.counted += min(self.batch_size, self.images - (batch - 1) * self.batch_size)
            self.last = now
            if now - self.started >= self.seconds:
                raise _SliceDone

    @property
    def images_per_second(self) -> float | None:
        return self.counted / (self.last - self.started) if self.counted else None


def cuda_init_seconds() -> float:
    """What a fresh process pays before its first CUDA kernel: the context and the first allocation."""
    import torch

    started = time.perf_counter()
    torch.cuda.init()
    torch.ones(1, device="cuda").add_(1)
    torch.cuda.synchronize()
    return time.perf_counter() - started


def time_trainer(train, spec, base, *, device: str, amp: bool, warmup: int, seconds: float, work: Path) -> dict:
    import torch

    from trainables.train import autocast_dtype, fit

    cfg = replace(base, device=device, amp=amp)
    clock = BatchClock(len(train), cfg.batch_size, max(warmup, 1), seconds)
    shutil.rmtree(work, ignore_errors=True)
    try:
        fit(spec, train, None, cfg, work, on_batch=clock)
    except _SliceDone:
        pass
    finally:
        shutil.rmtree(work, ignore_errors=True)
    dtype = autocast_dtype(torch.device(device)) if amp else None
    return {"device": device, "precision": "amp" if amp else "fp32", "autocast": str(dtype).replace("torch.", "")
            if dtype else None, "images_per_s": clock.images_per_second, "images": clock.counted,
            "seconds": (clock.last - clock.started) if clock.counted else 0.0, "torch_threads": torch.get_num_threads()}


def part_images_per_second(args: argparse.Namespace) -> int:
    require("images-per-second", args.device)
    import torch

    from detection.coco import CocoDataset
    from orchestrator.datasets import data_splits
    from trainables.hyper import TrainConfig
    from trainables.models.yolo import ModelSpec
    from trainables.train import autocast_dtype

    figures = Figures(args.json)
    out: dict = {}
    if args.device == "cuda":
        out["cuda_init_s"] = cuda_init_seconds()
        say(f"CUDA context and first kernel: {out['cuda_init_s']:.2f} s ({torch.cuda.get_device_name(0)})")
    cfg = parse_demo(demo_raw(part_sets(args), args.drop))
    space = cfg.search
    threads = args.threads or max(math.ceil(cfg.resources.train.cpu), 1)  # the sweep's torch threads per trainer
    started = time.perf_counter()
    train = CocoDataset(data_splits(cfg.data, seed=cfg.seed).train)
    spec = ModelSpec(str(space.base_value("student")), train.num_classes)
    base = TrainConfig.from_settings(cfg.training, epochs=int(space.base_value("epochs")),
                                     img_size=int(space.base_value("img_size")), seed=cfg.seed,
                                     torch_threads=threads)
    out.update(model=f"yolo{spec.size}", train_images=len(train), img_size=base.img_size, batch_size=base.batch_size,
               epochs_at_most=base.epochs, warmup_batches=args.warmup_batches, seconds_per_run=args.seconds,
               data_s=time.perf_counter() - started, runs=[])
    say(f"trainer: YOLO-{spec.size}, {len(train)} images at {base.img_size} px, batch {base.batch_size}, "
        f"{args.warmup_batches} warm-up batches then {args.seconds:g} s timed (at most {base.epochs} epochs); "
        f"{threads} torch thread(s) on the CPU")
    plan = [("cuda", False), ("cuda", True)] if args.device == "cuda" else []
    plan += [("cpu", False)] + ([("cpu", True)] if autocast_dtype(torch.device("cpu")) is not None else [])
    if autocast_dtype(torch.device("cpu")) is None:
        say("cpu amp: not run, this CPU has no native bfloat16 (the trainer runs AMP there as fp32)")
    for device, amp in plan:
        run = time_trainer(train, spec, base, device=device, amp=amp, warmup=args.warmup_batches,
                           seconds=args.seconds, work=args.work / f"ips-{device}-{'amp' if amp else 'fp32'}")
        out["runs"].append(run)
        ips = run["images_per_s"]
        say(f"{device:4} {run['precision']:4} ({run['autocast'] or 'float32'}): "
            + (f"{ips:8.1f} images/s over {run['images']} images in {run['seconds']:.1f} s" if ips else
               "no batch timed (fewer batches than the warm-up)"))
        out["ratios"] = ratios(out["runs"])
        figures.add("images_per_second", out)
    for name, ratio in out["ratios"].items():
        say(f"{name}: {ratio:.2f}x")
    return 0


def ratios(runs: list[dict]) -> dict[str, float]:
    """Speed-ups between the runs there are: each GPU run against the CPU's fp32, AMP against fp32."""
    ips = {f"{r['device']} {r['precision']}": r["images_per_s"] for r in runs if r["images_per_s"]}
    pairs = [("cuda fp32", "cpu fp32"), ("cuda amp", "cpu fp32"), ("cuda amp", "cuda fp32"), ("cpu amp", "cpu fp32")]
    return {f"{a} / {b}": ips[a] / ips[b] for a, b in pairs if a in ips and b in ips}


# ---- pool-overhead ----------------------------------------------------------------------------------------

def part_pool_overhead(args: argparse.Namespace) -> int:
    require("pool-overhead", args.device)
    from bench.trainer_slots import measure

    figures = Figures(args.json)
    raw = demo_raw(part_sets(args), args.drop)
    data = raw.get("data") or {}
    train, val = int(data.get("train_subset") or 1000), int(data.get("val_subset") or 150)
    real = args.device == "cuda"
    out: dict = {"gpu": "real" if real else "mock (declared only; training on the CPU, no CUDA)",
                 "trainings_per_way": args.trainings, "train_images": train, "val_images": val, "ways": {}}
    say(f"trainer slots on a local Ray with {'the real GPU' if real else 'one MOCK GPU'}: {args.trainings} trainings "
        f"per way of YOLO-n, 1 epoch on {train} images at 128 px, val on {val}; overhead = wall - epoch seconds")
    deadline = time.perf_counter() + args.budget if args.budget else None

    def heard(way: str, number: int, wall: float, overhead: float) -> None:
        say(f"  {way:45} #{number}: wall {wall:6.2f} s, overhead {overhead:6.2f} s")
        out["ways"].setdefault(way, {"runs": []})["runs"].append([wall, overhead])
        figures.add("pool_overhead", out)

    done = measure(args.trainings, train=train, val=val, synth=data.get("synth"), mock_gpu=not real,
                   on_training=heard, deadline=deadline)
    out["ways"] = done
    figures.add("pool_overhead", out)
    say(f"{'way':45} {'first: wall, overhead s':>25} {'then (median): wall, overhead s':>33}")
    for way, f in done.items():
        say(f"{way:45} {f['first'][0]:12.2f} {f['first'][1]:12.2f} {f['median_wall']:16.2f} "
            f"{f['median_overhead']:16.2f}")
    return 0


# ---- sweep --------------------------------------------------------------------------------------------------

def sweep_config(args: argparse.Namespace) -> tuple[dict, list[str]]:
    """The demo's sweep file as this check runs it, and what was changed (for the figures)."""
    changes = [f"name=gpu-check-{args.device}", f"output_dir={args.work.resolve()}",
               f"searcher.trials={args.trials}", f"resources.train.gpu={1 if args.device == 'cuda' else 0}",
               *part_sets(args, *QUICK_SWEEP_SETS)]
    drops = [*(QUICK_SWEEP_DROPS if args.quick else ()), *args.drop]
    raw = demo_raw(changes, drops)
    changes += [f"-{key}" for key in drops]
    runtimes = raw.get("search", {}).get("runtime")
    lacking = [m for m in TFLITE_TOOLS if importlib.util.find_spec(m) is None]
    if lacking and isinstance(runtimes, dict) and "tflite" in (runtimes.get("choice") or []):
        kept = [r for r in runtimes["choice"] if r != "tflite"]
        say(f"search.runtime: tflite left out ({', '.join(lacking)} not installed): {kept}")
        if len(kept) == 1:
            del raw["search"]["runtime"]
            raw.setdefault("fixed", {})["runtime"] = kept[0]
        else:
            raw["search"]["runtime"] = {"choice": kept}
        changes.append(f"search.runtime={kept}")
    return raw, changes


TRIAL_KNOBS = ("kd_method", "kd_factor", "quantization", "runtime")
TRIAL_METRICS = ("format", "map50_95", "latency_ms", "size_mb", "train_s", "time_total_s")


def _trial_line(record, elapsed: float) -> str:
    k, m = record.knobs, record.metrics
    kd = k.get("kd_method", "?") + (f" x{k['kd_factor']:.2g}" if k.get("kd_method") not in (None, "none") else "")
    what = f"{kd}, {k.get('quantization')}, {k.get('runtime')}"
    if not record.complete:
        return f"  {elapsed:7.1f} s  trial {record.trial_id} {record.status}: {what}: {record.error or ''}"[:200]
    return (f"  {elapsed:7.1f} s  trial {record.trial_id} complete: {what}: mAP@.5:.95 {m.get('map50_95', 0):.3f}, "
            f"latency {m.get('latency_ms', 0):.2f} ms")


def part_sweep(args: argparse.Namespace) -> int:
    require("sweep", args.device)
    from orchestrator.results import load_records
    from orchestrator.sweep import run_sweep

    figures = Figures(args.json)
    raw, changes = sweep_config(args)
    cfg = parse_demo(raw)
    shutil.rmtree(cfg.sweep_dir, ignore_errors=True)  # a fresh sweep each time
    out: dict = {"device": args.device, "trials": cfg.searcher.trials, "concurrency": cfg.searcher.concurrency,
                 "changes": changes, "sweep_dir": str(cfg.sweep_dir), "finished": False, "ended": []}
    say(f"sweep {cfg.name}: the demo's sweep file with {'; '.join(changes[2:])}")
    started = time.perf_counter()
    out["elapsed_s"] = 0.0
    figures.add("sweep", out)  # cut off before any trial ends, the figures still say how far it got
    stop = threading.Event()

    def watch() -> None:  # each ended trial, as the journal gets it; the time so far every 10 s
        seen: set[str] = set()
        while not stop.wait(1.0):
            elapsed = time.perf_counter() - started
            if elapsed - out["elapsed_s"] >= 10:
                out["elapsed_s"] = elapsed
                figures.add("sweep", out)
            for record in load_records(cfg.sweep_dir):
                if record.ended and record.trial_id not in seen:
                    seen.add(record.trial_id)
                    elapsed = time.perf_counter() - started
                    say(_trial_line(record, elapsed))
                    out["ended"].append({"at_s": elapsed, "trial": record.trial_id, "status": record.status,
                                         **{k: record.knobs.get(k) for k in TRIAL_KNOBS},
                                         **{k: record.metrics.get(k) for k in TRIAL_METRICS},
                                         "error": record.error})
                    out["elapsed_s"] = elapsed
                    figures.add("sweep", out)

    watcher = threading.Thread(target=watch, daemon=True, name="journal-watch")
    watcher.start()
    try:
        result = run_sweep(cfg, show_progress=False)
    finally:
        stop.set()
        watcher.join()
    wall = time.perf_counter() - started
    out.update(finished=not result.interrupted, wall_s=wall, complete=sum(r.complete for r in result.records),
               failed=len(result.failed), front=[r.trial_id for r in result.front],
               trials_per_minute=60 * len(result.records) / wall if wall else None)
    figures.add("sweep", out)
    say(f"sweep wall time {wall:.1f} s ({wall / 60:.1f} min): {out['complete']} of {cfg.searcher.trials} trials "
        f"complete, {out['failed']} failed; Pareto front {', '.join(out['front']) or '-'}; state in {cfg.sweep_dir}")
    return 0 if not result.failed and not result.interrupted else 1


# ---- command line ------------------------------------------------------------------------------------------

def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line, with each part's defaults filled in (smaller ones under --quick)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="part", required=True)
    default_json = Path(os.environ["OUT"]) / "gpu_check.json" if os.environ.get("OUT") else None

    def part(name: str, run, help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text)
        p.add_argument("--device", choices=("cuda", "cpu"), default="cuda",
                       help="cuda: the GPU (with the CPU's figures beside); cpu: this CPU alone (tests)")
        p.add_argument("--json", type=Path, default=default_json, help="add the figures here ($OUT/gpu_check.json)")
        p.add_argument("--work", type=Path, default=default_work(),
                       help="scratch and sweep directory ($GPU_CHECK_WORK, else runs/gpu-check)")
        p.add_argument("--quick", action="store_true", help="tiny data, 1 epoch, 2 trials: seconds on a CPU")
        p.add_argument("--set", action="append", default=[], metavar="KEY=YAML",
                       help="change the demo's sweep file, e.g. fixed.epochs=3 (repeatable)")
        p.add_argument("--drop", action="append", default=[], metavar="KEY",
                       help="remove a key of the demo's sweep file, e.g. search.kd_factor (repeatable)")
        p.set_defaults(run=run)
        return p

    pre = sub.add_parser("preflight", help="print what this Python can run and what it lacks")
    pre.add_argument("--json", type=Path, default=default_json)
    pre.set_defaults(run=preflight)
    ips = part("images-per-second", part_images_per_second, "trainer images/s, fp32 and AMP, GPU against CPU")
    ips.add_argument("--seconds", type=float, default=None, help="timed seconds per run (default 8; --quick 1)")
    ips.add_argument("--warmup-batches", type=int, default=None, help="untimed batches first (default 5; --quick 2)")
    ips.add_argument("--threads", type=int, default=None, help="torch threads (default: the demo's train CPUs)")
    pool = part("pool-overhead", part_pool_overhead, "per-trial overhead of the trainer slots")
    pool.add_argument("--trainings", type=int, default=None, help="trainings per way (default 3; --quick 2)")
    pool.add_argument("--budget", type=float, default=None, help="seconds after which no training starts")
    sw = part("sweep", part_sweep, "the demo sweep on the GPU, with its wall time")
    sw.add_argument("--trials", type=int, default=None, help="trials (default 4; --quick 2)")
    args = parser.parse_args(argv)
    quick = getattr(args, "quick", False)
    for name, normal, small in (("seconds", 8.0, 1.0), ("warmup_batches", 5, 2), ("trainings", 3, 2),
                                ("trials", 4, 2)):
        if hasattr(args, name) and getattr(args, name) is None:
            setattr(args, name, small if quick else normal)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    # Ray's workers import the project too; where it is not installed, they find it through this.
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)
    # `timeout` (bench/gpu_check.sh) ends a part with SIGTERM: unwind, so Ray is shut down and the figures stay.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    sys.exit(main())
