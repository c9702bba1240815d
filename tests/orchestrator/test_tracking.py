"""The MLflow mirror on a real SQLite store: a trial's child run ends up holding its journal record,
even when a write was cut between its two marks (the finished tag and the run's status)."""
from __future__ import annotations

from orchestrator.results import TrialRecord
from orchestrator.tracking import FINISHED_TAG, SweepTracking

RECORD = TrialRecord("t_00000", "complete", {"epochs": 2}, {"map50_95": 0.25, "latency_ms": 3.0, "epoch": 2})


def _tracking(tmp_path) -> tuple[SweepTracking, str]:
    tracking = SweepTracking.open(f"sqlite:///{tmp_path}/mlflow.db", "t", artifact_dir=tmp_path / "artifacts")
    return tracking, tracking.parent_run("t", tmp_path, resume=False)


def test_backfill_finishes_a_run_whose_status_write_was_lost(tmp_path):
    tracking, parent = _tracking(tmp_path)
    run_id, _ = tracking.trial_run(parent, RECORD.trial_id, RECORD.knobs)
    tracking.client.set_tag(run_id, FINISHED_TAG, "true")  # the tag landed, then the server went away
    assert tracking.trial_run(parent, RECORD.trial_id, RECORD.knobs) == (run_id, False)

    assert tracking.backfill(parent, [RECORD]) == 1
    run = tracking.client.get_run(run_id)
    assert run.info.status == "FINISHED" and run.data.metrics["map50_95"] == 0.25
    assert tracking.trial_run(parent, RECORD.trial_id, RECORD.knobs) == (run_id, True)
    assert tracking.backfill(parent, [RECORD]) == 0  # nothing twice


def test_backfill_gives_a_failed_trial_a_failed_run(tmp_path):
    tracking, parent = _tracking(tmp_path)
    failed = TrialRecord("t_00001", "failed", {"epochs": 2}, {}, error="ValueError: bad")
    assert tracking.backfill(parent, [failed]) == 1
    run_id, finished = tracking.trial_run(parent, failed.trial_id, failed.knobs)
    run = tracking.client.get_run(run_id)
    assert finished and run.info.status == "FAILED" and run.data.tags["edgesweep.error"] == "ValueError: bad"
