"""How many trials does each searcher need? Record a full grid once, then replay searchers against it.

    python bench/search_replay.py record     # train, export, score and time every grid point (~20 min, 2 cores)
    python bench/search_replay.py replay     # TPE, NSGA-II, GP, random and grid against the table (no training)

`record` runs every configuration of a small grid on the embedded default for real, as a sweep's
trial would (`orchestrator.stages`: the teacher, each distinct student trained once, every
artifact exported, scored through its runtime and timed on the emulated local board) and appends
one line per configuration to `--table` (default runs/bench/search_replay/grid.jsonl; generated,
never committed). An interrupted `record` goes on where it stopped.

`replay` drives the sweep's own searcher (`orchestrator.searcher.make_searcher`: ParetoOptunaSearch
with its repeat rule, asked and told as Tune would, `--concurrency` trials in flight) against the
table instead of training, for several seeds per algorithm, and reports the hypervolume of the
feasible front after k trials as a fraction of the full grid's (2-D, mAP@.5:.95 up and latency
down, reference point: mAP 0 and 1.1x the grid's slowest latency). `random` is Tune's random
search as the sweep runs it (independent draws, repeats included), `grid` its enumeration order.
Target (issue "Throughput at scale"): the default searcher reaches >= 95 % of the grid's
hypervolume within 40 % of the grid's trials. Prints a table; writes hypervolume.png beside the table.
"""
from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TABLE = ROOT / "runs" / "bench" / "search_replay" / "grid.jsonl"
ALGORITHMS = ("tpe", "nsga2", "gp", "random", "grid")
OBJECTIVES = (("map50_95", "max"), ("latency_ms", "min"))


def grid_config(root: Path, algorithm: str = "grid", trials: int | None = None) -> dict:
    """The recorded space: 10 students (baseline; output, feature, cwd KD at three factors), each
    exported to 4 ONNX formats and timed with 1 and 2 threads: 80 configurations."""
    searcher = {"algorithm": algorithm, "concurrency": 3, "seed": 0}
    if trials is not None:
        searcher["trials"] = trials
    choice = "grid" if algorithm == "grid" else "choice"
    return {
        "name": "replay", "output_dir": str(root),
        "data": {"source": "default", "train_subset": 500, "val_subset": 150, "calibration_images": 64},
        "student": {"model": "n", "init": "scratch"},
        "teachers": {"s": {"model": "s", "epochs": 10}},
        "training": {"batch_size": 16, "optimizer": "auto", "val_every": 5, "workers": 0},
        "search": {"kd_method": {choice: ["none", "output", "feature", "cwd"]},
                   "kd_factor": {choice: [0.5, 1.0, 2.0]},
                   "quantization": {choice: ["fp32", "fp16", "dynamic", "int8"]},
                   "board_threads": {choice: [1, 2]}},
        "fixed": {"epochs": 5, "img_size": 128, "runtime": "onnxruntime", "teacher": "s"},
        "searcher": searcher,
        "board": {"name": "local", "timing": {"warmup_runs": 5, "min_runs": 30, "min_seconds": 1.0}},
    }


def _key(knobs: dict) -> str:
    return json.dumps(knobs, sort_keys=True, default=str)


def load_table(path: Path) -> dict[str, dict]:
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []
    return {_key(r["knobs"]): r for r in rows}


# ---- record --------------------------------------------------------------------------------------

