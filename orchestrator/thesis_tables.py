"""The thesis's own records of a sweep: one row per trial in Listing 3.1's fields (sessions.csv),
and Table 5.1's comparison of each quantization variant with its float artifact.

Listing 3.1's tool appended one row per detection session to a CSV across all experiments; here a
trial is a session, and `report` writes the sweep's rows (concatenate the CSVs of several sweeps
for the thesis's cross-experiment file).
"""
from __future__ import annotations

import csv
from pathlib import Path
from typing import Sequence

from orchestrator.pareto import kd_name
from orchestrator.results import TrialRecord
from orchestrator.trial_spec import TrialSpec

SESSION_COLUMNS = ("trial", "model", "kd", "node", "device", "resolution", "runtime", "format", "threads", "fps",
                   "mean_inference_ms", "median_inference_ms", "preprocess_ms", "postprocess_ms", "map50_95",
                   "map50", "data", "size_mb", "system", "board", "emulated", "emulation", "artifact_sha256")
QUANTIZATION_KNOBS = ("quantization", "calib_method", "calib_images")  # what differs between a variant and its float


def session_rows(records: Sequence[TrialRecord], *, board: str, data: str, devices: dict[str, str]) -> list[dict]:
    out = []
    for r in records:
        if not r.complete:
            continue
        m, k = r.metrics, r.knobs
        out.append({"trial": r.trial_id, "model": f"YOLO-{k.get('student')}", "kd": kd_name(k), "node": m.get("board_node"),
                    "device": devices.get(str(k.get("runtime")), ""), "resolution": k.get("img_size"), "runtime": k.get("runtime"),
                    "format": m.get("format"), "threads": TrialSpec.of(k).board.board_threads, "fps": m.get("fps"),
                    "mean_inference_ms": m.get("latency_mean_ms"), "median_inference_ms": m.get("latency_ms"),
                    "preprocess_ms": m.get("preprocess_ms"), "postprocess_ms": m.get("postprocess_ms"),
                    "map50_95": m.get("map50_95"), "map50": m.get("map50"), "data": data, "size_mb": m.get("size_mb"),
                    "system": m.get("board_system"), "board": board, "emulated": bool(m.get("board_emulated")),
                    "emulation": m.get("board_emulation") or "", "artifact_sha256": m.get("artifact_sha256")})
    return out


def write_sessions(path: Path, records: Sequence[TrialRecord], *, board: str, data: str, devices: dict[str, str]) -> Path:
    with Path(path).open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(SESSION_COLUMNS))
        writer.writeheader()
        writer.writerows(session_rows(records, board=board, data=data, devices=devices))
    return Path(path)


def quantization_table(records: Sequence[TrialRecord]) -> list[dict]:
    """Each complete quantized trial against the fp32 trial that differs from it only in quantization
    (same runtime, model, training, resolution, threads): latency and size ratios, mAP change in points."""
    def rest(r: TrialRecord) -> tuple:
        return tuple(sorted((k, str(v)) for k, v in r.knobs.items() if k not in QUANTIZATION_KNOBS))

    done = [r for r in records if r.complete]
    floats = {rest(r): r for r in done if r.knobs.get("quantization") == "fp32"}
    out = []
    for r in done:
        base = floats.get(rest(r))
        if base is None or r is base:
            continue
        m, b = r.metrics, base.metrics
        out.append({"trial": r.trial_id, "float_trial": base.trial_id, "format": m.get("format"),
                    "float_format": b.get("format"), "latency_ratio": m["latency_ms"] / b["latency_ms"],
                    "map_change_points": (m["map50_95"] - b["map50_95"]) * 100, "size_ratio": m["size_mb"] / b["size_mb"]})
    return sorted(out, key=lambda row: (row["float_trial"], row["format"]))
