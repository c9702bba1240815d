"""Stopping a sweep: Ctrl-C and SIGTERM to the real `sweep` command, one driver per sweep, and a
resume that runs the stored config.

The driver is the real CLI (`python -m orchestrator sweep`) in its own process, sent real signals.
Only training and export are replaced, by the test-only stand-in stages (they sleep and return a
toy ONNX detector), because these tests are about stopping and resuming; Ray, Tune, OptunaSearch
with its SQLite study, MLflow, the journal and the board actor are real.
"""
from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import yaml
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

from orchestrator.results import load_records
from orchestrator.searcher import study_url
from orchestrator.sweep_state import read_state
from tests.sweep_driver import driver_env, start_driver, stop_and_wait, wait_for_records, wait_for_started_trials
def _sweep_file(tmp_path: Path, name: str) -> Path:
    raw = {
        "name": name, "output_dir": str(tmp_path / "runs"),
        "data": {"source": "default", "synth": {"train": 8, "val": 4, "size": 64, "seed": 0},
                 "calibration_images": 4},
        # four seeds: four students, so every trial trains (one student's exports would share its training)
        "search": {"seed": {"choice": [0, 1, 2, 3]}},
        "fixed": {"epochs": 2, "img_size": 64, "runtime": "onnxruntime", "quantization": "fp32", "board_threads": 1},
        "searcher": {"algorithm": "tpe", "trials": 4, "concurrency": 1, "max_failures": 0},
        "resources": {"train": {"cpu": 0.5}, "export": {"cpu": 0.5}},
        "board": {"name": "local", "timing": {"warmup_runs": 2, "min_runs": 5, "min_seconds": 0.05}},
    }
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def _children(sweep_dir: Path) -> tuple[MlflowClient, dict, list]:
    state = read_state(sweep_dir)
    client = MlflowClient(tracking_uri=state["tracking_uri"])
    children = client.search_runs([state["experiment_id"]], f"tags.`{MLFLOW_PARENT_RUN_ID}` = '{state['parent_run_id']}'")
    return client, state, children


def test_ctrl_c_saves_marks_trials_interrupted_exits_130_and_resume_tells_optuna_every_trial(tmp_path):
    config = _sweep_file(tmp_path, "ctrl-c")
    sweep_dir = tmp_path / "runs" / "ctrl-c"
    driver = start_driver(tmp_path, config)
    wait_for_records(driver, sweep_dir, 1)
    wait_for_started_trials(driver, sweep_dir, 2)
    time.sleep(1.0)  # into the second trial's training (3 s)
    code, out, err, seconds = stop_and_wait(driver, signal.SIGINT)
    assert code == 130, err[-3000:]
    print(f"SIGINT to exit: {seconds:.1f} s")
    assert "interrupted (SIGINT)" in err and f"sweep {config} --resume" in err.replace("\n", " ")
    assert "Pareto front of" not in out  # no report printed as if the sweep had ended

    records = {r.trial_id: r for r in load_records(sweep_dir)}
    assert sorted(r.status for r in records.values()) == ["complete", "interrupted"]
    study = optuna.load_study(study_name="ctrl-c", storage=study_url(sweep_dir))
    states = [t.state.name for t in study.trials]
    assert states.count("FAIL") == 0 and states.count("COMPLETE") == 1 and states.count("RUNNING") == 1
    assert [t.user_attrs.get("edgesweep_interrupted") for t in study.trials if t.state.name == "RUNNING"] == [True]
    client, state, children = _children(sweep_dir)
    assert client.get_run(state["parent_run_id"]).info.status == "KILLED"
    assert sorted(c.info.status for c in children) == ["FINISHED", "KILLED"]

    # an edited YAML is refused: --resume runs the config the sweep started with
    edited = yaml.safe_load(config.read_text())
    original = config.read_text()
    edited["fixed"]["epochs"] = 3
    config.write_text(yaml.safe_dump(edited))
    refused = subprocess.run([sys.executable, "-m", "orchestrator", "sweep", str(config), "--resume"],
                             env=driver_env(tmp_path), cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert refused.returncode == 2, refused.stderr[-2000:]
    assert "in fixed.epochs; --resume runs the stored config and may only change board.timeout_s" in refused.stderr
    config.write_text(original)

    code, out, err = start_driver(tmp_path, config, "--resume").wait(400)
    assert code == 0, err[-3000:]
    assert "Pareto front of ctrl-c" in out
    final = load_records(sweep_dir)
    assert len(final) == 4 and all(r.complete for r in final)
    study = optuna.load_study(study_name="ctrl-c", storage=study_url(sweep_dir))
    states = [t.state.name for t in study.trials if "edgesweep_repeats" not in t.user_attrs]  # proposals run
    assert states.count("COMPLETE") == 4 and states.count("FAIL") == 0 and len(states) == 4  # every trial told
    client, state, children = _children(sweep_dir)
    assert sorted(c.info.status for c in children) == ["FINISHED"] * 4
    assert client.get_run(state["parent_run_id"]).info.status == "FINISHED"


@pytest.mark.slow  # a real sweep stopped by SIGTERM (Ctrl-C's path is in the default suite): about 45 s on CI
def test_sigterm_stops_like_ctrl_c_and_a_second_driver_on_the_sweep_is_refused(tmp_path):
    config = _sweep_file(tmp_path, "term")
    sweep_dir = tmp_path / "runs" / "term"
    driver = start_driver(tmp_path, config, train_seconds=4.0)
    wait_for_records(driver, sweep_dir, 1)

    second = subprocess.run([sys.executable, "-m", "orchestrator", "sweep", str(config), "--resume"],
                            env=driver_env(tmp_path), cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert second.returncode == 2, second.stderr[-2000:]
    assert f"is being run by another driver (pid {driver.pid} on host " in second.stderr

    wait_for_started_trials(driver, sweep_dir, 2)
    code, out, err, seconds = stop_and_wait(driver, signal.SIGTERM)
    print(f"SIGTERM to exit: {seconds:.1f} s")
    assert code == 130, err[-3000:]
    assert "interrupted (SIGTERM)" in err
    assert "interrupted" in {r.status for r in load_records(sweep_dir)}
    client, state, _ = _children(sweep_dir)
    assert client.get_run(state["parent_run_id"]).info.status == "KILLED"