def record(args) -> int:
    from common.knobs import pick
    from trainables.export.registry import ExportKnobs
    from device_actors.client import connect_board
    from orchestrator.config import parse_config
    from orchestrator.stages import TrainedModel, TrainSpec, export_artifact, train_student_stream, train_teacher
    from orchestrator.sweep import init_ray
    from trainables.hyper import TrainKnobs

    cfg = parse_config(grid_config(Path(tempfile.mkdtemp(prefix="edgesweep-replay-"))))
    points = list(cfg.search.grid_points())
    done = load_table(args.table)
    todo = sorted((k for k in points if _key(k) not in done), key=lambda k: _key(vars(pick(TrainKnobs, k))))
    print(f"grid: {len(points)} configurations, {len(points) - len(todo)} recorded in {args.table}, {len(todo)} to go")
    if not todo:
        return 0
    args.table.parent.mkdir(parents=True, exist_ok=True)
    spec = TrainSpec(data=cfg.data, seed=cfg.seed, training=cfg.training, torch_threads=args.threads)
    init_ray(None)
    board = connect_board(cfg.board.name)
    teacher_spec = cfg.teachers["s"]
    t0 = time.perf_counter()
    teacher = train_teacher(teacher_spec.model, teacher_spec.epochs, 128, spec)
    print(f"teacher YOLO-{teacher_spec.model}: mAP@.5:.95 {teacher.metrics.get('map50_95', float('nan')):.3f} "
          f"({time.perf_counter() - t0:.0f} s, cached after the first time)")
    students: dict[str, tuple[TrainedModel, float]] = {}
    for i, knobs in enumerate(todo, 1):
        train_key = _key(vars(pick(TrainKnobs, knobs)))
        if train_key not in students:
            t = time.perf_counter()
            trained = [u for u in train_student_stream(TrainKnobs.from_knobs(knobs), spec, teacher, None) if isinstance(u, TrainedModel)][0]
            students = {train_key: (trained, time.perf_counter() - t)}  # sorted: a student's configs are adjacent
        trained, train_s = students[train_key]
        t = time.perf_counter()
        exported = export_artifact(trained.checkpoint, pick(ExportKnobs, knobs), False, spec)
        export_s = time.perf_counter() - t
        t = time.perf_counter()
        report = board.measure(exported.content, runtime=exported.runtime,
                               options=cfg.board.runtime_options(knobs["board_threads"]), protocol=cfg.board.timing)
        row = {"knobs": knobs, "metrics": {"map50_95": exported.metrics["map50_95"], "map50": exported.metrics["map50"],
                                           "latency_ms": report.median_ms, "size_mb": exported.size_mb,
                                           "float_map50_95": trained.metrics.get("map50_95")},
               "seconds": {"train": train_s, "export": export_s, "board": time.perf_counter() - t},
               "emulated": report.emulated}
        with args.table.open("a") as f:
            f.write(json.dumps(row, default=str) + "\n")
        print(f"[{i}/{len(todo)}] {knobs['kd_method']} x{knobs.get('kd_factor')} {knobs['quantization']} "
              f"{knobs['board_threads']} thr: mAP {row['metrics']['map50_95']:.3f}, {report.median_ms:.2f} ms "
              f"(EMULATED board), {time.perf_counter() - t0:.0f} s so far", flush=True)
    return 0


# ---- replay --------------------------------------------------------------------------------------

def hypervolume(points: list[tuple[float, float]], reference_latency: float) -> float:
    """Area dominated by (mAP, latency) points above mAP 0 and below `reference_latency` (2-D: the
    front sorted fastest first, each point owning the strip up to the next one's latency)."""
    front, best = [], 0.0
    for m, lat in sorted(points, key=lambda p: (p[1], -p[0])):
        if lat < reference_latency and m > best:
            front.append((m, lat))
            best = m
    edges = [lat for _, lat in front[1:]] + [reference_latency]
    return sum(m * (right - lat) for (m, lat), right in zip(front, edges))


def _metrics_of(table: dict, space, config: dict) -> dict:
    return table[_key(space.complete(config))]["metrics"]


def replay_optuna(algorithm: str, seed: int, budget: int, table: dict, concurrency: int) -> list[dict]:
    """The metrics of each trial the sweep's searcher would run, in order (repeats cost nothing here,
    as in a sweep: they are closed before training)."""
    from orchestrator.config import parse_config
    from orchestrator.searcher import make_searcher
    from ray.tune.search import Searcher

    with tempfile.TemporaryDirectory(prefix="edgesweep-replay-") as d:
        raw = grid_config(Path(d), algorithm, trials=budget)
        raw["searcher"].update(seed=seed, concurrency=concurrency)
        cfg = parse_config(raw)
        searcher, _, _ = make_searcher(cfg, Path(d))
        ran, flight, n = [], [], 0
        while len(ran) < budget:
            config = None
            if len(ran) + len(flight) < budget and len(flight) < concurrency:
                n += 1  # a fresh trial id per call, as Tune's SearchGenerator makes
                config = searcher.suggest(f"t{n}")
            if isinstance(config, dict):
                flight.append((f"t{n}", config))
                continue
            if config == Searcher.FINISHED or not flight:
                break
            trial_id, done = flight.pop(0)  # the oldest trial finishes first
            metrics = _metrics_of(table, cfg.search, done)
            searcher.on_trial_complete(trial_id, {**metrics, "trial_complete": True})
            ran.append(metrics)
        return ran


def replay_random(seed: int, budget: int, table: dict) -> list[dict]:
    """Tune's random search as a sweep runs it: every knob drawn on its own (an inactive kd_factor is
    drawn and then dropped), repeats train again."""
    from orchestrator.config import parse_config

    with tempfile.TemporaryDirectory() as d:
        space = parse_config(grid_config(Path(d), "random", trials=budget)).search
    rng = random.Random(seed)
    draws = [{k: rng.choice(p.values) for k, p in space.params.items()} for _ in range(budget)]
    return [_metrics_of(table, space, draw) for draw in draws]


def replay_grid(budget: int, table: dict) -> list[dict]:
    from orchestrator.config import parse_config

    with tempfile.TemporaryDirectory() as d:
        space = parse_config(grid_config(Path(d))).search
        return [table[_key(k)]["metrics"] for k in list(space.grid_points())[:budget]]


