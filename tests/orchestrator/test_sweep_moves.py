"""A sweep copied elsewhere after Ctrl-C resumes where the copy is, into the copy's own stores, and a
start that died before Tune's first save starts again from nothing. The real `sweep` CLI in its own
process with the test-only stand-in stages (tests/sweep_driver.py); Ray, Tune, Optuna, MLflow and
the journal are real."""
from __future__ import annotations

import shutil
import signal
from pathlib import Path

import optuna
import pytest
import yaml
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

from orchestrator.results import load_records
from orchestrator.searcher import study_url
from orchestrator.sweep_state import read_state
from orchestrator.tracking.names import TRIAL_TAG
from tests.sweep_driver import start_driver, stop_and_wait, wait_for_records, wait_for_started_trials


def _sweep_file(tmp_path: Path, name: str) -> Path:
    raw = {"name": name, "output_dir": "runs",
           "data": {"source": "default", "synth": {"train": 8, "val": 4, "size": 64, "seed": 0}, "calibration_images": 4},
           "search": {"seed": {"choice": [0, 1, 2, 3]}},
           "fixed": {"epochs": 2, "img_size": 64, "runtime": "onnxruntime", "quantization": "fp32", "board_threads": 1},
           "searcher": {"algorithm": "tpe", "trials": 4, "concurrency": 1, "max_failures": 0},
           "resources": {"train": {"cpu": 0.5}, "export": {"cpu": 0.5}},
           "board": {"name": "local", "timing": {"warmup_runs": 2, "min_runs": 5, "min_seconds": 0.05}}}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def _finished_children(sweep_dir: Path) -> list[str]:
    state = read_state(sweep_dir)
    client = MlflowClient(tracking_uri=state["tracking_uri"])
    runs = client.search_runs([state["experiment_id"]], f"tags.`{MLFLOW_PARENT_RUN_ID}` = '{state['parent_run_id']}'")
    return sorted(r.info.status for r in runs if TRIAL_TAG in r.data.tags)


@pytest.mark.slow  # two real sweep drivers: both tests took 5 min together on a busy 2-core machine
def test_a_sweep_copied_after_ctrl_c_resumes_in_the_copy_and_leaves_the_original_untouched(tmp_path):
    config = _sweep_file(tmp_path, "moved")
    original = tmp_path / "runs" / "moved"
    driver = start_driver(tmp_path, config)
    wait_for_records(driver, original, 1)
    wait_for_started_trials(driver, original, 2)
    code, _, err, _ = stop_and_wait(driver, signal.SIGINT)
    assert code == 130, err[-3000:]

    copy = tmp_path / "elsewhere" / "moved"
    shutil.copytree(original, copy)
    (copy / "mlflow.db").unlink()  # and its MLflow store is gone: the resume makes a new one, from the journal
    shutil.rmtree(copy / "mlartifacts", ignore_errors=True)
    before = {name: (original / name).read_bytes() for name in ("trials.jsonl", "optuna.db", "mlflow.db", "sweep.json")}

    code, out, err = start_driver(tmp_path, copy, "--resume").wait(400)
    assert code == 0, err[-3000:]
    assert "holds no run of this sweep" in err  # said, not silent
    assert {name: (original / name).read_bytes() for name in before} == before  # nothing went to the original
    final = load_records(copy)
    assert len(final) == 4 and all(r.complete for r in final)
    study = optuna.load_study(study_name="moved", storage=study_url(copy))
    assert [t.state.name for t in study.trials if "edgesweep_repeats" not in t.user_attrs].count("COMPLETE") == 4
    assert read_state(copy)["tracking_uri"] == f"sqlite:///{copy / 'mlflow.db'}"
    assert _finished_children(copy) == ["FINISHED"] * 4  # the trial before the copy backfilled, the rest logged


@pytest.mark.slow  # a real sweep driver
def test_a_start_that_died_before_tunes_first_save_runs_again_on_a_plain_start(tmp_path):
    from ray import tune

    config = _sweep_file(tmp_path, "early")
    sweep_dir = tmp_path / "runs" / "early"
    sweep_dir.mkdir(parents=True)
    # What a driver killed between building the Tuner and Tune's first save leaves behind.
    tune.Tuner(lambda c: None, run_config=tune.RunConfig(name="tune", storage_path=str(sweep_dir)))
    code, out, err = start_driver(tmp_path, config).wait(400)
    assert code == 0, err[-3000:]
    assert "the last driver stopped before Tune saved any state; starting the sweep again" in err
    assert len(load_records(sweep_dir)) == 4 and _finished_children(sweep_dir) == ["FINISHED"] * 4
