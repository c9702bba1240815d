"""One measurement: statistics, first run kept apart, pre/post timings, memory, facts, warnings."""
from __future__ import annotations

import json

import pytest

from device_actors.measure import (ArtifactError, WarningLimits, measure_artifact, measurement_warnings,
                                   sha256_hex, sniff_runtime)
from device_actors.report import LatencyReport, MeasureRequest
from device_actors.runtimes import RuntimeLoadError, RuntimeOptions
from device_actors.sysinfo import BoardFacts, ThermalSnapshot
from device_actors.timing import TimingProtocol


def _measure(model: bytes, protocol, **request):
    req = MeasureRequest(sha256_hex(model), request.pop("runtime", "onnxruntime"), protocol=protocol, **request)
    return measure_artifact(model, req, board="testboard", node_id="node-1", emulated=True)


def test_report_of_a_real_onnx_detector_holds_consistent_statistics(toy_onnx, quick_protocol):
    r = _measure(toy_onnx, quick_protocol)
    assert r.artifact_sha256 == sha256_hex(toy_onnx) and r.runtime == "onnxruntime" and r.runtime_version
    assert r.input_hw == (96, 96) and r.camera_hw == (480, 640)
    assert r.runs >= quick_protocol.min_runs
    assert 0 < r.median_ms <= r.p90_ms <= r.p99_ms
    assert r.fps == pytest.approx(1000 / r.median_ms)
    assert r.cv == pytest.approx(r.std_ms / r.mean_ms)
    assert r.first_run_ms > 0 and r.load_ms > 0
    assert r.preprocess_ms > 0 and r.postprocess_ms > 0
    assert r.peak_rss_increase_mb is not None and r.peak_rss_increase_mb >= 0
    assert r.started_at < r.ended_at
    assert r.emulated and not r.cached and r.node_id == "node-1" and r.board == "testboard"
    assert r.facts["cores"] >= 1 and r.runtime_versions["onnxruntime"] == r.runtime_version
    assert any("emulated board" in w for w in r.warnings)
    assert r.protocol["min_runs"] == quick_protocol.min_runs


def test_report_round_trips_through_json(toy_onnx, quick_protocol):
    r = _measure(toy_onnx, quick_protocol)
    assert LatencyReport.from_dict(json.loads(json.dumps(r.to_dict()))) == r


def test_report_from_dict_names_unknown_keys():
    with pytest.raises(ValueError, match=r"unknown LatencyReport keys \['bogus'\]"):
        LatencyReport.from_dict({"bogus": 1})


def test_bytes_that_do_not_match_the_requested_hash_are_refused(toy_onnx, quick_protocol):
    req = MeasureRequest(sha256_hex(b"another model"), "onnxruntime", protocol=quick_protocol)
    with pytest.raises(ArtifactError, match="refusing to time a different model"):
        measure_artifact(toy_onnx, req, board="b", node_id="n", emulated=True)


def test_model_without_detector_output_is_refused_with_its_shape(quick_protocol):
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Identity", ["images"], ["out"])], "identity",
                              [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 3, 8, 8])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    with pytest.raises(ArtifactError, match=r"outputs shape \(1, 3, 8, 8\)"):
        _measure(model.SerializeToString(), quick_protocol)


# ai-edge-litert's Delegate.__del__ trips over its own failed __init__ (AttributeError '_library').
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_missing_tflite_delegate_is_a_load_error_naming_the_library(quick_protocol):
    model = b"\x1c\x00\x00\x00TFL3" + bytes(32)
    assert sniff_runtime(model) == "tflite"
    options = RuntimeOptions(delegate="/nonexistent/libvx_delegate.so")
    with pytest.raises(RuntimeLoadError, match="libvx_delegate.so"):
        _measure(model, quick_protocol, runtime="tflite", options=options)


def _facts(governor: str | None = "performance") -> BoardFacts:
    return BoardFacts(cpu_model="Cortex-A53", cores=4, machine="aarch64", governor=governor, soc=None, os="Yocto",
                      kernel="6.6", python="3.11.7", ray="2.60.0", numpy="2.4.6", memory_total_mb=4000.0)


def test_steady_run_on_a_real_board_has_no_warnings():
    steady = ThermalSnapshot(50.0, 1600.0, 1800.0)
    assert measurement_warnings(0.01, steady, steady, _facts(), emulated=False) == []


def test_throttling_during_a_run_is_flagged_by_frequency_cap_and_temperature():
    before, after = ThermalSnapshot(60.0, 1800.0, 1800.0), ThermalSnapshot(82.0, 1200.0, 1200.0)
    warnings = " | ".join(measurement_warnings(0.01, before, after, _facts(), emulated=False))
    assert "frequency dropped from 1800 to 1200 MHz" in warnings
    assert "cap fell from 1800 to 1200 MHz" in warnings
    assert "82.0 degC" in warnings


def test_temperature_rise_below_the_limit_is_flagged_when_steep():
    before, after = ThermalSnapshot(40.0, None, None), ThermalSnapshot(60.0, None, None)
    limits = WarningLimits(temperature_rise_c=15.0)
    assert any("rose 20.0 degC" in w for w in measurement_warnings(0.01, before, after, _facts(), emulated=False,
                                                                      limits=limits))


def test_noisy_run_and_non_performance_governor_are_flagged():
    snap = ThermalSnapshot(None, None, None)
    warnings = measurement_warnings(0.08, snap, snap, _facts("schedutil"), emulated=False)
    assert any("CV 8.0% > 5%" in w for w in warnings)
    assert any("'schedutil'" in w for w in warnings)


def test_onnx_bytes_are_sniffed_as_onnxruntime(toy_onnx):
    assert sniff_runtime(toy_onnx) == "onnxruntime"


def test_a_node_under_emulation_labels_every_report_and_warns(toy_onnx, monkeypatch):
    from device_actors.sysinfo import EMULATION_ENV

    monkeypatch.setenv(EMULATION_ENV, "qemu-aarch64 (cortex-a53)")
    req = MeasureRequest(sha256_hex(toy_onnx), "onnxruntime", protocol=TimingProtocol(2, 5, 0.05))
    report = measure_artifact(toy_onnx, req, board="imx8mp-qemu", node_id="n", emulated=False)
    assert report.emulated and report.emulation == "qemu-aarch64 (cortex-a53)"
    assert report.facts["emulation"] == "qemu-aarch64 (cortex-a53)"
    assert any("timed under qemu-aarch64 (cortex-a53), at emulation speed" in w for w in report.warnings)
    monkeypatch.delenv(EMULATION_ENV)
    real = measure_artifact(toy_onnx, req, board="imx8mp", node_id="n", emulated=False)
    assert not real.emulated and real.emulation is None
