"""The Tune callback that mirrors trials into MLflow: its writes run on its own thread and `close`
waits for them; a sweep saved by older code, or restored by Tune, still hands the sweep its callback."""
from __future__ import annotations

import pickle
from types import SimpleNamespace

from ray import tune

from orchestrator._ray_internals import tuner_callbacks
from orchestrator.tracking.callback import MlflowTrialCallback
from orchestrator.tracking.store import SweepTracking

KNOBS = {"epochs": 2, "runtime": "onnxruntime", "quantization": "fp32", "img_size": 64, "kd_method": "none"}


def _trainable(config):
    return {"done": True}


def _knobs(config: dict) -> dict:
    return dict(KNOBS)


def _callback() -> MlflowTrialCallback:
    return MlflowTrialCallback("sqlite:///unused.db", "0", "parent", _knobs)


def test_close_returns_once_every_queued_write_is_in_mlflow_and_ends_the_writer(tmp_path):
    tracking = SweepTracking.open(f"sqlite:///{tmp_path}/mlflow.db", "t", artifact_dir=tmp_path / "artifacts")
    parent = tracking.parent_run("t", tmp_path, resume=False)[0]
    callback = MlflowTrialCallback(tracking.tracking_uri, tracking.experiment_id, parent, _knobs)
    trial = SimpleNamespace(trial_id="t_0", config={})
    callback.on_trial_start(0, [trial], trial)
    for epoch in (1, 2):
        callback.on_trial_result(0, [trial], trial, {"stage": "train", "epoch": epoch, "loss_box": 1.0 / epoch})

    callback.close()
    assert callback._writer is None
    run_id = tracking.trial_runs(parent)["t_0"]
    history = tracking.client.get_metric_history(run_id, "train/box_loss")
    assert [(m.step, m.value) for m in history] == [(1, 1.0), (2, 0.5)]
    callback.close()  # the sweep closes it again after Tune did: nothing left to do


def test_a_callback_pickled_before_the_tracking_split_unpickles_by_its_old_class_path(monkeypatch):
    monkeypatch.setattr(MlflowTrialCallback, "__module__", "orchestrator.tracking")  # as the old code pickled it
    saved = pickle.dumps(_callback())
    monkeypatch.undo()
    assert b"orchestrator.tracking.callback" not in saved
    assert isinstance(pickle.loads(saved), MlflowTrialCallback)


def test_a_restored_tuner_hands_back_the_mlflow_callback_it_was_saved_with(tmp_path):
    tune.Tuner(_trainable, run_config=tune.RunConfig(name="t", storage_path=str(tmp_path), callbacks=[_callback()]))
    restored = tune.Tuner.restore(str(tmp_path / "t"), _trainable)
    (callback,) = [c for c in tuner_callbacks(restored) if isinstance(c, MlflowTrialCallback)]
    assert callback.parent_run_id == "parent" and callback._writer is None
