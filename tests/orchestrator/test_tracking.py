"""The MLflow mirror on a real SQLite store: a trial's child run ends up holding its journal record,
even when a write was cut between its two marks (the finished tag and the run's status)."""
from __future__ import annotations

from orchestrator.results import TrialRecord
from orchestrator.tracking.names import FINISHED_TAG
from orchestrator.tracking.store import SweepTracking

KNOBS = {"epochs": 2, "runtime": "onnxruntime", "quantization": "fp32", "img_size": 64, "kd_method": "none"}
RECORD = TrialRecord("t_00000", "complete", KNOBS, {"map50_95": 0.25, "latency_ms": 3.0, "epoch": 2})


def _tracking(tmp_path) -> tuple[SweepTracking, str]:
    tracking = SweepTracking.open(f"sqlite:///{tmp_path}/mlflow.db", "t", artifact_dir=tmp_path / "artifacts")
    return tracking, tracking.parent_run("t", tmp_path, resume=False)[0]


def test_backfill_finishes_a_run_whose_status_write_was_lost(tmp_path):
    tracking, parent = _tracking(tmp_path)
    run_id, _ = tracking.trial_run(parent, RECORD.trial_id, RECORD.knobs)
    tracking.client.set_tag(run_id, FINISHED_TAG, "true")  # the tag landed, then the server went away
    assert tracking.trial_run(parent, RECORD.trial_id, RECORD.knobs) == (run_id, False)

    assert tracking.backfill(parent, [RECORD]) == 1
    run = tracking.client.get_run(run_id)
    assert run.info.status == "FINISHED" and run.data.metrics["artifact/map50_95"] == 0.25
    assert tracking.trial_run(parent, RECORD.trial_id, RECORD.knobs) == (run_id, True)
    assert tracking.backfill(parent, [RECORD]) == 0  # nothing twice


def test_backfill_gives_a_failed_trial_a_failed_run(tmp_path):
    tracking, parent = _tracking(tmp_path)
    failed = TrialRecord("t_00001", "failed", KNOBS, {}, error="ValueError: bad")
    assert tracking.backfill(parent, [failed]) == 1
    run_id, finished = tracking.trial_run(parent, failed.trial_id, failed.knobs)
    run = tracking.client.get_run(run_id)
    assert finished and run.info.status == "FAILED" and run.data.tags["edgesweep.error"] == "ValueError: bad"


def _trial(trial_id: str, map50_95: float, latency_ms: float, sha: str = "") -> TrialRecord:
    return TrialRecord(trial_id, "complete", KNOBS,
                       {"map50_95": map50_95, "latency_ms": latency_ms, "epoch": 2, "format": "onnx",
                        "artifact_sha256": sha})


def test_a_trials_onnx_artifact_is_an_onnx_flavoured_logged_model_and_a_tflite_one_a_plain_model(tmp_path):
    import mlflow
    import onnx

    from common.hashing import file_sha256
    from device_actors.toy_model import toy_detector_onnx

    tracking, parent = _tracking(tmp_path)
    onnx_file, tflite_file = tmp_path / "m.onnx", tmp_path / "m.tflite"
    onnx_file.write_bytes(toy_detector_onnx(32))
    tflite_file.write_bytes(b"TFL3 stands for a flatbuffer here: MLflow only stores it")
    for trial_id, path in (("t_0", onnx_file), ("t_1", tflite_file)):
        record = _trial(trial_id, 0.3, 2.0, file_sha256(path))
        run_id, _ = tracking.trial_run(parent, trial_id, record.knobs)
        tracking.record_trial(run_id, record, [path])
    runs = tracking.trial_runs(parent)
    assert set(runs) == {"t_0", "t_1"}

    mlflow.set_tracking_uri(tracking.tracking_uri)
    onnx_model = tracking.client.get_run(runs["t_0"]).outputs.model_outputs[0].model_id
    loaded = mlflow.onnx.load_model(f"models:/{onnx_model}")
    assert loaded.SerializeToString() == onnx.load(str(onnx_file)).SerializeToString()
    tflite_model = tracking.client.get_run(runs["t_1"]).outputs.model_outputs[0].model_id
    logged = tracking.client.get_logged_model(tflite_model)
    got = mlflow.artifacts.download_artifacts(artifact_uri=f"{logged.artifact_location}/m.tflite",
                                              dst_path=str(tmp_path / "dl"))
    assert file_sha256(got) == file_sha256(tflite_file) == logged.tags["edgesweep.artifact_sha256"]


def test_the_fronts_models_are_registered_once_tagged_with_what_they_win_and_untagged_when_they_leave(tmp_path):
    from device_actors.toy_model import toy_detector_onnx

    tracking, parent = _tracking(tmp_path)
    model = tmp_path / "m.onnx"
    model.write_bytes(toy_detector_onnx(32))
    trials = [_trial("a", 0.40, 9.0), _trial("b", 0.30, 5.0), _trial("c", 0.20, 1.0), _trial("d", 0.45, 12.0)]
    for t in trials:
        tracking.record_trial(tracking.trial_run(parent, t.trial_id, t.knobs)[0], t, [model])
    runs = tracking.trial_runs(parent)
    objectives = [("map50_95", "max"), ("latency_ms", "min")]

    def tags() -> dict[str, dict]:
        versions = tracking.client.search_model_versions("name = 'sweep-x'")
        return {v.tags["edgesweep.trial_id"]: v.tags for v in versions}

    assert len(tracking.register_front("sweep-x", trials[:3], objectives, runs)) == 3
    assert {t: v["edgesweep.wins"] for t, v in tags().items()} == {"a": "map50_95", "b": "trade-off", "c": "latency_ms"}
    tracking.register_front("sweep-x", trials[:3], objectives, runs)  # a second report registers nothing new
    assert len(tags()) == 3
    tracking.register_front("sweep-x", [trials[3], trials[1], trials[2]], objectives, runs)  # d pushed a off
    now = tags()
    assert len(now) == 4 and now["a"]["edgesweep.pareto"] == "false" and now["d"]["edgesweep.wins"] == "map50_95"
    assert all(now[t]["edgesweep.pareto"] == "true" for t in "bcd")

    import mlflow
    import onnx

    mlflow.set_tracking_uri(tracking.tracking_uri)  # a registered version loads like any MLflow model
    assert mlflow.onnx.load_model("models:/sweep-x/1").SerializeToString() == onnx.load(str(model)).SerializeToString()
