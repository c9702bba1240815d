"""A graph timed once: the actor (in-process) reuses the measurement of an artifact with the same graph,
says so, re-times a sample of reuses, reports a disagreement, and times everything when told not to
reuse. Real toy ONNX detectors: seeds give other weights, widths another graph."""
from __future__ import annotations

import dataclasses
import logging

import pytest

from device_actors.actor import BoardLatencyActor
from device_actors.cache import LatencyCache
from device_actors.graph_reuse import GRAPH_FILE
from device_actors.measure import sha256_hex
from device_actors.report import MeasureRequest
from device_actors.runtimes import RuntimeOptions, graph_key
from device_actors.toy_model import toy_detector_onnx

pytest.importorskip("onnx")  # builds the toy detectors


@pytest.fixture(scope="module")
def same_graph() -> list[bytes]:
    """Four detectors of one graph with other weights."""
    return [toy_detector_onnx(96, width=8, depth=1, seed=seed) for seed in range(4)]


def _request(model: bytes, protocol) -> MeasureRequest:
    return MeasureRequest(sha256_hex(model), "onnxruntime", protocol=protocol)


def _measure(actor: BoardLatencyActor, model: bytes, protocol):
    return actor.measure(_request(model, protocol), model)


def test_an_artifact_with_a_timed_graph_gets_that_measurement_marked_as_reused(tmp_path, same_graph, quick_protocol):
    actor = BoardLatencyActor("testboard", emulated=True, cache_dir=str(tmp_path))
    first = _measure(actor, same_graph[0], quick_protocol)
    second = _measure(actor, same_graph[1], quick_protocol)
    assert first.reused_from is None and not first.cached
    assert second.reused_from == first.artifact_sha256 and second.cached
    assert second.artifact_sha256 == sha256_hex(same_graph[1]) != first.artifact_sha256
    assert (second.median_ms, second.started_at) == (first.median_ms, first.started_at)

    restarted = BoardLatencyActor("testboard", emulated=True, cache_dir=str(tmp_path))
    assert restarted.lookup(_request(same_graph[1], quick_protocol)).reused_from == first.artifact_sha256
    assert _measure(restarted, same_graph[2], quick_protocol).reused_from == first.artifact_sha256


def test_another_graph_and_other_threads_are_timed(tmp_path, same_graph, quick_protocol):
    actor = BoardLatencyActor("testboard", emulated=True, cache_dir=str(tmp_path))
    _measure(actor, same_graph[0], quick_protocol)
    wider = toy_detector_onnx(96, width=16, depth=1)
    assert _measure(actor, wider, quick_protocol).reused_from is None
    two_threads = MeasureRequest(sha256_hex(same_graph[1]), "onnxruntime", options=RuntimeOptions(threads=2),
                                 protocol=quick_protocol)
    assert actor.measure(two_threads, same_graph[1]).reused_from is None


def test_every_nth_reuse_is_timed_again_and_compared(tmp_path, same_graph, quick_protocol):
    protocol = dataclasses.replace(quick_protocol, recheck_every=2)
    actor = BoardLatencyActor("testboard", emulated=True, cache_dir=str(tmp_path))
    first = _measure(actor, same_graph[0], protocol)
    reused = _measure(actor, same_graph[1], protocol)
    rechecked = _measure(actor, same_graph[2], protocol)
    assert reused.reused_from == first.artifact_sha256
    assert rechecked.reused_from is None and not rechecked.cached and rechecked.started_at > first.started_at
    check = rechecked.recheck
    assert check["of"] == first.artifact_sha256 and check["median_ms"] == first.median_ms
    assert check["difference_ms"] == pytest.approx(rechecked.median_ms - first.median_ms)
    assert check["spread_ms"] == pytest.approx(rechecked.p90_ms - rechecked.median_ms + first.p90_ms - first.median_ms)
    assert check["agrees"] == (abs(check["difference_ms"]) <= check["spread_ms"])


def test_a_recheck_beyond_the_spread_is_reported_and_ends_the_reuse_of_that_graph(tmp_path, same_graph,
                                                                                  quick_protocol, caplog):
    protocol = dataclasses.replace(quick_protocol, recheck_every=1)
    first = _measure(BoardLatencyActor("testboard", emulated=True, cache_dir=str(tmp_path)), same_graph[0], protocol)
    # The board's index as a board would have left it had the first artifact read a second slower:
    # what a board whose kernels depend on weight values (sparse ones) may do.
    request = _request(same_graph[0], protocol)
    key = request.graph_cache_key(graph_key("onnxruntime", same_graph[0]), first.runtime_version)
    slower = {k: getattr(first, k) + 1000.0 for k in ("median_ms", "mean_ms", "p90_ms", "p99_ms")}
    LatencyCache(tmp_path, GRAPH_FILE).put(key, dataclasses.replace(first, **slower))
    actor = BoardLatencyActor("testboard", emulated=True, cache_dir=str(tmp_path))
    with caplog.at_level(logging.WARNING, logger="device_actors"):
        rechecked = _measure(actor, same_graph[1], protocol)
    assert rechecked.reused_from is None and rechecked.recheck["agrees"] is False
    assert rechecked.recheck["difference_ms"] < 0
    assert any("beyond the two measurements' spread" in w for w in rechecked.warnings)
    assert "beyond the two measurements' spread" in caplog.text
    later = _measure(actor, same_graph[2], protocol)
    assert later.reused_from is None and later.recheck is None and not later.cached


def test_reuse_off_times_every_artifact(tmp_path, same_graph, quick_protocol):
    protocol = dataclasses.replace(quick_protocol, reuse_graphs=False)
    actor = BoardLatencyActor("testboard", emulated=True, cache_dir=str(tmp_path))
    reports = [_measure(actor, model, protocol) for model in same_graph[:2]]
    assert [r.reused_from for r in reports] == [None, None] and not any(r.cached for r in reports)
    assert not (tmp_path / GRAPH_FILE).exists()


def test_switches_of_reuse_and_quiet_leave_the_cache_key_alone(quick_protocol, same_graph):
    changed = dataclasses.replace(quick_protocol, reuse_graphs=False, recheck_every=0, quiet_wait_s=0.0)
    assert _request(same_graph[0], changed).cache_key("v") == _request(same_graph[0], quick_protocol).cache_key("v")
