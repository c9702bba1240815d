"""A simulated cluster: 8 GPU slots on two GPU nodes and 2 boards on their own nodes, on this machine.

Does one sweep keep a cluster busy, and what does the driver pay for it? The cluster is real Ray
(`ray.cluster_utils.Cluster`: a head, two worker nodes declaring 4 GPUs each, two board nodes
offering `board_NAME: 1` and the board label, as `board join` does); the GPUs are only declared
(nothing here has one), and training and export are the TEST-ONLY stand-in stages of
`orchestrator.stand_in_stages` (a training task holds its GPU slot for `--train-seconds`, export
builds a distinct toy ONNX per trial). The boards are real latency actors timing those toy models
on this machine's CPU, so their latencies are EMULATED and say nothing about a detector; the
sweep, Tune, Optuna, the MLflow store and the journal are the real ones.

Printed: makespan against its lower bound (the larger of the GPU work / 8 slots, a student trained
once for all its exports, and the busiest board's measured busy time, and never less than one
trial's own chain); per-board utilisation and how many artifacts each board timed, answered from an
artifact of the same graph, or from its cache;
the driver's RSS after every 100 trials and its peak; MLflow writes (calls of MlflowClient's
create/log/set/update methods in the driver) per second; the driver's time in the searcher.

Run: `.venv/bin/python bench/simulated_cluster.py [--trials 500] [--concurrency 12] [--train-seconds 4]`.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)  # the nodes' workers

from bench.sweep_scale import Clock, count_child_runs, peak_rss_mb, rss_mb, scratch
from bench.sweep_scale import sweep_config as scale_config  # noqa: E402
from common.jsonlines import append_line  # noqa: E402
from orchestrator.config import parse_config  # noqa: E402
from orchestrator.stand_in_stages import StandInStages  # noqa: E402
from orchestrator.students import students_trained  # noqa: E402

GPU_NODES, GPUS_PER_NODE = 2, 4
BOARDS = ("board-a", "board-b")
WRITE_PREFIXES = ("create_", "log_", "set_", "update_", "delete_", "finalize_", "transition_")


@dataclass(frozen=True)
class LoggedStandInStages(StandInStages):
    """The stand-in stages, plus one line per board measurement (its board, start and end, taken on the board)."""

    log_path: str = ""

    def time_on_board(self, exported, trial, ctx):
        reports = StandInStages.time_on_board(exported, trial, ctx)
        for name, r in reports.items():
            append_line(Path(self.log_path), json.dumps({"board": name, "start": r["started_at"],
                                                         "end": r["ended_at"], "cached": r["cached"],
                                                         "reused": r.get("reused_from") is not None}))
        return reports


COUNTER = Clock()  # calls and seconds of the driver's MLflow writes and searcher calls


def wrap(owner, method: str, group: str) -> None:
    setattr(owner, method, COUNTER.timed(group, getattr(owner, method)))


def instrument() -> None:
    from mlflow.tracking import MlflowClient

    import orchestrator.sweep

    for method in dir(MlflowClient):
        if method.startswith(WRITE_PREFIXES) and callable(getattr(MlflowClient, method)):
            wrap(MlflowClient, method, "mlflow writes")
    make_searcher = orchestrator.sweep.make_searcher

    def counted(cfg, sweep_dir):
        searcher, space, samples = make_searcher(cfg, sweep_dir)
        kind = type(searcher)
        for method in ("suggest", "on_trial_complete"):
            if hasattr(kind, method):
                wrap(kind, method, f"searcher {method}")
        return searcher, space, samples

    orchestrator.sweep.make_searcher = counted


def start_cluster():
    from ray.cluster_utils import Cluster

    from device_actors.naming import LABEL_KEY, board_resource

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 2})
    for _ in range(GPU_NODES):
        cluster.add_node(num_cpus=0, num_gpus=GPUS_PER_NODE)
    for name in BOARDS:  # as `board join` does: no CPU, no memory for trial processes, the board's resource and label
        cluster.add_node(num_cpus=0, num_gpus=0, memory=0, resources={board_resource(name): 1},
                         labels={LABEL_KEY: name})
    cluster.wait_for_nodes()
    return cluster


def sweep_config(root: Path, args) -> dict:
    """sweep_scale's stand-in sweep, trained on the declared GPUs and timed on both boards."""
    raw = scale_config(root, args)
    raw.update(name="cluster", resources={"train": {"cpu": 0, "gpu": 1}, "export": {"cpu": 0}},
               objectives=[{"metric": "map50_95"}, {"metric": f"latency_ms@{BOARDS[1]}"}],
               board={"names": list(BOARDS), "emulate_if_missing": False,
                      "timing": {"warmup_runs": 2, "min_runs": 5, "min_seconds": args.board_seconds}},
               mlflow={"experiment": "cluster"})
    return raw


def artifacts_timed(log: Path) -> dict[str, dict[str, int]]:
    """Per board, how its answers came: timed, reused from an artifact of the same graph, or its cache's."""
    counts: dict[str, dict[str, int]] = defaultdict(lambda: {"timed": 0, "graph_reused": 0, "cached": 0})
    for line in log.read_text().splitlines():
        r = json.loads(line)
        counts[r["board"]]["graph_reused" if r.get("reused") else "cached" if r["cached"] else "timed"] += 1
    return {board: dict(c) for board, c in counts.items()}


