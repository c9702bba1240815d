"""The accuracy/latency Pareto front of a sweep, as a table, CSV, and plots people want to look at.

Only trials that finished every stage count, and only feasible ones (within the config's
constraints) can be on the front. The front is a plain non-dominated filter over the recorded
results, so it can be checked by hand and does not depend on the searcher's internals.
"""
from __future__ import annotations

import csv
from collections.abc import Mapping
from dataclasses import fields
from pathlib import Path
from typing import Sequence

from orchestrator._knobs import knob_table
from orchestrator.config import PER_BOARD, ConstraintsConfig, board_metric
from orchestrator.results import TrialRecord
from trainables.hyper import TrainKnobs

METRIC_COLUMNS = ("map50_95", "map50", "board_map50_95", "latency_ms", "size_mb", "float_map50_95", "train_s",
                  "format", "student_key", "student_trained", "latency_cv", "latency_quiet", "latency_retimed",
                  "latency_reused_from", "board_node", "board_emulated", "board_emulation", "first_run_ms",
                  "npu_delegated_ops", "npu_partitions", "npu_fallback_ops", "board_delegated_ops",
                  "board_delegate_partitions")


def dominates(a: Sequence[float], b: Sequence[float], modes: Sequence[str]) -> bool:
    """a is no worse than b in every objective and better in at least one."""
    better = False
    for x, y, mode in zip(a, b, modes):
        if mode == "max":
            x, y = -x, -y
        if x > y:
            return False
        better |= x < y
    return better


def violations(constraints: ConstraintsConfig, metrics: Mapping[str, object]) -> dict[str, float]:
    """How far a trial's metrics exceed each set limit, by constraint name; <= 0 means satisfied
    (Optuna's convention), e.g. 40 ms under latency_ms_max 50 -> -10. The one constraint check:
    the searcher tells Optuna these values and the front keeps only trials with none above 0."""
    out = {}
    for name, metric, bound, limit in _limits(constraints):
        if metrics.get(metric) is None:
            raise ValueError(f"constraint {name} needs the metric {metric}; got {', '.join(metrics) or 'none'}")
        excess = float(metrics[metric]) - limit
        out[name] = excess if bound == "max" else -excess
    return out


def _limits(constraints: ConstraintsConfig) -> list[tuple[str, str, str, float]]:
    """(constraint, metric, "max"/"min", limit) for every set limit; a per-board latency mapping
    gives one per board: latency_ms_max {rpi4: 80} -> ("latency_ms_max.rpi4", "latency_ms@rpi4", "max", 80)."""
    out = []
    for f in fields(constraints):
        limit = getattr(constraints, f.name)
        metric, bound = f.name.rsplit("_", 1)  # latency_ms_max -> (latency_ms, max)
        if isinstance(limit, Mapping):
            out += [(f"{f.name}.{board}", board_metric(metric, board), bound, v) for board, v in limit.items()]
        elif limit is not None:
            out.append((f.name, metric, bound, limit))
    return out


def feasible(record: TrialRecord, constraints: ConstraintsConfig) -> bool:
    try:
        return all(v <= 0 for v in violations(constraints, record.metrics).values())
    except ValueError:  # a metric some constraint needs was never measured
        return False


def front(records: Sequence[TrialRecord], objectives: Sequence[tuple[str, str]],
          constraints: ConstraintsConfig = ConstraintsConfig()) -> list[TrialRecord]:
    """Non-dominated complete, feasible trials, sorted by the second objective then the first."""
    candidates = [r for r in records if r.complete and feasible(r, constraints)]
    metrics, modes = [m for m, _ in objectives], [mode for _, mode in objectives]
    values = [[float(r.metrics[m]) for m in metrics] for r in candidates]
    keep = [r for i, r in enumerate(candidates)
            if not any(dominates(values[j], values[i], modes) for j in range(len(candidates)) if j != i)]
    return sorted(keep, key=lambda r: tuple(float(r.metrics[m]) for m in reversed(metrics)))


