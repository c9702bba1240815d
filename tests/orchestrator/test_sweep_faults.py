"""Faults during a sweep: a trial that raises, a killed board actor, a killed driver.

Training and export are the test-only stand-in stages of `orchestrator.stand_in_stages` (they sleep and
return a toy ONNX detector) because these tests are about the sweep machinery; everything else is
real: a local Ray cluster, Tune, OptunaSearch with its SQLite study, MLflow, the board actor.
"""
import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import optuna
import pytest
import ray
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

from device_actors.client import get_board
from orchestrator.commands.sweep import print_report
from orchestrator.config import parse_config
from orchestrator.results import load_records
from orchestrator.searcher import MAX_ASKS, repeated_proposals, study_url
from orchestrator.sweep import run_sweep
from orchestrator.sweep_state import read_state
from orchestrator.tracking.store import SweepTracking
from orchestrator.stand_in_stages import StandInStages

REPO = Path(__file__).resolve().parents[2]


def stand_in_config(root: Path, name: str, **overrides) -> dict:
    raw = {
        "name": name, "output_dir": str(root / "runs"),
        "data": {"source": "default", "synth": {"train": 8, "val": 4, "size": 64, "seed": 0},
                 "calibration_images": 4},
        "student": {"model": "n"}, "teachers": {"t": {"model": "n", "epochs": 1}},
        "search": {"kd_method": {"grid": ["none", "output"]}, "quantization": {"grid": ["fp32", "int8"]}},
        "fixed": {"epochs": 2, "img_size": 64, "board_threads": 1, "teacher": "t", "runtime": "onnxruntime"},
        "searcher": {"algorithm": "grid", "concurrency": 2, "max_failures": 0},
        "resources": {"train": {"cpu": 0.25}, "export": {"cpu": 0.25}},
        "board": {"name": "local", "timing": {"warmup_runs": 2, "min_runs": 5, "min_seconds": 0.05}},
        "mlflow": {"experiment": name},
    }
    raw.update(overrides)
    return raw