def busy_seconds(log: Path) -> dict[str, float]:
    """Each board's time inside measurements (cache answers cost it nothing)."""
    busy: dict[str, float] = defaultdict(float)
    for line in log.read_text().splitlines():
        r = json.loads(line)
        if not r["cached"]:
            busy[r["board"]] += r["end"] - r["start"]
    return dict(busy)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=12, help="trials at once (8 training + some at the boards)")
    parser.add_argument("--searcher", default="tpe", choices=["tpe", "nsga2", "random"])
    parser.add_argument("--train-seconds", type=float, default=4.0, help="GPU slot time of one stand-in training")
    parser.add_argument("--board-seconds", type=float, default=0.1, help="timing protocol's min_seconds per artifact")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args()

    import ray

    from orchestrator.sweep import run_sweep

    instrument()
    root, log = scratch("edgesweep-cluster-", "board-measurements.jsonl")
    cfg = parse_config(sweep_config(root, args), base_dir=root)
    stages = LoggedStandInStages(train_seconds=args.train_seconds, distinct_artifacts=True, log_path=str(log))
    print(f"TEST-ONLY stand-in stages (train_seconds={args.train_seconds}, a distinct toy ONNX per trial); the "
          f"boards time them for real on this CPU (EMULATED latencies). State in {root} (deleted at the end)")
    cluster = start_cluster()
    print(f"cluster: a head (2 CPUs), {GPU_NODES} nodes x {GPUS_PER_NODE} declared GPUs, boards {', '.join(BOARDS)} "
          f"on nodes of their own")
    rss_start, rss_at = rss_mb(), {}
    os.environ["RAY_ADDRESS"] = cluster.address
    t0 = time.time()
    try:
        from orchestrator import results

        append = results.append_record

        def noting_rss(sweep_dir, record):  # the driver's RSS after every 100th recorded trial
            append(sweep_dir, record)
            n = sum(1 for _ in (Path(sweep_dir) / results.RECORDS).open())
            if n % 100 == 0:
                rss_at[n] = rss_mb()

        results.append_record = noting_rss
        result = run_sweep(cfg, stages=stages, show_progress=False)
    finally:
        makespan = time.time() - t0
        ray.shutdown()
        cluster.shutdown()
    complete = sum(r.complete for r in result.records)
    children = count_child_runs(result.tracking_uri, result.experiment_id, result.parent_run_id)
    busy, answers = busy_seconds(log), artifacts_timed(log)
    slots = GPU_NODES * GPUS_PER_NODE
    trained, _ = students_trained(result.records)  # one training per student: its other exports reuse it
    gpu_work = trained * args.train_seconds
    chain = args.train_seconds + max((b / max(complete, 1) for b in busy.values()), default=0.0)
    bound = max(gpu_work / slots, max(busy.values(), default=0.0), chain)
    writes = COUNTER.calls["mlflow writes"]
    figures = {"trials": args.trials, "complete": complete, "mlflow_child_runs": children, "makespan_s": makespan,
               "lower_bound_s": bound, "gpu_work_s": gpu_work, "gpu_slots": slots, "students_trained": trained,
               "board_busy_s": busy, "board_answers": answers, "board_utilisation": {b: s / makespan for b, s in busy.items()},
               "rss_start_mb": rss_start, "rss_at_mb": rss_at, "peak_rss_mb": peak_rss_mb(),
               "mlflow_writes": writes, "mlflow_writes_per_s": writes / makespan,
               "driver_seconds": dict(COUNTER.spent), "driver_calls": dict(COUNTER.calls),
               "concurrency": args.concurrency, "searcher": args.searcher, "pareto_size": len(result.front)}
    print(f"\n{complete}/{args.trials} trials complete ({args.searcher}, concurrency {args.concurrency}); MLflow child "
          f"runs {children}; front {len(result.front)} on (map50_95, latency_ms@{BOARDS[1]})")
    print(f"makespan {makespan:.0f} s (cluster start excluded, sweep setup included) vs lower bound {bound:.0f} s "
          f"= {makespan / bound:.2f}x (GPU work: {trained} students trained for {complete} artifacts x "
          f"{args.train_seconds:g} s / {slots} slots = {gpu_work / slots:.0f} s; busiest board "
          f"{max(busy.values(), default=0):.0f} s)")
    for name in BOARDS:
        a = answers.get(name, {})
        print(f"board {name}: busy {busy.get(name, 0):.0f} s = {100 * busy.get(name, 0) / makespan:.0f} % of the "
              f"makespan; timed {a.get('timed', 0)} artifacts, reused a graph's measurement for "
              f"{a.get('graph_reused', 0)}, answered {a.get('cached', 0)} from its cache")
    print(", ".join([f"driver RSS MB: start {rss_start:.0f}", *(f"after {n}: {v:.0f}" for n, v in sorted(rss_at.items())),
                     f"peak {figures['peak_rss_mb']:.0f}"]))
    print(f"MLflow writes from the driver: {writes} = {writes / makespan:.1f}/s, "
          f"{COUNTER.spent['mlflow writes']:.0f} s in the driver (its writer thread, off Tune's loop)")
    for group in sorted(COUNTER.calls):
        if group.startswith("searcher"):
            print(f"{group}: {COUNTER.calls[group]} calls, {COUNTER.spent[group]:.1f} s")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2, default=str))
    shutil.rmtree(root, ignore_errors=True)
    ok = complete == args.trials and children.get("FINISHED") == args.trials
    if not ok:
        print("FAILED: not every trial completed with a finished MLflow child run", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
