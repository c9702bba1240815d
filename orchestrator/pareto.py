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
from orchestrator.config import ConstraintsConfig
from orchestrator.results import TrialRecord

METRIC_COLUMNS = ("map50_95", "map50", "board_map50_95", "latency_ms", "size_mb", "float_map50_95", "format",
                  "board_node", "board_emulated", "board_emulation")


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
    for f in fields(constraints):
        limit = getattr(constraints, f.name)
        if limit is None:
            continue
        metric, bound = f.name.rsplit("_", 1)  # latency_ms_max -> (latency_ms, max)
        if metrics.get(metric) is None:
            raise ValueError(f"constraint {f.name} needs the metric {metric}; got {', '.join(metrics) or 'none'}")
        excess = float(metrics[metric]) - limit
        out[f.name] = excess if bound == "max" else -excess
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


def rows(records: Sequence[TrialRecord], runs: Mapping[str, str] | None = None) -> list[dict]:
    """One row per trial: knobs, metrics, and where its model is (file in the sweep directory, hash, MLflow run)."""
    runs = runs or {}
    return [{"trial": r.trial_id, "status": r.status, **{k: r.knobs.get(k) for k in knob_columns()},
             **{k: r.metrics.get(k) for k in METRIC_COLUMNS}, "artifact": r.artifact,
             "artifact_sha256": r.metrics.get("artifact_sha256"), "mlflow_run_id": runs.get(r.trial_id)}
            for r in records]


def write_csv(path: Path, records: Sequence[TrialRecord], runs: Mapping[str, str] | None = None) -> Path:
    table = rows(records, runs)
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(table[0]) if table else ["trial"])
        writer.writeheader()
        writer.writerows(table)
    return path


def kd_label(r: TrialRecord) -> str:
    """How a trial distilled, in a few characters: "output/s x2.5", or "no KD"."""
    kd = r.knobs.get("kd_method", "none")
    return f"{kd}/{r.knobs.get('teacher')} x{float(r.knobs.get('kd_factor', 1)):.2g}" if kd != "none" else "no KD"


def _label(r: TrialRecord) -> str:
    return f"{r.trial_id}: {kd_label(r)}, {r.metrics.get('format', '')}"


def latency_axis(records: Sequence[TrialRecord]) -> str:
    """The latency axis label, saying so when the board was emulated (never mistaken for a board's timing)."""
    emulations = sorted({str(r.metrics.get("board_emulation") or "a stand-in machine")
                         for r in records if r.metrics.get("board_emulated")})
    if emulations:
        return f"EMULATED board latency ({'; '.join(emulations)}), median (ms)"
    return "board latency, median (ms)"


def write_plots(out_dir: Path, records: Sequence[TrialRecord], on_front: Sequence[TrialRecord]) -> list[Path]:
    """pareto.png and pareto.html (latency x mAP, front highlighted) and bubble.png (x latency,
    y mAP, bubble area = artifact size), like the thesis's bubble chart."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import plotly.graph_objects as go

    done = [r for r in records if r.complete]
    front_ids = {r.trial_id for r in on_front}
    lat = [r.metrics["latency_ms"] for r in done]
    acc = [r.metrics["map50_95"] for r in done]
    size = [r.metrics.get("size_mb") or 0.0 for r in done]
    colours = ["#d62728" if r.trial_id in front_ids else "#1f77b4" for r in done]  # red: on the front
    paths = []

    fig, ax = plt.subplots(figsize=(7, 5), dpi=120)
    ax.scatter(lat, acc, c=colours, s=40, zorder=3)
    f_lat = [r.metrics["latency_ms"] for r in on_front]
    f_acc = [r.metrics["map50_95"] for r in on_front]
    ax.step(f_lat, f_acc, where="post", color="#d62728", alpha=0.6, label="Pareto front")
    for r, x, y in zip(done, lat, acc):
        ax.annotate(f"{r.knobs.get('kd_method')}, {r.metrics.get('format', '')}", (x, y), fontsize=7,
                    xytext=(4, 3), textcoords="offset points")
    ax.set(xlabel=latency_axis(done), ylabel="artifact mAP@.5:.95", title="Accuracy vs latency")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    paths.append(out_dir / "pareto.png")
    fig.savefig(paths[-1])
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(7, 5), dpi=120)
    ax.scatter(lat, acc, s=[max(s, 0.05) * 120 for s in size], c=colours, alpha=0.5, edgecolors="k", zorder=3)
    for r, x, y, s in zip(done, lat, acc, size):
        ax.annotate(f"{r.metrics.get('format', '')} {s:.1f} MB", (x, y), fontsize=7, ha="center")
    ax.set(xlabel=latency_axis(done), ylabel="artifact mAP@.5:.95",
           title="Latency x accuracy x size (bubble area = MB)")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    paths.append(out_dir / "bubble.png")
    fig.savefig(paths[-1])
    plt.close(fig)

    hover = [_label(r) + f"<br>mAP {a:.4f}, {x:.2f} ms, {s:.2f} MB" for r, x, a, s in zip(done, lat, acc, size)]
    html = go.Figure()
    html.add_trace(go.Scatter(x=lat, y=acc, mode="markers", marker={"color": colours, "size": 10},
                              text=hover, hoverinfo="text", name="trials"))
    html.add_trace(go.Scatter(x=f_lat, y=f_acc, mode="lines", line={"shape": "hv", "color": "red"},
                              name="Pareto front"))
    html.update_layout(xaxis_title=latency_axis(done), yaxis_title="artifact mAP@.5:.95",
                       title="Accuracy vs latency (hover for knobs)")
    paths.append(out_dir / "pareto.html")
    html.write_html(paths[-1], include_plotlyjs=True)
    return paths
