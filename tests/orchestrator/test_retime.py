"""The front's noisy latencies are timed again when the sweep is idle: a real emulated board on a
local Ray, toy ONNX detectors as the trials' artifacts, the journal as a sweep leaves it."""
import pytest
import ray

from device_actors.client import connect_board
from device_actors.toy_model import toy_detector_onnx
from orchestrator.config import parse_config
from orchestrator.results import TrialRecord, append_record, load_records
from orchestrator.retime import retime_front
from tests.orchestrator.test_sweep_faults import stand_in_config


@pytest.fixture(scope="module")
def board():
    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield connect_board("local", emulate_if_missing=True)
    ray.shutdown()


def _record(sweep_dir, trial_id: str, map50_95: float, latency_ms: float, cv: float, seed: int) -> TrialRecord:
    artifact = sweep_dir / "models" / trial_id / "toy.onnx"
    artifact.parent.mkdir(parents=True)
    artifact.write_bytes(toy_detector_onnx(64, seed=seed))
    knobs = {"board_threads": 1, "kd_method": "none"}
    record = TrialRecord(trial_id, "complete", knobs, {"map50_95": map50_95, "latency_ms": latency_ms,
                                                       "latency_cv": cv, "latency_p90_ms": 3 * latency_ms},
                         artifact=str(artifact.relative_to(sweep_dir)))
    append_record(sweep_dir, record)
    return record


def test_a_noisy_latency_on_the_front_is_timed_again_and_the_front_follows(board, tmp_path):
    cfg = parse_config(stand_in_config(tmp_path, "retime"), base_dir=tmp_path)
    sweep_dir = cfg.sweep_dir
    _record(sweep_dir, "noisy_fast", 0.30, 0.01, 0.90, seed=1)  # on the front, with a number no CPU gives
    _record(sweep_dir, "quiet_slow", 0.35, 50.0, 0.01, seed=2)  # on the front, quiet: left alone
    _record(sweep_dir, "dominated", 0.10, 60.0, 0.80, seed=3)  # noisy but off the front: left alone
    heard = []
    records = {r.trial_id: r for r in retime_front(cfg, sweep_dir, [board], on_retimed=heard.append)}
    retimed = records["noisy_fast"].metrics
    assert retimed["latency_retimed"] is True and retimed["latency_ms"] > 0.01
    assert retimed["latency_ms"] != 0.01 and retimed["latency_p90_ms"] >= retimed["latency_ms"]
    assert "latency_retimed" not in records["quiet_slow"].metrics
    assert "latency_retimed" not in records["dominated"].metrics
    assert [r.trial_id for r in heard] == ["noisy_fast"]
    assert {r.trial_id: r.metrics.get("latency_retimed") for r in load_records(sweep_dir)}["noisy_fast"] is True
    assert retime_front(cfg, sweep_dir, [board]) == load_records(sweep_dir)  # nothing left to time again
