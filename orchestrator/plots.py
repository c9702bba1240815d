"""The sweep's pictures: its trials in the space of the configured objectives, the front highlighted.

Two objectives: one scatter (pareto.png) with the front as a step line, and the same as an
interactive pareto.html. Three: a 2-D projection per pair of objectives (pareto.png is the first
pair) and a 3-D pareto.html. Complete trials that break a constraint are drawn as grey crosses;
an emulated board's latencies say so on their axis. bubble.png adds artifact size to latency x mAP,
like the thesis's bubble chart.
"""
from __future__ import annotations

from itertools import combinations
from pathlib import Path
from typing import Sequence

from orchestrator.config import ConstraintsConfig
from orchestrator.pareto import feasible, kd_label
from orchestrator.results import TrialRecord

FRONT, OTHER, INFEASIBLE = "#d62728", "#1f77b4", "#9e9e9e"
LABELS = {"map50_95": "artifact mAP@.5:.95", "map50": "artifact mAP@.5", "size_mb": "artifact size (MB)",
          "board_map50_95": "mAP@.5:.95 measured on the board", "board_map50": "mAP@.5 measured on the board"}


def latency_axis(records: Sequence[TrialRecord]) -> str:
    """The latency axis label, saying so when the board was emulated (never mistaken for a board's timing)."""
    emulations = sorted({str(r.metrics.get("board_emulation") or "a stand-in machine")
                         for r in records if r.metrics.get("board_emulated")})
    if emulations:
        return f"EMULATED board latency ({'; '.join(emulations)}), median (ms)"
    return "board latency, median (ms)"


def axis_label(metric: str, mode: str, records: Sequence[TrialRecord]) -> str:
    if metric == "latency_ms":
        base = latency_axis(records)
    elif "@" in metric:  # latency_ms@rpi4: one board's latency in a several-board sweep
        base = f"latency on board {metric.partition('@')[2]}, median (ms)"
    else:
        base = LABELS.get(metric, metric)
    return f"{base} ({'higher' if mode == 'max' else 'lower'} is better)"


def _hover(r: TrialRecord, metrics: Sequence[str]) -> str:
    values = ", ".join(f"{m} {float(r.metrics[m]):.4g}" for m in metrics)
    return f"{r.trial_id}: {kd_label(r)}, {r.metrics.get('format', '')}<br>{values}"


def _scatter(path: Path, done, front_ids, infeasible_ids, x: tuple[str, str], y: tuple[str, str],
             step: bool, records) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 5), dpi=120)
    for group, colour, marker, label in (("other", OTHER, "o", "trials"), ("front", FRONT, "o", "Pareto front"),
                                         ("infeasible", INFEASIBLE, "x", "infeasible (constraints)")):
        members = [r for r in done if _group(r, front_ids, infeasible_ids) == group]
        if members:
            ax.scatter([r.metrics[x[0]] for r in members], [r.metrics[y[0]] for r in members], c=colour,
                       marker=marker, s=40, zorder=3, label=label)
    front = sorted((r for r in done if r.trial_id in front_ids), key=lambda r: r.metrics[x[0]])
    if step and front:
        ax.step([r.metrics[x[0]] for r in front], [r.metrics[y[0]] for r in front], where="post", color=FRONT,
                alpha=0.6)
    for r in done:
        ax.annotate(f"{r.knobs.get('kd_method')}, {r.metrics.get('format', '')}", (r.metrics[x[0]], r.metrics[y[0]]),
                    fontsize=7, xytext=(4, 3), textcoords="offset points")
    ax.set(xlabel=axis_label(*x, records), ylabel=axis_label(*y, records), title=f"{y[0]} vs {x[0]}")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def _group(r: TrialRecord, front_ids: set, infeasible_ids: set) -> str:
    return "front" if r.trial_id in front_ids else "infeasible" if r.trial_id in infeasible_ids else "other"


