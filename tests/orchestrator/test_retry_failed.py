"""`sweep --resume --retry-failed`: a failed trial runs again from its trained student, and Tune, the
journal, the Optuna study, MLflow and the report all end up saying it completed.

Training and export are the test-only stand-in stages (they sleep and return a toy ONNX detector);
Ray, Tune, OptunaSearch with its SQLite study, MLflow, the journal and the board actor are real.
"""
from __future__ import annotations

import pickle
from types import SimpleNamespace

import optuna
import pytest
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

from orchestrator.commands.sweep import print_report
from orchestrator.config import parse_config
from orchestrator.errors import ConfigError
from orchestrator.results import ResultsLog, load_records
from orchestrator.searcher import RETRY_ATTR, TUNE_TRIAL_ATTR, study_url
from orchestrator.stand_in_stages import StandInStages
from orchestrator.sweep import Sweep, run_sweep
from orchestrator.tracking.callback import MlflowTrialCallback
from orchestrator.tracking.names import RETRIED_TAG
from orchestrator.tracking.store import SweepTracking
from tests.orchestrator.test_sweep_faults import cache, stand_in_config  # noqa: F401 - its module fixture

FAILING = {"kd_method": "output", "quantization": "int8"}


def _child_runs(result) -> list:
    client = MlflowClient(tracking_uri=result.tracking_uri)
    return client.search_runs([result.experiment_id], f"tags.`{MLFLOW_PARENT_RUN_ID}` = '{result.parent_run_id}'")


@pytest.mark.slow  # two real sweeps, the second resumed: 100-155 s on a loaded 2-core machine
def test_retry_failed_runs_a_failed_trial_again_without_training_its_student_and_every_store_agrees(
        tmp_path, capsys):
    raw = stand_in_config(tmp_path, "retry", search={"kd_method": {"choice": ["none", "output"]},
                                                     "quantization": {"choice": ["fp32", "int8"]}},
                          searcher={"algorithm": "tpe", "trials": 4, "concurrency": 2, "max_failures": 0})
    cfg = parse_config(raw, base_dir=tmp_path)
    first = run_sweep(cfg, stages=StandInStages(train_seconds=0.2, fail_export_when=FAILING), show_progress=False)
    (failed,) = first.failed
    assert failed.knobs["kd_method"] == "output" and failed.knobs["quantization"] == "int8"
    assert len([r for r in first.records if r.complete]) == 3

    capsys.readouterr()
    print_report(first.sweep_dir, backfill=False)
    out = " ".join(capsys.readouterr().out.split())
    assert "Failed trials (1)" in out and failed.trial_id in out and "export failed on purpose" in out
    assert "--resume --retry-failed" in out

    with pytest.raises(ConfigError, match="--retry-failed .* --resume"):
        Sweep(cfg, retry_failed=True)

    # The retry's stages fail any training of an `output` student: it completes only if nothing is trained again.
    second = run_sweep(cfg, resume=True, retry_failed=True, show_progress=False,
                       stages=StandInStages(train_seconds=0.2, fail_when={"kd_method": "output"}))
    assert second.failed == [] and second.interrupted is None
    records = {r.trial_id: r for r in load_records(second.sweep_dir)}
    assert len(records) == 4 and all(r.complete for r in records.values())
    retried = records[failed.trial_id]
    assert retried.metrics["student_key"] is not None and retried.artifact is not None

    study = optuna.load_study(study_name="retry", storage=study_url(second.sweep_dir))
    (fail,) = [t for t in study.trials if t.state.name == "FAIL"]
    assert fail.user_attrs[TUNE_TRIAL_ATTR] == failed.trial_id  # the failed attempt stays in the history
    (told,) = [t for t in study.trials if t.user_attrs.get(RETRY_ATTR) == fail.number]
    assert told.state.name == "COMPLETE" and told.params == fail.params
    assert told.values[0] == retried.metrics["map50_95"] and told.values[1] > 0  # the latency as the trial measured it
    run_trials = [t for t in study.trials if t.state.name == "COMPLETE"]
    assert len(run_trials) == 4  # one COMPLETE study trial per trained configuration, the retry's included

    runs = _child_runs(second)
    assert len(runs) == 4 and sorted(r.info.status for r in runs) == ["FINISHED"] * 4  # the failed run, reopened
    (reopened,) = [r for r in runs if RETRIED_TAG in r.data.tags]
    assert "export failed on purpose" in reopened.data.tags[RETRIED_TAG]
    assert "edgesweep.error" not in reopened.data.tags

    capsys.readouterr()
    print_report(second.sweep_dir, backfill=False)
    assert "Failed trials" not in capsys.readouterr().out


def _knobs(config: dict) -> dict:
    return {"epochs": 2, "runtime": "onnxruntime", "quantization": "fp32", "img_size": 64, "kd_method": "none"}


def _trial(trial_id: str, result: dict | None = None):
    return SimpleNamespace(trial_id=trial_id, config={}, last_result=result or {}, error_file=None, checkpoint=None)


def test_a_failed_trial_run_is_reopened_when_the_trial_starts_again_and_ends_as_its_retry_does(tmp_path):
    tracking = SweepTracking.open(f"sqlite:///{tmp_path}/mlflow.db", "t", artifact_dir=tmp_path / "artifacts")
    parent = tracking.parent_run("t", tmp_path, resume=False)[0]
    callback = MlflowTrialCallback(tracking.tracking_uri, tracking.experiment_id, parent, _knobs)
    trial = _trial("t_0")
    callback.on_trial_start(0, [trial], trial)
    callback.on_trial_error(0, [trial], trial)
    callback.close()
    run_id = tracking.trial_runs(parent)["t_0"]
    assert tracking.client.get_run(run_id).info.status == "FAILED"

    again = MlflowTrialCallback(tracking.tracking_uri, tracking.experiment_id, parent, _knobs)
    retry = _trial("t_0", {"trial_complete": True, "map50_95": 0.5})
    again.on_trial_start(0, [retry], retry)
    again.close()
    run = tracking.client.get_run(run_id)
    assert run.info.status == "RUNNING" and RETRIED_TAG in run.data.tags and "edgesweep.error" not in run.data.tags
    again.on_trial_complete(0, [retry], retry)
    again.close()
    run = tracking.client.get_run(run_id)
    assert run.info.status == "FINISHED" and run.data.metrics["artifact/map50_95"] == 0.5
    assert tracking.trial_runs(parent) == {"t_0": run_id}  # one run per trial, retried or not


def test_a_retried_trial_stopped_before_it_ends_is_journalled_interrupted_not_failed(tmp_path):
    log = ResultsLog(tmp_path, _knobs)
    trial = _trial("t_0")
    log.on_trial_error(0, [trial], trial)
    assert [r.status for r in load_records(tmp_path)] == ["failed"]
    restored = pickle.loads(pickle.dumps(log))  # as Tune restores it on --resume --retry-failed
    restored.on_trial_start(0, [trial], trial)
    restored.on_experiment_end([trial])
    assert [r.status for r in load_records(tmp_path)] == ["interrupted"]  # runs again on the next --resume
