"""Does the sweep machinery scale to hundreds of trials? A 200-trial sweep, timed and counted.

Training and export are the TEST-ONLY stand-in stages of `orchestrator.stand_in_stages` (training sleeps
`--train-seconds` per trial, export returns a toy ONNX detector, accuracy is a function of the
knobs): no number here says anything about detectors. Everything else is the real sweep: a local
Ray, Ray Tune (trial processes reused from trial to trial), the searcher, the emulated board actor (the toy
artifact is timed once, then answered from the board cache), the MLflow SQLite store, trials.jsonl
and the Pareto report.

Printed: trials per minute; the number of MLflow child runs (counted through the MLflow client);
the driver's RSS after 50/100/150/200 finished trials and its peak (bounded memory); and where a
trial's time goes, per phase, from timestamps taken in the driver's callbacks and in the trial:
trial start to its first epoch result (trial process + training task start), export, board round
trip, the final report to the driver, the trial's end, and the driver's own time in the MLflow
callback, the results log and the searcher.

Run: `.venv/bin/python bench/sweep_scale.py [--trials 200] [--concurrency 4] [--searcher random]`;
`--gpus 2` declares two GPUs to the local Ray (a MOCK: nothing uses one) and trains on GPU slots,
i.e. the long-lived trainer actors of `orchestrator.trainers`, as a GPU cluster does.
"""
from __future__ import annotations

import argparse
import functools
import json
import os
import shutil
import resource
import statistics
import sys
import tempfile
import threading
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)

import orchestrator.sweep  # noqa: E402
from orchestrator.config import parse_config  # noqa: E402
from orchestrator.results import ResultsLog  # noqa: E402
from orchestrator.stand_in_stages import StandInStages  # noqa: E402
from orchestrator.tracking.callback import MlflowTrialCallback  # noqa: E402

RSS_AT = (50, 100, 150, 200)


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def scratch(prefix: str, log_name: str) -> tuple[Path, Path]:
    """A fresh directory for a bench's sweep, with its own data, teacher and board caches, and an
    empty log file in it that the trials append to."""
    root = Path(tempfile.mkdtemp(prefix=prefix))
    os.environ["EDGESWEEP_CACHE"] = str(root / "cache")
    os.environ["EDGESWEEP_BOARD_CACHE"] = str(root / "board-cache")
    log = root / log_name
    log.touch()
    return root, log


def _append(path: str, record: dict) -> None:
    with open(path, "a") as f:  # one short write per line: O_APPEND keeps concurrent trials' lines whole
        f.write(json.dumps(record) + "\n")


@dataclass(frozen=True)
class TimedStandInStages(StandInStages):
    """The stand-in stages, plus a log line per export and board call (taken in the trial process)."""

    log_path: str = ""

    def _log(self, phase: str, start: float) -> None:
        from ray import tune

        _append(self.log_path, {"trial": tune.get_context().get_trial_id(), "phase": phase, "start": start,
                                "end": time.time()})

    def export_and_score(self, student, trial, ctx):
        start = time.time()
        exported = super().export_and_score(student, trial, ctx)
        self._log("export", start)
        return exported

    def time_on_board(self, exported, trial, ctx):
        start = time.time()
        latency = StandInStages.time_on_board(exported, trial, ctx)
        self._log("board", start)
        return latency


