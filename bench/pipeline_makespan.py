"""Does the trainer keep training while the board measures? (issue 7) Makespan of a pipelined sweep.

A sweep of N trials, each training for T seconds on "the GPU" and then taking about T seconds of
board time, can at best finish in max(total training / trainers, total board time) plus one stage
of the other kind ((N + 1) T for one trainer). This runs such a sweep and prints its makespan and
the ratio makespan / max(total training / trainers, total board time); target <= 1.15.

- The GPU is a MOCK accelerator slot: the local Ray declares `num_gpus=1` on a machine without one,
  and `resources.train: {gpu: 1, cpu: 0}` makes every training task take that one slot, so training
  is serialised exactly as on a one-GPU node. Nothing runs on a GPU.
- Training and export are the TEST-ONLY stand-in stages of `orchestrator.stand_in_stages`: training sleeps
  T seconds (inside the real Ray training task), export returns a toy ONNX detector, a different one
  per trial so the board cache never answers.
- The board is real: the emulated board actor on this machine times every artifact, its timing
  protocol's `min_seconds` calibrated so that one artifact takes about T seconds of board time.

Times come from the tasks themselves: each training task logs when it starts and ends, and each
board report carries when its measurement started and ended on the board.

Run: `.venv/bin/python bench/pipeline_makespan.py [--trials 12] [--seconds 2] [--concurrency 3]`.
"""
from __future__ import annotations

import argparse
import functools
import json
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)

import ray  # noqa: E402

from orchestrator.config import parse_config  # noqa: E402
from orchestrator.stand_in_stages import StandInStages, stand_in_train  # noqa: E402


def _append(path: str, record: dict) -> None:
    with open(path, "a") as f:  # one short write per line: O_APPEND keeps concurrent writers' lines whole
        f.write(json.dumps(record) + "\n")


def timed_stand_in_train(trial, spec, teacher, resume, *, seconds, fail_when, log_path):
    """The stand-in training task, logging when it really started and ended (it holds the GPU slot)."""
    start = time.time()
    yield from stand_in_train(trial, spec, teacher, resume, seconds=seconds, fail_when=fail_when)
    _append(log_path, {"phase": "train", "start": start, "end": time.time()})


# The toy model runs in ~0.1 ms: without a high cap, the protocol's max_runs would end the timing
# long before min_seconds, and the board time would not follow T.
MAX_RUNS = 10_000_000


@dataclass(frozen=True)
class TimedStandInStages(StandInStages):
    log_path: str = ""

    @property
    def train_stream(self):
        return functools.partial(timed_stand_in_train, seconds=self.train_seconds, fail_when=self.fail_when,
                                 log_path=self.log_path)

    def time_on_board(self, exported, trial, ctx):
        reports = StandInStages.time_on_board(exported, trial, ctx)
        for latency in reports.values():
            _append(self.log_path, {"phase": "board", "start": latency["started_at"], "end": latency["ended_at"],
                                    "cached": latency["cached"]})
        return reports


def calibrate_min_seconds(target_s: float, board_name: str, cache_dir: Path) -> tuple[float, float]:
    """`min_seconds` that makes one toy artifact take about `target_s` of board time, and the overhead
    (load, first run, warm-up, pre/post-processing timing) it compensates."""
    from device_actors.client import connect_board
    from device_actors.timing import TimingProtocol
    from device_actors.toy_model import toy_detector_onnx

    board = connect_board(board_name, cache_dir=str(cache_dir))
    protocol = TimingProtocol(warmup_runs=2, min_runs=5, min_seconds=target_s, max_runs=MAX_RUNS)
    for seed in (987654321, 987654322):  # the first also pays the actor's cold start: keep the second
        report = board.measure(toy_detector_onnx(64, width=StandInStages.toy_width, seed=seed), protocol=protocol)
    overhead = (report.ended_at - report.started_at) - target_s
    return max(target_s - overhead, 0.1), overhead


def sweep_config(root: Path, args, min_seconds: float) -> dict:
    return {
        "name": "pipeline", "output_dir": str(root / "runs"),
        "data": {"source": "default", "synth": {"train": 8, "val": 4, "size": 64, "seed": 0},
                 "calibration_images": 4},
        "teachers": {"t": {"model": "n", "epochs": 1}},  # named only: stand-in stages train no teacher
        "search": {"kd_factor": {"loguniform": [0.25, 4.0]}},  # continuous: every trial's artifact differs
        "fixed": {"kd_method": "output", "teacher": "t", "epochs": 2, "img_size": 64, "board_threads": 1},
        "searcher": {"algorithm": "random", "trials": args.trials, "concurrency": args.concurrency,
                     "max_failures": 0},
        "resources": {"train": {"gpu": 1, "cpu": 0}, "export": {"cpu": 0.25}},
        "board": {"name": "local", "timing": {"warmup_runs": 2, "min_runs": 5, "min_seconds": min_seconds,
                                              "max_runs": MAX_RUNS}},
        "mlflow": {"experiment": "pipeline"},
    }


