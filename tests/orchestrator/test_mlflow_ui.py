"""The MLflow UI as a reviewer sees it: a real sweep's store served by `mlflow ui` on loopback and
rendered by headless Chromium (Debian's `chromium`; `.ci/run` installs it for the slow step), at the
two links `report` prints. Where Chromium is missing the test skips, unless EDGESWEEP_REQUIRE_BROWSER
is set (CI sets it, so a missing browser fails there)."""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from orchestrator.config import parse_config
from orchestrator.stand_in_stages import StandInStages
from orchestrator.sweep import run_sweep
from orchestrator.tracking.names import PARETO_TAG
from orchestrator.tracking.ui import ui_url
from tests.orchestrator.test_sweep_faults import stand_in_config

pytestmark = pytest.mark.slow  # a 4-trial sweep, the MLflow server and a browser: about a minute on CI


def _chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        if os.environ.get("EDGESWEEP_REQUIRE_BROWSER"):
            pytest.fail("chromium is not installed (apt-get install chromium) and EDGESWEEP_REQUIRE_BROWSER is set")
        pytest.skip("chromium is not installed (apt-get install chromium)")
    return found


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """A 4-trial sweep (stand-in training and export, everything else real) and its MLflow UI."""
    root = tmp_path_factory.mktemp("ui")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("EDGESWEEP_CACHE", str(root / "cache"))
        result = run_sweep(parse_config(stand_in_config(root, "ui"), base_dir=root),
                           stages=StandInStages(train_seconds=0.1), show_progress=False)
    import ray

    ray.shutdown()
    port = _free_port()
    server = subprocess.Popen([str(Path(sys.executable).parent / "mlflow"), "ui", "--backend-store-uri",
                               result.tracking_uri, "--host", "127.0.0.1", "--port", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 180
        while True:
            assert server.poll() is None, "mlflow ui exited"
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2)
                break
            except OSError:
                assert time.monotonic() < deadline, "mlflow ui did not answer within 180 s"
                time.sleep(1)
        yield result, port
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(30)


def _rendered(url: str, tmp_path: Path) -> str:
    """The page's DOM after its scripts ran and its API calls returned."""
    done = subprocess.run([_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                           f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=30000", "--dump-dom",
                           url], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def _trial_runs(result) -> dict[str, tuple[str, bool]]:
    """Each trial run's name -> (trial id, on the front)."""
    runs = MlflowClient(result.tracking_uri).search_runs([result.experiment_id], "tags.`edgesweep.trial_id` != ''")
    return {r.info.run_name: (r.data.tags["edgesweep.trial_id"], r.data.tags.get(PARETO_TAG) == "true") for r in runs}


def test_the_printed_link_renders_every_trial_by_the_name_that_says_what_it_is(served, tmp_path):
    result, port = served
    names = _trial_runs(result)
    assert len(names) == 4 and "no KD · onnx-int8 · 64px" in names
    page = _rendered(ui_url(result.experiment_id, port=port), tmp_path)
    assert "Training runs" in page and "Sort: artifact/map50_95" in page
    assert [n for n in names if n not in page] == []


def test_the_front_link_renders_the_front_and_nothing_else(served, tmp_path):
    result, port = served
    names = _trial_runs(result)
    front = {n for n, (_, on_front) in names.items() if on_front}
    assert {names[n][0] for n in front} == {r.trial_id for r in result.front} and 0 < len(front) < 4
    page = _rendered(ui_url(result.experiment_id, port=port, front_only=True), tmp_path)
    assert {n for n in names if n in page} == front