def choose(records: Sequence[TrialRecord], constraints: ConstraintsConfig = ConstraintsConfig(), *,
           max_latency_ms: float | None = None, min_map: float | None = None) -> TrialRecord | None:
    """The trial `best` takes out of a sweep: among complete, feasible trials within the limits, the
    fastest when an accuracy floor (`min_map`, mAP@.5:.95) is given, else the most accurate; ties go
    to the other objective. None when no trial qualifies."""
    ok = [r for r in records if r.complete and feasible(r, constraints)
          and (max_latency_ms is None or float(r.metrics["latency_ms"]) <= max_latency_ms)
          and (min_map is None or float(r.metrics["map50_95"]) >= min_map)]
    if not ok:
        return None
    if min_map is not None:
        return min(ok, key=lambda r: (float(r.metrics["latency_ms"]), -float(r.metrics["map50_95"])))
    return max(ok, key=lambda r: (float(r.metrics["map50_95"]), -float(r.metrics["latency_ms"])))


def kd_against_baseline(records: Sequence[TrialRecord], metric: str = "map50_95") -> list[dict]:
    """Per artifact format: the best complete KD trial against the best complete baseline trial
    (kd_method "none") by `metric`; formats that lack either side are left out. One trial per
    side is not a statistic: `bench/kd_methods.py` pairs seeds for that."""
    best: dict[tuple[str, bool], TrialRecord] = {}
    for r in records:
        if not r.complete or r.metrics.get(metric) is None:
            continue
        key = (str(r.metrics.get("format")), r.knobs.get("kd_method", "none") != "none")
        if key not in best or float(r.metrics[metric]) > float(best[key].metrics[metric]):
            best[key] = r
    out = []
    for fmt in sorted({f for f, _ in best}):
        base, kd = best.get((fmt, False)), best.get((fmt, True))
        if base is not None and kd is not None:
            out.append({"format": fmt, "baseline": base, "kd": kd,
                        "difference": float(kd.metrics[metric]) - float(base.metrics[metric])})
    return out


def knob_columns() -> tuple[str, ...]:
    """Every knob, KD methods' own included, for the tables (a report shows only those that vary)."""
    return tuple(knob_table())


def per_board_latencies(metrics: Mapping) -> list[str]:
    """The latency_ms@NAME keys of a several-board sweep's trial, in board order."""
    return [k for k in metrics if k.startswith(f"{PER_BOARD}@")]


def rows(records: Sequence[TrialRecord], runs: Mapping[str, str] | None = None) -> list[dict]:
    """One row per trial: knobs, metrics (each board's latency too), and where its model is (file in
    the sweep directory, hash, MLflow run)."""
    runs = runs or {}
    boards = list(dict.fromkeys(k for r in records for k in per_board_latencies(r.metrics)))
    return [{"trial": r.trial_id, "status": r.status, **{k: r.knobs.get(k) for k in knob_columns()},
             **{k: r.metrics.get(k) for k in (*METRIC_COLUMNS, *boards)}, "artifact": r.artifact,
             "artifact_sha256": r.metrics.get("artifact_sha256"), "mlflow_run_id": runs.get(r.trial_id)}
            for r in records]


def write_csv(path: Path, records: Sequence[TrialRecord], runs: Mapping[str, str] | None = None) -> Path:
    table = rows(records, runs)
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(table[0]) if table else ["trial"])
        writer.writeheader()
        writer.writerows(table)
    return path


def kd_name(knobs: Mapping, *, teacher: bool = False) -> str:
    """How a trial distilled, in a few characters: "output x2.5" ("output/s x2.5" with its teacher), or "no KD"."""
    return TrainKnobs.from_knobs(knobs).kd_name(teacher=teacher)


def kd_label(r: TrialRecord) -> str:
    """A trial's distillation with its teacher: "output/s x2.5", or "no KD"."""
    return kd_name(r.knobs, teacher=True)
