"""A tracking server that goes away mid-sweep loses no result: the sweep goes on from its journal,
and `report` writes MLflow what it missed once the server is back."""
from __future__ import annotations

import subprocess
import sys

import pytest
import yaml
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

from orchestrator.results import load_records
from orchestrator.sweep_state import read_state
from tests.servers import free_port, mlflow_server, stop
from tests.sweep_driver import driver_env, start_driver, wait_for_records


@pytest.mark.slow  # two starts of a real MLflow server and a 4-trial sweep: about 2 minutes
def test_a_sweep_outlives_its_tracking_server_and_report_backfills_mlflow(tmp_path):
    store, port = tmp_path / "store", free_port()
    store.mkdir()
    config = tmp_path / "outage.yaml"
    config.write_text(yaml.safe_dump({
        "name": "outage", "output_dir": str(tmp_path / "runs"),
        "data": {"source": "default", "synth": {"train": 8, "val": 4, "size": 64, "seed": 0},
                 "calibration_images": 4},
        "search": {"quantization": {"grid": ["fp32", "int8"]}, "board_threads": {"grid": [1, 2]}},
        "fixed": {"epochs": 2, "img_size": 64, "runtime": "onnxruntime"},
        "searcher": {"algorithm": "grid", "concurrency": 1, "max_failures": 0},
        "resources": {"train": {"cpu": 0.5}, "export": {"cpu": 0.5}},
        "board": {"name": "local", "timing": {"warmup_runs": 2, "min_runs": 5, "min_seconds": 0.05}},
        "mlflow": {"tracking_uri": f"http://127.0.0.1:{port}"}}))
    sweep_dir = tmp_path / "runs" / "outage"
    env = driver_env(tmp_path, MLFLOW_HTTP_REQUEST_MAX_RETRIES="0", MLFLOW_HTTP_REQUEST_TIMEOUT="5")
    server = mlflow_server(store, port)
    try:
        driver = start_driver(tmp_path, config, env=env, train_seconds=2.0)
        wait_for_records(driver, sweep_dir, 1)
    finally:
        stop(server)  # the tracking server goes away mid-sweep
    code, out, err = driver.wait(400)
    assert code == 0, err[-3000:]  # every trial finished: MLflow is a mirror, not the record
    assert "MLflow write (" in err and "written to MLflow by the next --resume or report" in err
    records = load_records(sweep_dir)
    assert len(records) == 4 and all(r.complete for r in records)

    server = mlflow_server(store, port)
    try:
        state = read_state(sweep_dir)
        client = MlflowClient(tracking_uri=state["tracking_uri"])
        query = f"tags.`{MLFLOW_PARENT_RUN_ID}` = '{state['parent_run_id']}' and attributes.status = 'FINISHED'"
        assert len(client.search_runs([state["experiment_id"]], query)) < 4  # what the outage cost
        report = subprocess.run([sys.executable, "-m", "orchestrator", "report", str(sweep_dir)], env=env,
                                capture_output=True, text=True, timeout=180)
        assert report.returncode == 0, report.stderr[-3000:]
        finished = client.search_runs([state["experiment_id"]], query)
        assert sorted(r.data.tags["edgesweep.trial_id"] for r in finished) == sorted(r.trial_id for r in records)
        assert all(r.data.metrics["board/latency_ms"] > 0 for r in finished)
        assert client.get_run(state["parent_run_id"]).info.status == "FINISHED"
    finally:
        stop(server)