def curve(ran: list[dict], reference: float, full: float) -> list[float]:
    points = [(m["map50_95"], m["latency_ms"]) for m in ran]
    return [hypervolume(points[:k], reference) / full for k in range(1, len(points) + 1)]


def replay(args) -> int:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)  # GP's per-ask note on the conditional kd_factor
    table = load_table(args.table)
    if not table:
        print(f"{args.table}: no recorded grid; run `python bench/search_replay.py record` first", file=sys.stderr)
        return 2
    n = len(table)
    reference = 1.1 * max(r["metrics"]["latency_ms"] for r in table.values())
    full = hypervolume([(r["metrics"]["map50_95"], r["metrics"]["latency_ms"]) for r in table.values()], reference)
    budget = round(args.budget * n)
    curves: dict[str, list[list[float]]] = {}
    for algorithm in args.algorithms:
        t0 = time.perf_counter()
        seeds = [0] if algorithm == "grid" else list(range(args.seeds))
        runs = []
        for seed in seeds:
            if algorithm == "grid":
                ran = replay_grid(budget, table)
            elif algorithm == "random":
                ran = replay_random(seed, budget, table)
            else:
                ran = replay_optuna(algorithm, seed, budget, table, args.concurrency)
            runs.append(curve(ran, reference, full))
        curves[algorithm] = runs
        print(f"  {algorithm}: {len(seeds)} seed(s) in {time.perf_counter() - t0:.0f} s", flush=True)
    _print_table(curves, n, args)
    _plot(curves, n, args.table.parent / "hypervolume.png")
    return 0


def _at(run: list[float], k: int) -> float:
    return run[min(k, len(run)) - 1] if run else 0.0


def _print_table(curves: dict, n: int, args) -> None:
    marks = [round(f * n) for f in (0.1, 0.2, 0.4)]
    target = round(0.4 * n)
    print(f"\nHypervolume of the feasible front after k trials, as a fraction of the full grid's ({n} configurations); "
          f"median over seeds [min, max]; concurrency {args.concurrency}")
    print(f"{'searcher':10s} " + " ".join(f"{'k=' + str(k):>20s}" for k in marks)
          + f" {'>= 95 % by k=' + str(target):>16s} {'trials to 95 % (median)':>24s}")
    for algorithm, runs in curves.items():
        cells = []
        for k in marks:
            values = [_at(r, k) for r in runs]
            cells.append(f"{statistics.median(values):.3f} [{min(values):.2f}, {max(values):.2f}]")
        reached = sum(_at(r, target) >= 0.95 for r in runs)
        to95 = [next((i + 1 for i, v in enumerate(r) if v >= 0.95), None) for r in runs]
        hit = sorted(t for t in to95 if t is not None)
        median95 = f"{statistics.median(hit):.0f} ({len(hit)}/{len(runs)} seeds)" if hit else f"never ({len(runs)} seeds)"
        print(f"{algorithm:10s} " + " ".join(f"{c:>20s}" for c in cells) + f" {f'{reached}/{len(runs)}':>16s} "
              f"{median95:>24s}")


def _plot(curves: dict, n: int, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for algorithm, runs in curves.items():
        length = max(len(r) for r in runs)
        ks = list(range(1, length + 1))
        med = [statistics.median(_at(r, k) for r in runs) for k in ks]
        lo = [min(_at(r, k) for r in runs) for k in ks]
        hi = [max(_at(r, k) for r in runs) for k in ks]
        ax.plot(ks, med, label=f"{algorithm} ({len(runs)} seed{'s' if len(runs) > 1 else ''})")
        if len(runs) > 1:
            ax.fill_between(ks, lo, hi, alpha=0.15)
    ax.axhline(0.95, color="grey", lw=0.8, ls="--")
    ax.axvline(0.4 * n, color="grey", lw=0.8, ls=":")
    ax.set_xlabel(f"trials (the grid has {n})")
    ax.set_ylabel("hypervolume / full grid's")
    ax.set_title("Searchers replayed on a recorded grid (median, min-max band)")
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    print(f"plot: {path}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("step", choices=["record", "replay"])
    parser.add_argument("--table", type=Path, default=TABLE)
    parser.add_argument("--threads", type=int, default=2, help="record: torch threads for training")
    parser.add_argument("--algorithms", type=lambda s: s.split(","), default=list(ALGORITHMS))
    parser.add_argument("--seeds", type=int, default=10, help="replay: seeds per algorithm")
    parser.add_argument("--budget", type=float, default=0.6, help="replay: trials per run, as a fraction of the grid")
    parser.add_argument("--concurrency", type=int, default=3, help="replay: trials in flight (the demo's)")
    args = parser.parse_args()
    return record(args) if args.step == "record" else replay(args)


if __name__ == "__main__":
    sys.exit(main())
