"""A quantization-only sweep (`epochs: 0`): a given checkpoint is exported in every format of the
space, scored through its runtime and timed, with no training at all (real stages, real Ray)."""
from __future__ import annotations

import pytest
import ray

from orchestrator.config import ConfigError, parse_config
from orchestrator.sweep import run_sweep


def _config(root, checkpoint, data_dir, **fixed) -> dict:
    return {
        "name": "quantize", "output_dir": str(root / "runs"),
        "data": {"source": "coco", "root": str(data_dir), "val_subset": 12, "calibration_images": 4},
        "student": {"model": "n", "init": str(checkpoint)},
        "search": {"quantization": {"grid": ["fp32", "int8"]}, "calib_method": {"grid": ["minmax", "percentile"]}},
        "fixed": {"epochs": 0, "img_size": 128, "runtime": "onnxruntime", "board_threads": 1, **fixed},
        "searcher": {"algorithm": "grid", "concurrency": 2, "max_failures": 0},
        "resources": {"train": {"cpu": 0.5}, "export": {"cpu": 0.5}},
        "board": {"name": "local", "timing": {"warmup_runs": 2, "min_runs": 5, "min_seconds": 0.05}},
    }


def test_a_quantization_only_sweep_trains_nothing_and_completes_every_trial(trained_student, tmp_path,
                                                                           monkeypatch):
    monkeypatch.setenv("EDGESWEEP_CACHE", str(tmp_path / "cache"))
    cfg = parse_config(_config(tmp_path, trained_student.checkpoint, trained_student.data_dir), base_dir=tmp_path)
    try:
        result = run_sweep(cfg, show_progress=False)
    finally:
        ray.shutdown()
    # calib_method matters only for int8: fp32 once, int8 once per calibration method
    assert sorted((r.metrics["format"], r.knobs["calib_method"]) for r in result.records) == [
        ("onnx", "minmax"), ("onnx-int8", "minmax"), ("onnx-int8", "percentile")]
    int8 = [r.metrics["artifact_sha256"] for r in result.records if r.metrics["format"] == "onnx-int8"]
    assert len(set(int8)) == 2  # the calibration method reached the quantizer
    assert all(r.complete and r.metrics["latency_ms"] > 0 for r in result.records)
    assert all(r.metrics["map50_95"] > 0.05 for r in result.records)  # the trained checkpoint, not a fresh init
    assert not any(k.startswith(("loss_", "val_", "float_")) for r in result.records for k in r.metrics)  # no epoch


@pytest.mark.parametrize("change, message", [
    ({"student": {"model": "n"}}, "exports the student_init checkpoint without training; set student.init"),
    ({"search": {"epochs": {"grid": [0, 2]}}}, "search.epochs: 0 \\(no training\\) cannot be searched"),
    ({"search": {"activation": {"grid": ["silu", "relu"]}}},
     "activation: fixed.epochs: 0 exports the checkpoint as it is, with its own activation"),
])
def test_epochs_0_needs_a_checkpoint_and_a_fixed_zero(change, message, tmp_path):
    (tmp_path / "given.pt").write_bytes(b"a checkpoint")  # the config check only needs the file to exist
    raw = {**_config(tmp_path, tmp_path / "given.pt", tmp_path), "data": {"source": "default"}, **change}
    if "epochs" in change.get("search", {}):
        raw["fixed"] = {k: v for k, v in raw["fixed"].items() if k != "epochs"}
    with pytest.raises(ConfigError, match=message):
        parse_config(raw, base_dir=tmp_path)