@pytest.fixture(scope="module", autouse=True)
def cache(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("EDGESWEEP_CACHE", str(tmp_path_factory.mktemp("cache")))
        yield
        ray.shutdown()


def test_a_trial_that_raises_is_failed_in_tune_and_mlflow_and_the_sweep_goes_on(tmp_path, capsys):
    cfg = parse_config(stand_in_config(tmp_path, "raises"), base_dir=tmp_path)
    stages = StandInStages(train_seconds=0.2, fail_export_when={"kd_method": "output", "quantization": "int8"})
    result = run_sweep(cfg, stages=stages, show_progress=False)
    by_status = {r.status: [] for r in result.records}
    for r in result.records:
        by_status[r.status].append(r)
    assert len(by_status["complete"]) == 3 and len(by_status["failed"]) == 1
    failed = by_status["failed"][0]
    assert failed.knobs["kd_method"] == "output" and "export failed on purpose" in failed.error
    client = MlflowClient(tracking_uri=result.tracking_uri)
    children = client.search_runs([result.experiment_id], f"tags.`{MLFLOW_PARENT_RUN_ID}` = '{result.parent_run_id}'")
    statuses = sorted(r.info.status for r in children)
    assert statuses == ["FAILED", "FINISHED", "FINISHED", "FINISHED"]
    failed_run = next(r for r in children if r.info.status == "FAILED")
    assert "failed on purpose" in failed_run.data.tags["edgesweep.error"]
    assert client.get_run(result.parent_run_id).info.status == "FINISHED"  # the sweep itself finished
    assert {r.trial_id for r in result.front} <= {r.trial_id for r in by_status["complete"]}

    capsys.readouterr()
    print_report(result.sweep_dir, backfill=False)  # the report pits KD against the baseline where both finished
    out = " ".join(capsys.readouterr().out.split())
    assert "Best KD trial against the best baseline trial, per format" in out
    assert "onnx " in out and "output/t x1" in out and "onnx-int8 " not in out.split("per format")[1]


@pytest.mark.slow  # an 8-trial real sweep: about 30 s on CI (the front's rule is unit-tested in the default suite)
class _Messages(logging.Handler):
    def __init__(self):
        super().__init__()
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def test_pareto_front_of_varied_trials_equals_a_bruteforce_non_dominated_filter(tmp_path):
    raw = stand_in_config(tmp_path, "front")
    raw["search"]["runtime"] = {"grid": ["onnxruntime", "tflite"]}
    raw["fixed"].pop("runtime")
    cfg = parse_config(raw, base_dir=tmp_path)  # 8 trials, different stand-in accuracy and artifacts
    tune_log = _Messages()
    logging.getLogger("ray.tune").addHandler(tune_log)  # "ray" does not propagate to the root logger
    try:
        result = run_sweep(cfg, stages=StandInStages(train_seconds=0.1, distinct_artifacts=True), show_progress=False)
    finally:
        logging.getLogger("ray.tune").removeHandler(tune_log)
    # Tune's result files are off (orchestrator/sweep.py), and its unread ResultGrid does not warn about each trial
    assert not [m for m in tune_log.messages if "Failed to fetch metrics" in m]
    points = {r.trial_id: (r.metrics["map50_95"], r.metrics["latency_ms"]) for r in result.records}
    assert len(set(points.values())) == 8
    expected = {t for t, (m, l) in points.items()
                if not any(m2 >= m and l2 <= l and (m2, l2) != (m, l) for m2, l2 in points.values())}
    assert {r.trial_id for r in result.front} == expected and 1 <= len(expected) < 8


def test_a_stalled_mlflow_store_holds_no_trial_back_and_the_sweep_returns_with_every_run_written(
        tmp_path, monkeypatch):
    """MLflow writes run beside Tune's loop: every trial can end while the store answers nothing,
    and run_sweep still returns with each trial's run complete."""
    cfg = parse_config(stand_in_config(tmp_path, "stalled-mlflow"), base_dir=tmp_path)
    sweep_dir, ended_while_stalled = cfg.sweep_dir, []
    trial_run = SweepTracking.trial_run

    def stalled_until_every_trial_ended(self, *args, **kwargs):
        deadline = time.monotonic() + 120
        while not ended_while_stalled and time.monotonic() < deadline:
            if sum(r.complete for r in load_records(sweep_dir)) == 4:
                ended_while_stalled.append(True)
            time.sleep(0.2)
        return trial_run(self, *args, **kwargs)

    monkeypatch.setattr(SweepTracking, "trial_run", stalled_until_every_trial_ended)
    result = run_sweep(cfg, stages=StandInStages(train_seconds=0.1), show_progress=False)
    assert ended_while_stalled, "the trials waited for MLflow"
    client = MlflowClient(tracking_uri=result.tracking_uri)
    children = client.search_runs([result.experiment_id], f"tags.`{MLFLOW_PARENT_RUN_ID}` = '{result.parent_run_id}'")
    assert sorted(c.info.status for c in children) == ["FINISHED"] * 4
    assert all(c.data.metrics.get("artifact/map50_95") is not None for c in children)


@pytest.mark.slow  # a real sweep whose trial process dies mid-training: about 30 s on CI
def test_a_crashed_trial_resumes_from_its_last_epoch_checkpoint_instead_of_restarting(tmp_path):
    raw = stand_in_config(tmp_path, "retried")
    raw["fixed"]["epochs"] = 4
    raw["searcher"]["max_failures"] = 1
    cfg = parse_config(raw, base_dir=tmp_path)
    result = run_sweep(cfg, stages=StandInStages(train_seconds=0.4, crash_first_attempt_at=3), show_progress=False)
    assert len(result.records) == 4 and all(r.complete for r in result.records)
    client = MlflowClient(tracking_uri=result.tracking_uri)
    children = client.search_runs([result.experiment_id], f"tags.`{MLFLOW_PARENT_RUN_ID}` = '{result.parent_run_id}'")
    trainers = [c for c in children if c.data.tags["edgesweep.student_trained"] == "true"]
    assert len(trainers) == 2  # one student per KD method; its other export reads it from the student cache
    for child in trainers:
        epochs = sorted(m.step for m in client.get_metric_history(child.info.run_id, "train/lr"))
        # epochs 1-2 ran once; the second attempt started at epoch 3 from the checkpoint of epoch 2
        assert epochs == [1, 2, 3, 4], epochs


def test_killed_board_actor_is_restarted_and_no_trial_is_lost(tmp_path):
    raw = stand_in_config(tmp_path, "actor-killed")
    raw["board"]["timing"] = {"warmup_runs": 2, "min_runs": 5, "min_seconds": 1.5}
    cfg = parse_config(raw, base_dir=tmp_path)
    kills = []

    def kill_during_a_measurement():
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not kills:
            try:
                board = get_board("local")
                if board.status(timeout_s=5).queue.running is not None:
                    ray.kill(board.actor, no_restart=False)
                    kills.append(time.time())
            except Exception:  # noqa: BLE001 - the board may not exist yet
                pass
            time.sleep(0.2)

    killer = threading.Thread(target=kill_during_a_measurement, daemon=True)
    killer.start()
    result = run_sweep(cfg, stages=StandInStages(train_seconds=0.2, distinct_artifacts=True), show_progress=False)
    killer.join(timeout=5)
    assert kills, "the board actor was never caught measuring"
    assert len(result.records) == 4 and all(r.complete for r in result.records)


DRIVER = textwrap.dedent("""
    import sys
    from pathlib import Path
    from orchestrator.config import load_config
    from orchestrator.sweep import run_sweep
    from orchestrator.stand_in_stages import StandInStages
    run_sweep(load_config(Path(sys.argv[1])), resume=sys.argv[2] == "resume",
              stages=StandInStages(train_seconds=3.0), show_progress=True)  # the progress callback is saved with the sweep
""")


@pytest.mark.slow  # two real sweep drivers, one killed: about 110 s on CI
def test_driver_killed_mid_sweep_resumes_without_redoing_finished_trials(tmp_path):
    raw = stand_in_config(tmp_path, "killed")
    raw["search"] = {"kd_method": {"choice": ["none", "output"]}, "quantization": {"choice": ["fp32", "int8"]},
                     "kd_factor": {"loguniform": [0.5, 2.0]}}
    raw["searcher"] = {"algorithm": "tpe", "trials": 6, "concurrency": 1, "max_failures": 0}
    config = tmp_path / "kd.yaml"
    import yaml
    config.write_text(yaml.safe_dump(raw))
    script = tmp_path / "driver.py"
    script.write_text(DRIVER)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    driver = subprocess.Popen([sys.executable, str(script), str(config), "fresh"], env=env, cwd=tmp_path,
                              start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    sweep_dir = tmp_path / "runs" / "killed"
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and len(load_records(sweep_dir)) < 2:
            assert driver.poll() is None, "the sweep driver ended before it could be killed"
            time.sleep(0.5)
        time.sleep(1.0)  # into the next trial's training
    finally:
        os.killpg(driver.pid, signal.SIGKILL)  # the driver and the local Ray cluster it started
        driver.wait(30)
    finished_before = {r.trial_id: r for r in load_records(sweep_dir)}
    assert len(finished_before) >= 2

    resumed = subprocess.run([sys.executable, str(script), str(config), "resume"], env=env, cwd=tmp_path,
                             capture_output=True, text=True, timeout=400, start_new_session=True)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    records = load_records(sweep_dir)
    assert len(records) == 6 and all(r.complete for r in records)
    for trial_id, before in finished_before.items():  # finished trials were not run again
        assert next(r for r in records if r.trial_id == trial_id).metrics["timestamp"] == before.metrics["timestamp"]
    lines = [json.loads(line) for line in (sweep_dir / "trials.jsonl").read_text().splitlines()]
    finishes = [line for line in lines if not line["metrics"].get("latency_retimed")]  # not the front's re-timing
    assert len(finishes) == 6, "every trial finished exactly once"
    assert "6/6 trials done" in resumed.stderr  # the live table counts the trials finished before the restart
    study = optuna.load_study(study_name="killed", storage=study_url(sweep_dir))
    states = [t.state.name for t in study.trials if "edgesweep_repeats" not in t.user_attrs]  # not repeats
    # the interrupted trial may appear twice: its first ask, failed as an orphan, and its completion
    assert states.count("COMPLETE") == 6 and set(states) <= {"COMPLETE", "FAIL"} and states.count("FAIL") <= 1
    state = read_state(sweep_dir)  # paths inside the sweep are stored relative to it
    client = MlflowClient(tracking_uri=state["tracking_uri"])
    children = client.search_runs([state["experiment_id"]],
                                  f"tags.`{MLFLOW_PARENT_RUN_ID}` = '{state['parent_run_id']}'")
    finished = [r for r in children if r.info.status == "FINISHED"]
    assert len(finished) == 6 and {r.data.tags["edgesweep.trial_id"] for r in finished} == {r.trial_id for r in records}
    assert all(r.info.status == "KILLED" for r in children if r.info.status != "FINISHED")  # no run left RUNNING


def test_a_sweep_trains_each_configuration_once_and_ends_when_the_space_runs_out(tmp_path):
    """Two configurations, four trials asked for: two trainings, and a sweep that finished, not one cut short."""
    raw = stand_in_config(tmp_path, "two-configs", search={"quantization": {"choice": ["fp32", "int8"]}},
                          searcher={"algorithm": "tpe", "trials": 4, "concurrency": 2, "max_failures": 0})
    cfg = parse_config(raw, base_dir=tmp_path)
    result = run_sweep(cfg, stages=StandInStages(train_seconds=0.5), show_progress=False)
    assert sorted(r.knobs["quantization"] for r in result.records) == ["fp32", "int8"]
    assert all(r.complete for r in result.records) and result.interrupted is None
    repeats, exhausted_after = repeated_proposals(cfg, cfg.sweep_dir)
    assert exhausted_after == 2 and repeats >= MAX_ASKS  # the study says the space ran out after 2
    parent = MlflowClient(tracking_uri=result.tracking_uri).get_run(result.parent_run_id)
    assert parent.info.status == "FINISHED" and parent.data.metrics["searcher_repeats"] == repeats