def union_length(intervals: list[tuple[float, float]]) -> float:
    total, end = 0.0, float("-inf")
    for s, e in sorted(intervals):
        if e > end:
            total += e - max(s, end)
            end = e
    return total


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=12)
    parser.add_argument("--seconds", type=float, default=2.0, help="T: training seconds per trial, and board time")
    parser.add_argument("--concurrency", type=int, default=3)
    parser.add_argument("--num-cpus", type=int, default=2, help="CPUs of the local Ray")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    parser.add_argument("--keep", action="store_true", help="keep the sweep's directory (deleted by default)")
    args = parser.parse_args()

    from orchestrator.sweep import Sweep, init_ray

    root = Path(tempfile.mkdtemp(prefix="edgesweep-pipeline-"))
    os.environ["EDGESWEEP_CACHE"] = str(root / "cache")
    os.environ["EDGESWEEP_BOARD_CACHE"] = str(root / "board-cache")
    log_path = root / "phases.jsonl"
    log_path.touch()
    trainers = 1
    print(f"local Ray with num_gpus={trainers}: a MOCK accelerator slot (no GPU is used); TEST-ONLY stand-in "
          f"training (sleeps {args.seconds:g} s holding the slot) and export (a distinct toy ONNX per trial); "
          f"real emulated board. State in {root} (deleted at the end unless --keep)")
    init_ray(None, num_cpus=args.num_cpus, num_gpus=trainers)
    min_seconds, overhead = calibrate_min_seconds(args.seconds, "local", root / "board-cache")
    print(f"board protocol: min_seconds {min_seconds:.2f} (+ {overhead:.2f} s of load, warm-up, pre/post timing)")
    cfg = parse_config(sweep_config(root, args, min_seconds), base_dir=root)
    stages = TimedStandInStages(train_seconds=args.seconds, distinct_artifacts=True, log_path=str(log_path))
    t0 = time.time()
    sweep = Sweep(cfg, stages=stages)  # data check, MLflow store and parent run, board actor
    opened = time.time()
    result = sweep.run(show_progress=False)
    fit_wall = time.time() - t0
    ray.shutdown()

    records = [json.loads(line) for line in log_path.read_text().splitlines()]
    train = [(r["start"], r["end"]) for r in records if r["phase"] == "train"]
    board = [(r["start"], r["end"]) for r in records if r["phase"] == "board"]
    cached = sum(r["phase"] == "board" and r["cached"] for r in records)
    total_train = sum(e - s for s, e in train)
    total_board = sum(e - s for s, e in board)
    first, last = min(s for s, _ in train), max(e for _, e in board)
    makespan = last - first
    bound = max(total_train / trainers, total_board)
    trainer_idle = (max(e for _, e in train) - first) - union_length(train)
    complete = sum(r.complete for r in result.records)
    figures = {
        "trials": args.trials, "complete": complete, "concurrency": args.concurrency, "T_s": args.seconds,
        "trainers": trainers, "makespan_s": makespan, "total_training_s": total_train,
        "training_per_trainer_s": total_train / trainers, "total_board_s": total_board, "board_cache_hits": cached,
        "ratio": makespan / bound, "ideal_ratio": (len(train) + 1) / len(train), "trainer_idle_s": trainer_idle,
        "board_idle_s": (last - min(s for s, _ in board)) - union_length(board), "sweep_wall_s": fit_wall,
        "ratio_with_startup": fit_wall / bound, "opening_s": opened - t0, "tune_to_first_training_s": first - opened,
        "after_last_board_s": t0 + fit_wall - last,
    }
    print(f"\n{complete}/{args.trials} trials complete, concurrency {args.concurrency}, T = {args.seconds:g} s, "
          f"{cached} board cache hits")
    print(f"makespan (first training start -> last board end) {makespan:7.1f} s")
    print(f"total training / trainers ({len(train)} tasks / {trainers})   {total_train / trainers:7.1f} s")
    print(f"total board time ({len(board)} artifacts)              {total_board:7.1f} s")
    print(f"ratio makespan / max(...)                        {figures['ratio']:7.3f}  (target <= 1.15; "
          f"a perfect 2-stage pipeline: (N+1)/N = {figures['ideal_ratio']:.3f})")
    print(f"trainer idle between its first and last task      {trainer_idle:7.1f} s")
    print(f"board idle between its first and last artifact   {figures['board_idle_s']:7.1f} s")
    print(f"whole sweep (run_sweep, set-up included)           {fit_wall:7.1f} s -> ratio "
          f"{figures['ratio_with_startup']:.3f}")
    print(f"  before the first training starts: {opened - t0:.1f} s opening the sweep (data check, MLflow store, "
          f"board), {first - opened:.1f} s from Tune's start to the first training task")
    print(f"  after the last board measurement ends: {t0 + fit_wall - last:.1f} s (last report, Pareto report, "
          f"MLflow)")
    if not args.keep:
        shutil.rmtree(root, ignore_errors=True)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    return 0 if complete == args.trials else 1


if __name__ == "__main__":
    sys.exit(main())
