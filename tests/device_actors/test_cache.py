"""The latency cache answers identical requests, survives a restart, and shrugs off a torn write."""
from __future__ import annotations

import dataclasses

from device_actors.cache import LatencyCache
from device_actors.report import LatencyReport, MeasureRequest
from device_actors.runtimes import RuntimeOptions
from device_actors.timing import TimingProtocol


def _report(**changes) -> LatencyReport:
    base = LatencyReport(
        board="imx8mp", node_id="n1", emulated=False, cached=False, artifact_sha256="ab" * 32, runtime="onnxruntime",
        runtime_version="1.32.0", threads=4, providers=("CPUExecutionProvider",), delegate=None, input_hw=(320, 320),
        runs=50, median_ms=12.5, mean_ms=12.7, p90_ms=13.0, p99_ms=14.0, std_ms=0.3, cv=0.024, fps=80.0, load_ms=40.0,
        first_run_ms=20.0, preprocess_ms=3.0, postprocess_ms=1.0, camera_hw=(480, 640), peak_rss_increase_mb=30.0,
        temperature_start_c=45.0, temperature_end_c=47.0, frequency_start_mhz=1600.0, frequency_end_mhz=1600.0,
        protocol={"warmup_runs": 10}, facts={"cpu_model": "Cortex-A53"}, runtime_versions={"onnxruntime": "1.32.0"},
        started_at=1.0, ended_at=2.0, warnings=("w",))
    return dataclasses.replace(base, **changes)


def _key(threads: int = 4, sha: str = "ab" * 32) -> str:
    return MeasureRequest(sha, "onnxruntime", RuntimeOptions(threads=threads), TimingProtocol()).cache_key("1.32.0")


def test_cached_report_is_marked_cached_and_survives_a_new_cache_instance(tmp_path):
    cache = LatencyCache(tmp_path)
    assert cache.get(_key()) is None
    cache.put(_key(), _report())
    hit = cache.get(_key())
    assert hit == _report(cached=True)

    reopened = LatencyCache(tmp_path)  # what a restarted actor does
    assert len(reopened) == 1
    assert reopened.get(_key()) == _report(cached=True)


def test_key_separates_threads_artifact_runtime_version_and_protocol():
    keys = {_key(), _key(threads=1), _key(sha="cd" * 32),
            MeasureRequest("ab" * 32, "onnxruntime", RuntimeOptions(threads=4)).cache_key("1.33.0"),
            MeasureRequest("ab" * 32, "onnxruntime", RuntimeOptions(threads=4),
                           TimingProtocol(min_runs=100)).cache_key("1.32.0"),
            MeasureRequest("ab" * 32, "onnxruntime", RuntimeOptions(threads=4),
                           camera_hw=(720, 1280)).cache_key("1.32.0")}
    assert len(keys) == 6


def test_torn_last_line_after_a_crash_is_skipped_and_the_rest_kept(tmp_path, caplog):
    cache = LatencyCache(tmp_path)
    cache.put(_key(), _report())
    with cache.path.open("a") as f:
        f.write('{"key": "half-written", "report": {"board": ')
    reopened = LatencyCache(tmp_path)
    assert len(reopened) == 1
    assert "skipping unreadable latency cache entry" in caplog.text and str(cache.path) in caplog.text


def test_a_later_measurement_of_the_same_key_replaces_the_earlier_one(tmp_path):
    cache = LatencyCache(tmp_path)
    cache.put(_key(), _report(median_ms=12.5))
    cache.put(_key(), _report(median_ms=11.0))
    assert LatencyCache(tmp_path).get(_key()).median_ms == 11.0
