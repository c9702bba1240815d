"""Cluster-grade stores: the searcher's study on a real PostgreSQL server (`searcher.storage`) and MLflow on
a real `mlflow server`, through a sweep that is interrupted (Ctrl-C) and resumed.

The driver is the real CLI in its own process with the test-only stand-in stages (training and export
sleep and return a toy ONNX detector); Ray, Tune, OptunaSearch, both servers and the board actor are real.
The database credentials reach the driver only as PGUSER and PGPASSWORD, and must appear in no file the
sweep writes.
"""
from __future__ import annotations

import signal
import subprocess
import sys
import time

import optuna
import pytest
import yaml
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

from orchestrator.config import ConfigError, parse_config
from orchestrator.results import load_records
from orchestrator.study_storage import STUDY_DB, StudyStorageError, open_storage
from orchestrator.sweep_state import read_state
from tests.servers import free_port, mlflow_server, postgres_server, stop
from tests.sweep_driver import driver_env, start_driver, stop_and_wait, wait_for_records, wait_for_started_trials

NAME = "on-servers"


@pytest.fixture
def servers(tmp_path, monkeypatch):
    """(PostgreSQL, MLflow tracking URI), both up for the test."""
    store = tmp_path / "mlflow-server"
    store.mkdir()
    with postgres_server() as postgres:
        port = free_port()
        server = mlflow_server(store, port)
        try:
            for key, value in postgres.env.items():
                monkeypatch.setenv(key, value)  # this process reads the study too
            yield postgres, f"http://127.0.0.1:{port}"
        finally:
            stop(server)


def _sweep_file(tmp_path, storage: str, tracking_uri: str):
    raw = {
        "name": NAME, "output_dir": str(tmp_path / "runs"),
        "data": {"source": "default", "synth": {"train": 8, "val": 4, "size": 64, "seed": 0},
                 "calibration_images": 4},
        "search": {"seed": {"choice": [0, 1, 2, 3]}},  # four students: every trial trains
        "fixed": {"epochs": 2, "img_size": 64, "runtime": "onnxruntime", "quantization": "fp32", "board_threads": 1},
        "searcher": {"algorithm": "tpe", "trials": 4, "concurrency": 1, "max_failures": 0, "storage": storage},
        "resources": {"train": {"cpu": 0.5}, "export": {"cpu": 0.5}},
        "board": {"name": "local", "timing": {"warmup_runs": 2, "min_runs": 5, "min_seconds": 0.05}},
        "mlflow": {"tracking_uri": tracking_uri},
    }
    path = tmp_path / f"{NAME}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.mark.parametrize("storage, algorithm, expected", [
    ("postgresql://edgesweep:hunter2@db:5432/studies", "tpe", "searcher.storage: must not hold a user or password"),
    ("postgresql://edgesweep@db:5432/studies", "tpe", "searcher.storage: must not hold a user or password"),
    ("sqlite:////shared/nfs/optuna.db", "tpe", "got the scheme 'sqlite'"),
    ("postgresql://db:5432", "tpe", "must name a host and a database"),
    ("postgresql://db:5432/studies", "random", "only an Optuna sampler keeps a study"),
])
def test_a_study_storage_is_a_postgresql_url_without_credentials(tmp_path, storage, algorithm, expected):
    raw = yaml.safe_load(_sweep_file(tmp_path, storage, "http://127.0.0.1:5000").read_text())
    raw["searcher"]["algorithm"] = algorithm
    with pytest.raises(ConfigError) as refused:
        parse_config(raw, base_dir=tmp_path)
    assert expected in str(refused.value) and "hunter2" not in str(refused.value)


def test_a_study_server_that_does_not_answer_is_named(tmp_path):
    with pytest.raises(StudyStorageError, match=r"searcher.storage: cannot open the study's database \(Operational"):
        open_storage(f"postgresql://127.0.0.1:{free_port()}/studies")


def _study_states(url: str) -> list[str]:
    study = optuna.load_study(study_name=NAME, storage=open_storage(url))
    return [t.state.name for t in study.trials if "edgesweep_repeats" not in t.user_attrs]  # proposals run


@pytest.mark.slow  # two servers and a 4-trial sweep stopped and resumed: about 2-3 minutes
def test_a_sweep_on_postgresql_and_an_mlflow_server_survives_ctrl_c_and_resumes(tmp_path, servers):
    postgres, tracking_uri = servers
    config = _sweep_file(tmp_path, postgres.url, tracking_uri)
    sweep_dir = tmp_path / "runs" / NAME
    env = driver_env(tmp_path, **postgres.env)
    driver = start_driver(tmp_path, config, env=env)
    wait_for_records(driver, sweep_dir, 1)
    wait_for_started_trials(driver, sweep_dir, 2)
    time.sleep(1.0)  # into the second trial's training (3 s)
    code, _, err, _ = stop_and_wait(driver, signal.SIGINT)
    assert code == 130, err[-3000:]
    states = _study_states(postgres.url)
    assert states.count("COMPLETE") == 1 and states.count("RUNNING") == 1, states
    assert not (sweep_dir / STUDY_DB).exists()  # the study is on the server, not in the sweep directory

    # a second sweep of the same name would mix its trials into this study: refused before anything starts
    other = tmp_path / "other"
    other.mkdir()
    clash = _sweep_file(other, postgres.url, tracking_uri)
    refused = subprocess.run([sys.executable, "-m", "orchestrator", "sweep", str(clash)], env=env, cwd=other,
                             capture_output=True, text=True, timeout=300)
    assert refused.returncode == 2, refused.stderr[-2000:]
    assert f"searcher.storage already holds a study named '{NAME}'" in refused.stderr
    assert not (other / "runs" / NAME).exists()

    code, out, err = start_driver(tmp_path, config, "--resume", env=env).wait(400)
    assert code == 0, err[-3000:]
    assert f"Pareto front of {NAME}" in out and postgres.url in out  # the dashboard command names the server
    records = load_records(sweep_dir)
    assert len(records) == 4 and all(r.complete for r in records)
    states = _study_states(postgres.url)
    assert states.count("COMPLETE") == 4 and len(states) == 4, states  # every trial told, in PostgreSQL

    state = read_state(sweep_dir)
    assert state["tracking_uri"] == tracking_uri
    client = MlflowClient(tracking_uri=tracking_uri)  # the runs are on the server
    assert client.get_run(state["parent_run_id"]).info.status == "FINISHED"
    children = client.search_runs([state["experiment_id"]], f"tags.`{MLFLOW_PARENT_RUN_ID}` = '{state['parent_run_id']}'")
    assert sorted(c.info.status for c in children) == ["FINISHED"] * 4
    assert not (sweep_dir / "mlflow.db").exists()

    secret = postgres.password.encode()
    leaked = [p for p in sweep_dir.rglob("*") if p.is_file() and secret in p.read_bytes()]
    assert not leaked and postgres.password not in out + err
