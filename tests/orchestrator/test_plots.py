"""The report's pictures follow the configured objectives, mark infeasible trials and say when the
board was emulated (real matplotlib and plotly files, hand-made records)."""
from __future__ import annotations

import json

from orchestrator.config import ConstraintsConfig
from orchestrator.pareto import front
from orchestrator.plots import write_plots
from orchestrator.results import TrialRecord


def _t(trial_id: str, map50_95: float, latency_ms: float, size_mb: float) -> TrialRecord:
    return TrialRecord(trial_id, "complete", {"kd_method": "none"},
                       {"map50_95": map50_95, "latency_ms": latency_ms, "size_mb": size_mb, "format": "onnx",
                        "board_emulated": True, "board_emulation": "qemu-aarch64 (cortex-a53)"})


TRIALS = [_t("a", 0.40, 9.0, 4.0), _t("b", 0.30, 5.0, 1.0), _t("c", 0.20, 1.0, 2.0), _t("slow", 0.45, 60.0, 3.0),
          _t("dominated", 0.25, 6.0, 2.5)]


def _figure(path) -> tuple[list, dict]:
    """The traces and layout of the page's own figure (its Plotly.newPlot call), not plotly.js."""
    page = path.read_text()
    call = page[page.rindex("Plotly.newPlot("):]
    decoder = json.JSONDecoder()
    data, end = decoder.raw_decode(call, call.index("["))
    layout, _ = decoder.raw_decode(call, call.index("{", end))
    return data, layout


def test_three_objectives_give_a_projection_per_pair_and_a_3d_page(tmp_path):
    objectives = [("map50_95", "max"), ("latency_ms", "min"), ("size_mb", "min")]
    limits = ConstraintsConfig(latency_ms_max=50)
    paths = write_plots(tmp_path, TRIALS, front(TRIALS, objectives, limits), objectives, limits)
    assert {p.name for p in paths} == {"pareto.png", "pareto_map50_95_vs_size_mb.png",
                                        "pareto_latency_ms_vs_size_mb.png", "bubble.png", "pareto.html"}
    assert all(p.stat().st_size > 1000 for p in paths)
    traces, layout = _figure(tmp_path / "pareto.html")
    assert {t["type"] for t in traces} == {"scatter3d"}
    assert {t["name"]: len(t["x"]) for t in traces} == {"trials": 1, "Pareto front": 3, "infeasible (constraints)": 1}
    axes = [layout["scene"][f"{a}axis"]["title"]["text"] for a in "xyz"]
    assert axes[1].startswith("EMULATED board latency (qemu-aarch64 (cortex-a53))") and "artifact size (MB)" in axes[2]


def test_two_objectives_other_than_latency_name_their_own_axes(tmp_path):
    objectives = [("map50_95", "max"), ("size_mb", "min")]
    paths = write_plots(tmp_path, TRIALS, front(TRIALS, objectives), objectives)
    assert [p.name for p in paths] == ["pareto.png", "bubble.png", "pareto.html"]
    traces, layout = _figure(tmp_path / "pareto.html")
    assert {t["type"] for t in traces} == {"scatter"}
    assert layout["xaxis"]["title"]["text"] == "artifact size (MB) (lower is better)"
    assert "infeasible (constraints)" not in {t["name"] for t in traces}  # no constraints: none infeasible