class Clock:
    """Driver-side timestamps and the time spent inside wrapped driver calls."""

    def __init__(self):
        self.spent: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        self.created: dict[str, float] = {}  # by the searcher (random and grid only)
        self.started: dict[str, float] = {}
        self.first_result: dict[str, float] = {}
        self.final_report: dict[str, float] = {}
        self.ended: dict[str, float] = {}
        self.rss_at: dict[int, float] = {}

    def timed(self, name: str, fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.spent[name] += time.perf_counter() - t0
                self.calls[name] += 1
        return wrapper


CLOCK = Clock()


class WorkerPoolSampler(threading.Thread):
    """Once a second: how many of our raylet's worker processes sit idle, and their total RSS."""

    def __init__(self, raylet_pid: int):
        super().__init__(daemon=True)
        self.raylet_pid, self.samples = raylet_pid, []  # (idle workers, their RSS MB)
        self.stopped = threading.Event()

    def run(self):
        while not self.stopped.wait(1.0):
            idle, rss = 0, 0.0
            for entry in Path("/proc").iterdir():
                try:
                    stat = (entry / "stat").read_text()
                    if entry.name.isdigit() and int(stat.rsplit(")", 1)[1].split()[1]) == self.raylet_pid \
                            and (entry / "cmdline").read_bytes().startswith(b"ray::IDLE"):
                        idle += 1
                        rss += int(stat.rsplit(")", 1)[1].split()[21]) * os.sysconf("SC_PAGE_SIZE") / 2 ** 20
                except (OSError, ValueError, IndexError):
                    continue
            self.samples.append((idle, rss))


class MeasuringResultsLog(ResultsLog):
    """The sweep's results log, unchanged, plus per-trial driver timestamps and RSS samples."""

    def on_trial_start(self, iteration, trials, trial, **info):
        CLOCK.started[trial.trial_id] = time.time()

    def on_trial_result(self, iteration, trials, trial, result, **info):
        CLOCK.first_result.setdefault(trial.trial_id, time.time())
        if result.get("trial_complete"):
            CLOCK.final_report[trial.trial_id] = time.time()

    def _ended(self, trial) -> None:
        CLOCK.ended[trial.trial_id] = time.time()
        if len(CLOCK.ended) in RSS_AT:
            CLOCK.rss_at[len(CLOCK.ended)] = rss_mb()

    def on_trial_complete(self, iteration, trials, trial, **info):
        super().on_trial_complete(iteration, trials, trial, **info)
        self._ended(trial)

    def on_trial_error(self, iteration, trials, trial, **info):
        super().on_trial_error(iteration, trials, trial, **info)
        self._ended(trial)


def instrument() -> None:
    """Time the driver's callbacks and searcher calls, in this process only."""
    for method in ("on_trial_start", "on_trial_result", "on_trial_complete", "on_trial_error"):
        setattr(MlflowTrialCallback, method, CLOCK.timed(f"mlflow {method}", getattr(MlflowTrialCallback, method)))
    MlflowTrialCallback._guarded = CLOCK.timed("mlflow writes (writer thread, off Tune's loop)",
                                               MlflowTrialCallback._guarded)
    for method in ("on_trial_complete", "on_trial_error"):
        setattr(MeasuringResultsLog, method, CLOCK.timed(f"results log {method}", getattr(MeasuringResultsLog, method)))
    orchestrator.sweep.ResultsLog = MeasuringResultsLog
    make_searcher = orchestrator.sweep.make_searcher

    def timed_searcher(cfg, sweep_dir):
        searcher, space, samples = make_searcher(cfg, sweep_dir)
        kind = type(searcher)  # wrapped on the class: Tune pickles the searcher's state with the sweep
        for method in ("suggest", "next_trial", "on_trial_complete", "on_trial_result"):
            if method in vars(kind) or hasattr(kind, method):
                setattr(kind, method, CLOCK.timed(f"searcher {method}", getattr(kind, method)))
        if hasattr(kind, "next_trial"):  # Tune's own generator (random, grid): note when it makes a trial
            make_trial = kind.next_trial

            @functools.wraps(make_trial)
            def next_trial(self):
                trial = make_trial(self)
                if trial is not None:
                    CLOCK.created[trial.trial_id] = time.time()
                return trial

            kind.next_trial = next_trial
        return searcher, space, samples

    orchestrator.sweep.make_searcher = timed_searcher


def sweep_config(root: Path, args) -> dict:
    return {
        "name": "scale", "output_dir": str(root / "runs"),
        "data": {"source": "default", "synth": {"train": 8, "val": 4, "size": 64, "seed": 0},
                 "calibration_images": 4},
        "teachers": {"t": {"model": "n", "epochs": 1}},  # named only: stand-in stages train no teacher
        "search": {"kd_method": {"choice": ["none", "output"]}, "kd_factor": {"loguniform": [0.25, 4.0]},
                   "quantization": {"choice": ["fp32", "fp16", "dynamic", "int8"]}},
        "fixed": {"epochs": 2, "img_size": 64, "board_threads": 1, "teacher": "t"},
        "searcher": {"algorithm": args.searcher, "trials": args.trials, "concurrency": args.concurrency,
                     "max_failures": 0},
        # --gpus: each training takes a (declared, MOCK) GPU slot, i.e. a long-lived trainer actor of the
        # pool; simulated_cluster.py reuses this config with arguments of its own (no --gpus)
        "resources": {"train": {"cpu": 0, "gpu": 1} if getattr(args, "gpus", 0) else {"cpu": 0.25},
                      "export": {"cpu": 0.25}},
        "board": {"name": "local", "timing": {"warmup_runs": 2, "min_runs": 5, "min_seconds": 0.05}},
        "mlflow": {"experiment": "scale"},
    }


def count_child_runs(tracking_uri: str, experiment_id: str, parent: str) -> dict[str, int]:
    from mlflow.tracking import MlflowClient
    from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

    client = MlflowClient(tracking_uri=tracking_uri)
    statuses: dict[str, int] = defaultdict(int)
    token = None
    while True:
        page = client.search_runs([experiment_id], f"tags.`{MLFLOW_PARENT_RUN_ID}` = '{parent}'",
                                  max_results=100, page_token=token)
        for run in page:
            statuses[run.info.status] += 1
        token = page.token
        if not token:
            return dict(statuses)


def _median_mean_ms(values: list[float]) -> str:
    return f"{1000 * statistics.median(values):8.0f} {1000 * statistics.mean(values):8.0f}" if values else " " * 17


def profile(trial_log: Path) -> list[tuple[str, list[float]]]:
    phases: dict[str, dict[str, tuple[float, float]]] = defaultdict(dict)
    for line in trial_log.read_text().splitlines():
        r = json.loads(line)
        phases[r["phase"]][r["trial"]] = (r["start"], r["end"])
    board_end = {t: end for t, (_, end) in phases["board"].items()}
    return [
        ("trial created by the searcher -> started (placement group, trial process)",
         [s - CLOCK.created[t] for t, s in CLOCK.started.items() if t in CLOCK.created]),
        ("trial start -> first epoch result (trial process, training task, 1 epoch)",
         [CLOCK.first_result[t] - s for t, s in CLOCK.started.items() if t in CLOCK.first_result]),
        ("export (stand-in: builds the toy ONNX)", [e - s for s, e in phases["export"].values()]),
        ("board round trip (emulated board, cache hits after the first)", [e - s for s, e in phases["board"].values()]),
        ("board end -> final result in the driver (checkpoint upload)",
         [CLOCK.final_report[t] - board_end[t] for t in CLOCK.final_report if t in board_end]),
        ("final result -> trial ended in the driver (its process reset for the next trial)",
         [CLOCK.ended[t] - r for t, r in CLOCK.final_report.items() if t in CLOCK.ended]),
        ("trial start -> trial ended in the driver", [CLOCK.ended[t] - s for t, s in CLOCK.started.items()
                                                      if t in CLOCK.ended]),
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--searcher", default="random", choices=["random", "tpe"])
    parser.add_argument("--train-seconds", type=float, default=0.1)
    parser.add_argument("--num-cpus", type=int, default=2, help="CPUs of the local Ray")
    parser.add_argument("--gpus", type=int, default=0,
                        help="declare this many GPUs (a MOCK: none is used) and train on GPU slots (trainer actors)")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    parser.add_argument("--keep", action="store_true", help="keep the sweep's directory (deleted by default)")
    args = parser.parse_args()

    import ray

    from orchestrator.sweep import init_ray, run_sweep

    instrument()
    root, trial_log = scratch("edgesweep-scale-", "trial-phases.jsonl")
    cfg = parse_config(sweep_config(root, args), base_dir=root)
    stages = TimedStandInStages(train_seconds=args.train_seconds, log_path=str(trial_log))
    print(f"TEST-ONLY stand-in stages (orchestrator.stand_in_stages.StandInStages, train_seconds={args.train_seconds}): "
          f"no detector is trained or exported; the sweep machinery around them is real. State in {root} "
          f"(deleted at the end unless --keep)")
    init_ray(None, num_cpus=args.num_cpus, num_gpus=args.gpus or None)
    (raylet,) = ray._private.worker._global_node.all_processes["raylet"]
    pool = WorkerPoolSampler(raylet.process.pid)
    pool.start()
    rss_start = rss_mb()
    t0 = time.perf_counter()
    result = run_sweep(cfg, stages=stages, show_progress=False)
    wall = time.perf_counter() - t0
    pool.stopped.set()
    ray.shutdown()

    children = count_child_runs(result.tracking_uri, result.experiment_id, result.parent_run_id)
    complete = sum(r.complete for r in result.records)
    figures = {
        "trials": args.trials, "complete": complete, "mlflow_child_runs": sum(children.values()),
        "mlflow_child_status": children, "wall_s": wall, "trials_per_minute": 60 * len(result.records) / wall,
        "concurrency": args.concurrency, "searcher": args.searcher, "rss_start_mb": rss_start,
        "rss_at_mb": CLOCK.rss_at, "peak_rss_mb": peak_rss_mb(), "pareto_size": len(result.front),
    }
    figures["gpu_slots"] = args.gpus
    print(f"\n{args.trials} trials ({args.searcher}, concurrency {args.concurrency}, {args.num_cpus} CPUs"
          f"{f', {args.gpus} MOCK GPU slots (trainer actors)' if args.gpus else ''}): "
          f"{complete} complete, {sum(children.values())} MLflow child runs {children}, Pareto front "
          f"{len(result.front)}")
    print(f"wall {wall:.0f} s (setup included) = {figures['trials_per_minute']:.1f} trials/min")
    print("driver RSS MB: start " + f"{rss_start:.0f}, " + ", ".join(f"after {n}: {v:.0f}" for n, v in
                                                                      sorted(CLOCK.rss_at.items()))
          + f"; peak {figures['peak_rss_mb']:.0f}")
    most_idle = max(pool.samples, default=(0, 0.0))
    figures["idle_ray_workers_max"], figures["idle_ray_workers_rss_mb_at_max"] = most_idle
    print(f"idle Ray worker processes (not the driver): at most {most_idle[0]}, holding {most_idle[1]:.0f} MB RSS")
    print("\nper trial (median, mean ms):")
    figures["profile_median_s"] = {}
    for name, values in profile(trial_log):
        print(f"  {_median_mean_ms(values)}  {name}")
        figures["profile_median_s"][name] = statistics.median(values) if values else None
    lifetimes = [CLOCK.ended[t] - s for t, s in CLOCK.started.items() if t in CLOCK.ended]
    figures["trials_running_on_average"] = sum(lifetimes) / (max(CLOCK.ended.values()) - min(CLOCK.started.values()))
    events = sorted([(s, 1) for t, s in CLOCK.started.items() if t in CLOCK.ended]
                    + [(e, -1) for e in CLOCK.ended.values()])
    running = [0]
    for _, step in events:
        running.append(running[-1] + step)
    figures["trials_running_at_most"] = max(running)
    print(f"  trials running at once: {figures['trials_running_on_average']:.1f} on average, at most "
          f"{figures['trials_running_at_most']}")
    print("\ndriver time in callbacks and searcher (total s, per call ms):")
    for name in sorted(CLOCK.spent):
        print(f"  {CLOCK.spent[name]:7.1f}  {1000 * CLOCK.spent[name] / CLOCK.calls[name]:7.1f}  {name} "
              f"({CLOCK.calls[name]} calls)")
    figures["driver_seconds"] = dict(CLOCK.spent)
    if not args.keep:
        shutil.rmtree(root, ignore_errors=True)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2, default=str))
    ok = complete == args.trials and sum(children.values()) == args.trials and children.get("FINISHED") == args.trials
    if not ok:
        print("FAILED: not every trial completed with a finished MLflow child run", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
