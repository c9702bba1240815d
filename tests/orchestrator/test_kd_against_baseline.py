"""The report's KD-against-baseline table: per format, the best KD trial against the best baseline."""
from __future__ import annotations

from orchestrator.pareto import kd_against_baseline, kd_label
from orchestrator.results import TrialRecord


def _record(trial: str, method: str, fmt: str, map50_95: float, status: str = "complete") -> TrialRecord:
    knobs = {"kd_method": method, "teacher": "s" if method != "none" else None, "kd_factor": 2.5}
    return TrialRecord(trial, status, knobs, {"format": fmt, "map50_95": map50_95})


def test_each_format_pairs_its_best_kd_trial_with_its_best_baseline():
    records = [_record("a", "none", "onnx", 0.20), _record("b", "none", "onnx", 0.21),
               _record("c", "output", "onnx", 0.23), _record("d", "cwd", "onnx", 0.19),
               _record("e", "output", "onnx", 0.30, status="failed"),  # not complete: not counted
               _record("f", "none", "onnx-int8", 0.18),  # no KD trial in this format: no row
               _record("g", "feature", "tflite", 0.17), _record("h", "none", "tflite", 0.19)]
    rows = kd_against_baseline(records)
    assert [(r["format"], r["baseline"].trial_id, r["kd"].trial_id) for r in rows] == [("onnx", "b", "c"),
                                                                                       ("tflite", "h", "g")]
    assert [round(r["difference"] * 100, 2) for r in rows] == [2.0, -2.0]  # a loss is shown as one
    assert kd_label(rows[0]["kd"]) == "output/s x2.5" and kd_label(rows[0]["baseline"]) == "no KD"
