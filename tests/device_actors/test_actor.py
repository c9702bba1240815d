"""The actor's logic run in-process (no Ray): cache hits, restarts, refusals, status."""
from __future__ import annotations

import json

import pytest

from device_actors.actor import BoardLatencyActor
from device_actors.journal import ArtifactCrashedBoard, InFlightJournal
from device_actors.measure import ArtifactError, sha256_hex
from device_actors.report import MeasureRequest
from device_actors.runtimes import RuntimeLoadError


def _request(model: bytes, protocol, runtime: str = "onnxruntime") -> MeasureRequest:
    return MeasureRequest(sha256_hex(model), runtime, protocol=protocol)


def test_identical_artifact_is_timed_once_even_across_an_actor_restart(tmp_path, toy_onnx, quick_protocol):
    actor = BoardLatencyActor("testboard", emulated=True, cache_dir=str(tmp_path))
    req = _request(toy_onnx, quick_protocol)
    first = actor.measure(req, toy_onnx)
    again = actor.measure(req, toy_onnx)
    assert not first.cached and again.cached
    assert again.median_ms == first.median_ms and again.started_at == first.started_at

    restarted = BoardLatencyActor("testboard", emulated=True, cache_dir=str(tmp_path))
    assert restarted.lookup(req).median_ms == first.median_ms
    assert restarted.measure(req, toy_onnx).cached

    refreshed = restarted.measure(req, toy_onnx, refresh=True)
    assert not refreshed.cached and refreshed.started_at > first.started_at
    assert restarted.lookup(req).started_at == refreshed.started_at


def test_cache_hit_still_checks_the_bytes_against_the_hash(tmp_path, toy_onnx, quick_protocol):
    actor = BoardLatencyActor("testboard", cache_dir=str(tmp_path))
    req = _request(toy_onnx, quick_protocol)
    actor.measure(req, toy_onnx)
    with pytest.raises(ArtifactError, match="refusing"):
        actor.measure(req, toy_onnx + b"tampered")


def test_status_counts_measurements_and_hits_and_keeps_recent_results(tmp_path, toy_onnx, quick_protocol):
    actor = BoardLatencyActor("testboard", emulated=True, cache_dir=str(tmp_path))
    req = _request(toy_onnx, quick_protocol)
    actor.measure(req, toy_onnx)
    actor.measure(req, toy_onnx)
    st = actor.status()
    assert (st.measured, st.cache_hits, st.cache_entries) == (1, 1, 1)
    assert [r.cached for r in st.recent] == [False, True]
    assert st.queue.running is None and st.queue.waiting == ()
    assert st.node_id == "local" and st.emulated and "onnxruntime" in st.runtime_versions


def test_request_that_crashed_the_actor_too_often_is_refused(tmp_path, toy_onnx, quick_protocol):
    actor = BoardLatencyActor("testboard", cache_dir=str(tmp_path), max_attempts=2)
    req = _request(toy_onnx, quick_protocol)
    key = actor._key(req)
    # Two earlier actors died while timing this request and left the journal behind.
    (tmp_path / "in-flight.json").write_text(json.dumps({"key": key, "attempts": 2, "what": "x", "node": "local"}))
    with pytest.raises(ArtifactCrashedBoard, match="ended the board actor 2 times"):
        actor.measure(req, toy_onnx)
    assert InFlightJournal(tmp_path).begin(key, "x") == 1  # refused once, then forgotten


def test_unknown_runtime_is_refused_naming_the_known_ones(tmp_path, toy_onnx, quick_protocol):
    actor = BoardLatencyActor("testboard", cache_dir=str(tmp_path))
    with pytest.raises(RuntimeLoadError, match="known runtimes: onnxruntime, tflite"):
        actor.measure(_request(toy_onnx, quick_protocol, runtime="tensorrt"), toy_onnx)
