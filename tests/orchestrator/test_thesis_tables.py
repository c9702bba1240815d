"""The thesis's records: a sessions row per complete trial in Listing 3.1's fields, and Table 5.1's
comparison of each quantized artifact with the float artifact of the same model and runtime."""
from __future__ import annotations

import csv

import pytest

from orchestrator.results import TrialRecord
from orchestrator.thesis_tables import SESSION_COLUMNS, quantization_table, write_sessions

BASE = {"student": "n", "kd_method": "none", "img_size": 128, "board_threads": 1, "calib_method": "minmax"}


def _t(trial_id, runtime, quantization, map50_95, latency_ms, size_mb, status="complete", **knobs):
    fmt = {"fp32": "onnx", "int8": "onnx-int8", "fp16": "onnx-fp16"}[quantization]
    return TrialRecord(trial_id, status, {**BASE, "runtime": runtime, "quantization": quantization, **knobs},
                       {"map50_95": map50_95, "map50": map50_95 + 0.2, "latency_ms": latency_ms, "size_mb": size_mb,
                        "format": fmt if runtime == "onnxruntime" else fmt.replace("onnx", "tflite"),
                        "fps": 1000 / latency_ms, "latency_mean_ms": latency_ms * 1.1, "preprocess_ms": 0.5,
                        "postprocess_ms": 0.2, "board_node": "n1", "board_emulated": True,
                        "board_emulation": "qemu-aarch64 (cortex-a53)", "board_system": "x", "artifact_sha256": "ab"})


TRIALS = [_t("f", "onnxruntime", "fp32", 0.30, 8.0, 4.0), _t("q", "onnxruntime", "int8", 0.29, 4.0, 1.2),
          _t("h", "onnxruntime", "fp16", 0.30, 7.0, 2.0),
          _t("q-entropy", "onnxruntime", "int8", 0.295, 4.1, 1.2, calib_method="entropy"),
          _t("t", "tflite", "int8", 0.28, 2.0, 1.1),  # no tflite float trial: not compared
          _t("q320", "onnxruntime", "int8", 0.31, 9.0, 1.2, img_size=320),  # no float at 320: not compared
          _t("failed", "onnxruntime", "int8", 0.0, 1.0, 1.0, status="failed")]


def test_each_quantized_trial_is_compared_with_the_float_trial_of_the_same_model_runtime_and_size():
    rows = {r["trial"]: r for r in quantization_table(TRIALS)}
    assert set(rows) == {"q", "h", "q-entropy"} and all(r["float_trial"] == "f" for r in rows.values())
    assert rows["q"]["latency_ratio"] == pytest.approx(0.5) and rows["q"]["size_ratio"] == pytest.approx(0.3)
    assert rows["q"]["map_change_points"] == pytest.approx(-1.0)


def test_sessions_csv_has_listing_3_1s_fields_for_every_complete_trial(tmp_path):
    path = write_sessions(tmp_path / "sessions.csv", TRIALS, board="imx8mp-qemu", data="coco: /data",
                          devices={"onnxruntime": "CPUExecutionProvider", "tflite": "CPU (LiteRT kernels)"})
    with path.open() as f:
        rows = list(csv.DictReader(f))
    assert tuple(rows[0]) == SESSION_COLUMNS and len(rows) == 6  # the failed trial is no session
    q = next(r for r in rows if r["trial"] == "q")
    assert (q["model"], q["resolution"], q["runtime"], q["device"], q["emulated"]) == \
        ("YOLO-n", "128", "onnxruntime", "CPUExecutionProvider", "True")
    assert float(q["fps"]) == pytest.approx(250) and q["board"] == "imx8mp-qemu" and q["data"] == "coco: /data"
