"""SIGINT, SIGTERM and SIGHUP to the real `sweep` command in each of its phases: config check, Ray's
start, teachers, Tune, a second signal during Tune's stop, and the end's MLflow drain against a hung
tracking server. Every one ends with exit 130, the parent run KILLED (where MLflow answers) and the
command that carries on; each test prints its signal-to-exit time (no timing is asserted).

The driver is the real CLI in its own process (tests/sweep_driver.py), sent real signals; only
trial training and export are the test-only stand-ins. Ray, Tune, Optuna, MLflow (a SQLite store,
or a real `mlflow server`), the teacher's training and the board actor are real.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import yaml
from mlflow.tracking import MlflowClient

from orchestrator.interrupts import StopSignals, around_ray_init
from orchestrator.results import load_records
from orchestrator.searcher import study_url
from orchestrator.sweep_state import STATE, read_state
from tests.orchestrator.test_sweep_interrupts import _sweep_file
from tests.servers import free_port, mlflow_server, stop
from tests.sweep_driver import (driver_env, start_driver, stop_and_wait, wait_for_records, wait_for_started_trials)


def _wait_for(driver, ready, what: str, timeout_s: float = 240) -> None:
    deadline = time.monotonic() + timeout_s
    while not ready():
        assert driver.process.poll() is None, "the driver ended early:\n" + driver.err_path.read_text()[-3000:]
        assert time.monotonic() < deadline, f"{what} did not happen in time"
        time.sleep(0.05)


def _parent_status(sweep_dir: Path) -> str:
    state = read_state(sweep_dir)
    return MlflowClient(tracking_uri=state["tracking_uri"]).get_run(state["parent_run_id"]).info.status


def _one_line(text: str) -> str:
    return " ".join(text.split())


def test_a_sigterm_while_ray_starts_waits_for_ray_init_and_ray_installs_no_handler_over_the_sweep_s():
    """ray.init would set SIGTERM to sys.exit(15) as it starts (through the Ray function called
    here); around it the sweep's handler stays, and a signal is raised only once ray.init returns
    (a real signal to this process)."""
    import ray._private.utils as ray_utils

    stop, reached_the_end = StopSignals(), False
    with stop:
        with pytest.raises(KeyboardInterrupt, match="SIGTERM"), around_ray_init():
            ray_utils.set_sigterm_handler(lambda signum, frame: sys.exit(signum))  # as ray.init does
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.5)  # the signal arrives meanwhile: recorded, not raised inside ray.init
            reached_the_end = True
        assert reached_the_end and signal.getsignal(signal.SIGTERM) == stop._handle
    assert stop.received == "SIGTERM"


def test_sigterm_during_the_config_check_exits_130_and_says_how_to_start_again(tmp_path):
    config = _sweep_file(tmp_path, "early")
    driver = start_driver(tmp_path, config)
    _wait_for(driver, lambda: "sweep early:" in driver.err_path.read_text(), "the config check")
    code, out, err, seconds = stop_and_wait(driver, signal.SIGTERM)
    print(f"SIGTERM in the config check to exit: {seconds:.1f} s")
    assert code == 130, err[-3000:]
    assert "interrupted (SIGTERM)" in err and "Traceback" not in err
    assert f"sweep {config}" in _one_line(err)
    sweep_dir = tmp_path / "runs" / "early"
    if (sweep_dir / STATE).exists():  # it got as far as opening the parent run
        assert _parent_status(sweep_dir) == "KILLED"


@pytest.mark.slow  # a driver stopped while Ray starts: about 30 s
def test_sigterm_while_ray_starts_exits_130_not_ray_s_15_and_ends_the_parent_run_killed(tmp_path):
    config = _sweep_file(tmp_path, "ray-start")
    sweep_dir = tmp_path / "runs" / "ray-start"
    driver = start_driver(tmp_path, config)
    _wait_for(driver, lambda: (sweep_dir / STATE).exists(), "the parent run")  # written just before ray.init
    code, out, err, seconds = stop_and_wait(driver, signal.SIGTERM)
    print(f"SIGTERM while Ray starts to exit: {seconds:.1f} s")
    assert code == 130, err[-3000:]
    assert "interrupted (SIGTERM)" in err and "Traceback" not in err
    assert f"sweep {config}" in _one_line(err)
    assert _parent_status(sweep_dir) == "KILLED"


@pytest.mark.slow  # a real teacher training while the first trial waits for it: about 35 s
def test_sighup_while_trials_wait_for_their_teacher_exits_130_and_resume_is_offered(tmp_path):
    raw = yaml.safe_load(_sweep_file(tmp_path, "teachers").read_text())
    raw["teachers"] = {"t": {"model": "n", "epochs": 1}}
    raw["search"] = {"kd_method": {"choice": ["output", "feature"]}}
    raw["fixed"]["teacher"] = "t"
    config = tmp_path / "teachers.yaml"
    config.write_text(yaml.safe_dump(raw))
    sweep_dir = tmp_path / "runs" / "teachers"
    driver = start_driver(tmp_path, config)
    wait_for_started_trials(driver, sweep_dir, 1)  # a KD trial: it waits for the teacher, which trains now
    time.sleep(1.0)
    assert not load_records(sweep_dir)
    code, out, err, seconds = stop_and_wait(driver, signal.SIGHUP)
    print(f"SIGHUP while the teacher trains to exit: {seconds:.1f} s")
    assert code == 130, err[-3000:]
    assert "interrupted (SIGHUP)" in err and f"sweep {config} --resume" in _one_line(err)
    assert _parent_status(sweep_dir) == "KILLED"
    assert {r.status for r in load_records(sweep_dir)} <= {"interrupted"}


@pytest.mark.slow  # a real sweep stopped twice, then resumed to its end: 2-3 minutes
def test_a_second_signal_during_tune_s_stop_ends_promptly_and_the_sweep_still_resumes(tmp_path):
    config = _sweep_file(tmp_path, "twice")
    sweep_dir = tmp_path / "runs" / "twice"
    driver = start_driver(tmp_path, config)
    wait_for_records(driver, sweep_dir, 1)
    wait_for_started_trials(driver, sweep_dir, 2)
    time.sleep(1.0)
    driver.process.send_signal(signal.SIGHUP)
    time.sleep(0.3)
    code, out, err, seconds = stop_and_wait(driver, signal.SIGINT)
    print(f"SIGHUP then SIGINT 0.3 s later during Tune, second signal to exit: {seconds:.1f} s")
    assert code == 130, err[-3000:]
    assert "interrupted (SIGHUP)" in err and "Traceback" not in err
    assert "the sweep ends as soon as Tune has saved its state" in err
    assert _parent_status(sweep_dir) == "KILLED"

    code, out, err = start_driver(tmp_path, config, "--resume").wait(400)  # Tune's saved state is whole
    assert code == 0, err[-3000:]
    final = load_records(sweep_dir)
    assert len(final) == 4 and all(r.complete for r in final)
    study = optuna.load_study(study_name="twice", storage=study_url(sweep_dir))
    assert [t.state.name for t in study.trials if "edgesweep_repeats" not in t.user_attrs].count("COMPLETE") == 4
    assert _parent_status(sweep_dir) == "FINISHED"


@pytest.mark.slow  # a real mlflow server, hung (SIGSTOP) mid-sweep: 80-110 s
def test_sigint_while_the_end_waits_for_a_hung_tracking_server_exits_promptly_and_report_closes_the_run(tmp_path):
    store, port = tmp_path / "store", free_port()
    store.mkdir()
    raw = yaml.safe_load(_sweep_file(tmp_path, "hung").read_text())
    raw["searcher"]["trials"] = 2
    raw["mlflow"] = {"tracking_uri": f"http://127.0.0.1:{port}"}
    config = tmp_path / "hung.yaml"
    config.write_text(yaml.safe_dump(raw))
    sweep_dir = tmp_path / "runs" / "hung"
    server = mlflow_server(store, port)
    try:
        driver = start_driver(tmp_path, config, train_seconds=1.0)
        wait_for_records(driver, sweep_dir, 1)
        os.killpg(server.pid, signal.SIGSTOP)  # accepts connections, answers nothing
        wait_for_records(driver, sweep_dir, 2)  # the last trial ended: the driver drains MLflow's queue now
        time.sleep(2.0)
        assert driver.process.poll() is None  # still waiting for the hung server
        code, out, err, seconds = stop_and_wait(driver, signal.SIGINT)
        print(f"SIGINT while the end waits for a hung MLflow server to exit: {seconds:.1f} s")
        assert code == 130, err[-3000:]
        assert "interrupted (SIGINT)" in err and f"sweep {config} --resume" in _one_line(err)
        assert "MLflow did not answer in time" in _one_line(err)
        assert (sweep_dir / "report" / "trials.csv").exists()  # the report files are written all the same
        os.killpg(server.pid, signal.SIGCONT)
        report = subprocess.run([sys.executable, "-m", "orchestrator", "report", str(sweep_dir)],
                                env=driver_env(tmp_path), capture_output=True, text=True, timeout=300)
        assert report.returncode == 0, report.stderr[-3000:]
        assert _parent_status(sweep_dir) != "RUNNING"
    finally:
        os.killpg(server.pid, signal.SIGCONT)
        stop(server)
