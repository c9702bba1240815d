"""`python -m orchestrator sweep` end to end, as a user runs it: real tiny training, ONNX and TFLite
artifacts timed on a board node that joined a two-node Ray cluster, the live table, the report and
the exit status; and a trial that fails on the board gives exit 1 while the others finish."""
from __future__ import annotations

import importlib.util

import pytest
import yaml

from orchestrator.cli import main
from orchestrator.results import load_records

HAS_TFLITE = all(importlib.util.find_spec(m) for m in ("litert_torch", "ai_edge_quantizer"))


def _sweep_file(tmp_path, name: str, board_name: str, **board) -> str:
    raw = {
        "name": name, "output_dir": str(tmp_path / "runs"),
        "data": {"source": "default", "synth": {"train": 24, "val": 8, "size": 64, "seed": 0}},
        "training": {"batch_size": 8, "nominal_batch": 8, "warmup_epochs": 0},
        "search": {"runtime": {"grid": ["onnxruntime", "tflite"]}},
        "fixed": {"epochs": 1, "img_size": 64, "quantization": "fp32", "board_threads": 1},
        "searcher": {"algorithm": "grid", "concurrency": 2},
        "resources": {"train": {"cpu": 0.5}, "export": {"cpu": 0.5}},
        "board": {"name": board_name, "emulate_if_missing": False,
                  "timing": {"warmup_runs": 2, "min_runs": 5, "min_seconds": 0.1}, **board},
    }
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return str(path)


@pytest.mark.skipif(not HAS_TFLITE, reason="TFLite converters (the `tflite` extra) are not installed")
def test_sweep_command_runs_on_the_board_shows_the_table_and_report_and_exits_by_outcome(board_cluster, tmp_path,
                                                                                        capsys, monkeypatch):
    monkeypatch.setenv("EDGESWEEP_CACHE", str(tmp_path / "cache"))
    config = _sweep_file(tmp_path, "cli-ok", board_cluster.board_name, score_on_board=True)
    assert main(["sweep", config, "--address", board_cluster.address]) == 0
    out, err = capsys.readouterr()
    assert "2/2 trials done" in err and "onnx" in err and "tflite" in err  # the live table
    assert "Pareto front of cli-ok" in out and "MLflow UI:" in out
    records = load_records(tmp_path / "runs" / "cli-ok")
    assert sorted(r.metrics["format"] for r in records) == ["onnx", "tflite"] and all(r.complete for r in records)
    assert all(r.metrics["board_emulated"] is False and r.metrics["board_node"] == board_cluster.board_node_id
               for r in records)
    # scored on the board too: the same CPU kind as the export node, so the same mAP
    assert all(abs(r.metrics["board_map50_95"] - r.metrics["map50_95"]) <= 0.001 for r in records)
    assert "board mAP@.5:.95" in out
    # The board counted what its interpreter delegated: XNNPACK, LiteRT's default and the one delegate there is
    # here (no NPU), and what the xnnpack profile predicts; the sweep placed each artifact under vx (the default)
    from device_actors.npu import load_profile, model_placement

    [tflite] = [r for r in records if r.metrics["format"] == "tflite"]
    model = (tmp_path / "runs" / "cli-ok" / tflite.artifact).read_bytes()
    predicted = model_placement(model, load_profile("xnnpack"))
    assert (tflite.metrics["board_delegated_ops"], tflite.metrics["board_delegate_partitions"]) == \
        (predicted.delegated, predicted.partitions)
    assert tflite.metrics["npu_delegated_ops"] + tflite.metrics["npu_fallback_ops"] == len(predicted.ops)
    assert "vx fallback ops" in out

    # A delegate library the board does not have: TFLite fails on the board, ONNX Runtime ignores it.
    config = _sweep_file(tmp_path, "cli-fail", board_cluster.board_name, delegate="/nowhere/libvx_delegate.so")
    assert main(["sweep", config, "--address", board_cluster.address]) == 1
    out, err = capsys.readouterr()
    assert "1 trial(s) failed" in err and "Pareto front of cli-fail: 1 of 1 complete trials (1 failed)" in out
    failed = [r for r in load_records(tmp_path / "runs" / "cli-fail") if r.status == "failed"]
    assert len(failed) == 1 and "delegate" in failed[0].error