def _bubble(path: Path, done, front_ids, records) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lat = [r.metrics["latency_ms"] for r in done]
    acc = [r.metrics["map50_95"] for r in done]
    size = [r.metrics.get("size_mb") or 0.0 for r in done]
    fig, ax = plt.subplots(figsize=(7, 5), dpi=120)
    ax.scatter(lat, acc, s=[max(s, 0.05) * 120 for s in size], alpha=0.5, edgecolors="k", zorder=3,
               c=[FRONT if r.trial_id in front_ids else OTHER for r in done])
    for r, x, y, s in zip(done, lat, acc, size):
        ax.annotate(f"{r.metrics.get('format', '')} {s:.1f} MB", (x, y), fontsize=7, ha="center")
    ax.set(xlabel=latency_axis(records), ylabel="artifact mAP@.5:.95", title="Latency x accuracy x size (bubble area = MB)")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def _html(path: Path, done, front_ids, infeasible_ids, objectives, records) -> Path:
    import plotly.graph_objects as go

    metrics = [m for m, _ in objectives]
    order = list(objectives[::-1]) if len(objectives) == 2 else list(objectives)  # 2-D: x latency, y mAP
    fig = go.Figure()
    for group, colour, symbol in (("other", OTHER, "circle"), ("front", FRONT, "circle"),
                                  ("infeasible", INFEASIBLE, "x")):
        members = [r for r in done if _group(r, front_ids, infeasible_ids) == group]
        if not members:
            continue
        axes = {a: [r.metrics[m] for r in members] for a, (m, _) in zip("xyz", order)}
        name = {"other": "trials", "front": "Pareto front", "infeasible": "infeasible (constraints)"}[group]
        marker = {"color": colour, "symbol": symbol, "size": 6 if len(metrics) == 3 else 10}
        text = [_hover(r, metrics) for r in members]
        trace = go.Scatter3d if len(metrics) == 3 else go.Scatter
        fig.add_trace(trace(**axes, mode="markers", marker=marker, text=text, hoverinfo="text", name=name))
    titles = [axis_label(m, mode, records) for m, mode in order]
    if len(objectives) == 3:
        fig.update_layout(scene={"xaxis_title": titles[0], "yaxis_title": titles[1], "zaxis_title": titles[2]},
                          title="The sweep's trials in its three objectives (drag to turn, hover for knobs)")
    else:
        fig.update_layout(xaxis_title=titles[0], yaxis_title=titles[1],
                          title=f"{objectives[0][0]} vs {objectives[1][0]} (hover for knobs)")
    fig.write_html(path, include_plotlyjs=True)
    return path


def write_plots(out_dir: Path, records: Sequence[TrialRecord], on_front: Sequence[TrialRecord],
                objectives: Sequence[tuple[str, str]] = (("map50_95", "max"), ("latency_ms", "min")),
                constraints: ConstraintsConfig = ConstraintsConfig()) -> list[Path]:
    """pareto.png (+ one png per further pair of objectives), pareto.html and bubble.png."""
    done = [r for r in records if r.complete and all(r.metrics.get(m) is not None for m, _ in objectives)]
    front_ids = {r.trial_id for r in on_front}
    infeasible_ids = {r.trial_id for r in done if not feasible(r, constraints)}
    out_dir = Path(out_dir)
    paths = []
    for i, (y, x) in enumerate(combinations(objectives, 2)):
        name = "pareto.png" if i == 0 else f"pareto_{y[0]}_vs_{x[0]}.png"
        paths.append(_scatter(out_dir / name, done, front_ids, infeasible_ids, x, y, len(objectives) == 2, records))
    if all(r.metrics.get(k) is not None for r in done for k in ("latency_ms", "map50_95")):
        paths.append(_bubble(out_dir / "bubble.png", done, front_ids, records))
    paths.append(_html(out_dir / "pareto.html", done, front_ids, infeasible_ids, list(objectives), records))
    return paths
