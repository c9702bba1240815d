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
down, reference point: mAP 0 and 1.1x the grid's slowest latency), and the same against the compute
a sweep pays for it (a student's training once, every export, a board timing once per graph and
thread count; the recorded seconds). Each Optuna sampler runs with and without
`searcher.export_variants` (a trained student's other exports queued first). `random` is Tune's
random search as the sweep runs it (independent draws, repeats included), `grid` its enumeration order.
Target (issue "Throughput at scale"): the default searcher reaches >= 95 % of the grid's
hypervolume within 40 % of the grid's trials. Prints a table; writes hypervolume.png beside the table.
"""
from __future__ import annotations

import argparse
import json
import math
import random
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
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


def _row_of(table: dict, space, config: dict) -> dict:
    return table[_key(space.complete(config))]


def _student_of(knobs: dict) -> str:
    """The trained student a row's artifact was made of (its training knobs)."""
    from common.knobs import pick
    from trainables.hyper import TrainKnobs

    return _key(vars(pick(TrainKnobs, knobs)))


def _graph_of(knobs: dict) -> tuple:
    """What the board times once (`board.reuse_graph_latency`): every student here has one architecture and
    size, so an artifact's graph is its runtime and quantization, timed per thread count."""
    return knobs["runtime"], knobs["quantization"], knobs["board_threads"], knobs["img_size"]


def compute_spent(ran: list[dict]) -> list[float]:
    """Seconds of compute after each trial, as a sweep pays them: a student's training once (the
    student cache), every export, and a board timing once per graph and thread count."""
    students, graphs, total, out = set(), set(), 0.0, []
    for row in ran:
        total += row["seconds"]["export"]
        if _student_of(row["knobs"]) not in students:
            students.add(_student_of(row["knobs"]))
            total += row["seconds"]["train"]
        if _graph_of(row["knobs"]) not in graphs:
            graphs.add(_graph_of(row["knobs"]))
            total += row["seconds"]["board"]
        out.append(total)
    return out


def replay_optuna(algorithm: str, seed: int, budget: int, table: dict, concurrency: int,
                  variants: bool = True) -> list[dict]:
    """The rows of each trial the sweep's searcher would run, in order (repeats cost nothing here,
    as in a sweep: they are closed before training); `variants`: `searcher.export_variants`."""
    from orchestrator.config import parse_config
    from orchestrator.searcher import make_searcher
    from ray.tune.search import Searcher

    with tempfile.TemporaryDirectory(prefix="edgesweep-replay-") as d:
        raw = grid_config(Path(d), algorithm, trials=budget)
        raw["searcher"].update(seed=seed, concurrency=concurrency, export_variants=variants)
        cfg = parse_config(raw)
        searcher, _, _ = make_searcher(cfg, Path(d))
        ran, flight, n, trained = [], [], 0, set()
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
            row = _row_of(table, cfg.search, done)
            new_student = _student_of(row["knobs"]) not in trained
            trained.add(_student_of(row["knobs"]))
            searcher.on_trial_complete(trial_id, {**row["metrics"], "trial_complete": True,
                                                  "student_trained": new_student})
            ran.append(row)
        return ran


def replay_random(seed: int, budget: int, table: dict) -> list[dict]:
    """Tune's random search as a sweep runs it: every knob drawn on its own (an inactive kd_factor is
    drawn and then dropped); a repeat runs again (its student comes from the cache)."""
    from orchestrator.config import parse_config

    with tempfile.TemporaryDirectory() as d:
        space = parse_config(grid_config(Path(d), "random", trials=budget)).search
    rng = random.Random(seed)
    draws = [{k: rng.choice(p.values) for k, p in space.params.items()} for _ in range(budget)]
    return [_row_of(table, space, draw) for draw in draws]


def replay_grid(budget: int, table: dict) -> list[dict]:
    from orchestrator.config import parse_config

    with tempfile.TemporaryDirectory() as d:
        space = parse_config(grid_config(Path(d))).search
        return [table[_key(k)] for k in list(space.grid_points())[:budget]]


def curve(ran: list[dict], reference: float, full: float) -> list[float]:
    points = [(r["metrics"]["map50_95"], r["metrics"]["latency_ms"]) for r in ran]
    return [hypervolume(points[:k], reference) / full for k in range(1, len(points) + 1)]


OPTUNA = ("tpe", "nsga2", "gp")
VARIANTS = "+variants"  # an Optuna arm with searcher.export_variants on


@dataclass(frozen=True)
class Run:
    """One replayed search: the hypervolume share and the compute seconds spent after each trial."""

    hv: list[float]
    spent: list[float]

    def hv_at_trials(self, k: int) -> float:
        return self.hv[min(k, len(self.hv)) - 1] if self.hv else 0.0

    def hv_at_seconds(self, seconds: float) -> float:
        within = [h for h, c in zip(self.hv, self.spent) if c <= seconds]
        return within[-1] if within else 0.0


def _arms(algorithms: list[str]) -> list[str]:
    """Each algorithm; the Optuna ones with and without queued export variants."""
    return [arm for a in algorithms for arm in ((a, a + VARIANTS) if a in OPTUNA else (a,))]


def _replay_arm(arm: str, seed: int, budget: int, table: dict, concurrency: int) -> list[dict]:
    algorithm = arm.removesuffix(VARIANTS)
    if algorithm == "grid":
        return replay_grid(budget, table)
    if algorithm == "random":
        return replay_random(seed, budget, table)
    return replay_optuna(algorithm, seed, budget, table, concurrency, variants=arm.endswith(VARIANTS))


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
    full_compute = compute_spent(list(table.values()))[-1]
    budget = round(args.budget * n)
    runs: dict[str, list[Run]] = {}
    for arm in _arms(args.algorithms):
        t0 = time.perf_counter()
        seeds = [0] if arm == "grid" else list(range(args.seeds))
        ran = [_replay_arm(arm, seed, budget, table, args.concurrency) for seed in seeds]
        runs[arm] = [Run(curve(r, reference, full), compute_spent(r)) for r in ran]
        print(f"  {arm}: {len(seeds)} seed(s) in {time.perf_counter() - t0:.0f} s", flush=True)
    _print_tables(runs, n, full_compute, args)
    _plot(runs, n, full_compute, args.table.parent / "hypervolume.png")
    return 0


def _cell(values: list[float]) -> str:
    return f"{statistics.median(values):.3f} [{min(values):.2f}, {max(values):.2f}]"


def _print_tables(runs: dict[str, list[Run]], n: int, full_compute: float, args) -> None:
    marks = [round(f * n) for f in (0.1, 0.2, 0.4)]
    print(f"\nHypervolume of the front after k trials, as a fraction of the full grid's ({n} configurations); "
          f"median over seeds [min, max]; concurrency {args.concurrency}")
    print(f"{'searcher':16s} " + " ".join(f"{'k=' + str(k):>20s}" for k in marks) + f" {'trials to 95 %':>22s}")
    for arm, rs in runs.items():
        to95 = sorted(t for t in (next((i + 1 for i, v in enumerate(r.hv) if v >= 0.95), None) for r in rs) if t)
        reached = f"{statistics.median(to95):.0f} ({len(to95)}/{len(rs)} seeds)" if to95 else f"never ({len(rs)})"
        print(f"{arm:16s} " + " ".join(f"{_cell([r.hv_at_trials(k) for r in rs]):>20s}" for k in marks)
              + f" {reached:>22s}")
    fractions = (0.1, 0.2, 0.4)
    print(f"\nThe same against compute: training (each student once), export and board seconds (each graph and "
          f"thread count timed once), as a fraction of the whole grid's {full_compute / 60:.0f} min")
    print(f"{'searcher':16s} " + " ".join(f"{f'{f:.0%} compute':>20s}" for f in fractions)
          + "".join(f" {f'compute to {share:.0%}':>22s}" for share in (0.95, 0.99)))
    for arm, rs in runs.items():
        print(f"{arm:16s} " + " ".join(f"{_cell([r.hv_at_seconds(f * full_compute) for r in rs]):>20s}"
                                      for f in fractions)
              + "".join(f" {_compute_to(rs, share, full_compute):>22s}" for share in (0.95, 0.99)))


def _compute_to(runs: list[Run], share: float, full_compute: float) -> str:
    """The median compute (as a fraction of the grid's) at which a run's hypervolume first reaches `share`."""
    spent = sorted(next((c for v, c in zip(r.hv, r.spent) if v >= share), math.inf) for r in runs)
    median = statistics.median(spent)
    reached = sum(math.isfinite(t) for t in spent)
    return f"{median / full_compute:.0%} ({reached}/{len(runs)} seeds)" if math.isfinite(median) else \
        f"never ({reached}/{len(runs)})"


def _plot(runs: dict[str, list[Run]], n: int, full_compute: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (by_trials, by_compute) = plt.subplots(1, 2, figsize=(12, 4.5), sharey=True)
    xs = [f / 100 for f in range(1, 101)]
    for arm, rs in runs.items():
        label = f"{arm} ({len(rs)} seed{'s' if len(rs) > 1 else ''})"
        ks = list(range(1, max(len(r.hv) for r in rs) + 1))
        by_trials.plot(ks, [statistics.median(r.hv_at_trials(k) for r in rs) for k in ks], label=label)
        by_compute.plot(xs, [statistics.median(r.hv_at_seconds(x * full_compute) for r in rs) for x in xs], label=label)
    for ax in (by_trials, by_compute):
        ax.axhline(0.95, color="grey", lw=0.8, ls="--")
    by_trials.set_xlabel(f"trials (the grid has {n})")
    by_compute.set_xlabel("compute spent / the whole grid's (training, export, board seconds)")
    by_trials.set_ylabel("hypervolume / full grid's (median over seeds)")
    by_compute.legend(loc="lower right", fontsize=8)
    fig.suptitle("Searchers replayed on a recorded grid")
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
    parser.add_argument("--budget", type=float, default=1.0, help="replay: trials per run, as a fraction of the grid")
    parser.add_argument("--concurrency", type=int, default=3, help="replay: trials in flight (the demo's)")
    args = parser.parse_args()
    return record(args) if args.step == "record" else replay(args)


if __name__ == "__main__":
    sys.exit(main())
