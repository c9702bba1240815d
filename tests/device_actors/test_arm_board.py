"""The board side on a real ARM userland: an emulated aarch64 node (scripts/arm-board.sh: Debian arm64
under qemu-user, the registry's aarch64 wheels, no torch) joins a local head and a tiny real sweep
times and scores its artifacts there.

Slow: the first build of the root file system takes about 10 minutes (later runs reuse it from
~/.cache/edgesweep/arm-board), and everything on the node runs at emulation speed. Needs root,
apt and the Debian mirror; without them the test is skipped and says which is missing.
"""
from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml

from orchestrator.results import load_records

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "arm-board.sh"
BOARD = "imx8mp-qemu"
# The rootfs is a toolchain, not a result: it is built once per machine, in the user's cache.
ARM_CACHE = Path.home() / ".cache" / "edgesweep"


def _why_not() -> str | None:
    if sys.platform != "linux" or os.uname().machine != "x86_64":
        return "needs an x86_64 Linux host"
    if os.geteuid() != 0:
        return "needs root (chroot, mounts, apt-get)"
    if not shutil.which("apt-get"):
        return "needs apt-get for qemu-user-static and debootstrap"
    return None


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
@pytest.mark.timeout(2400)
@pytest.mark.skipif(_why_not() is not None, reason=str(_why_not()))
def test_a_sweep_times_and_scores_on_an_emulated_arm_board_node(tmp_path):
    token = secrets.token_hex(32)
    token_file = tmp_path / "auth_token"
    token_file.write_text(token)
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=token, RAY_DEFAULT_PYTHON_VERSION_MATCH_LEVEL="minor",
               PYTHONPATH=str(REPO))
    # A fresh board cache (on the chroot's /tmp, gone at stop): a report cached by an earlier run of
    # this test carries that run's node id, and this test is about timing on this node.
    script_env = {**env, "EDGESWEEP_CACHE": str(ARM_CACHE), "EDGESWEEP_BOARD_CACHE": "/tmp/edgesweep-board"}
    started = time.monotonic()
    build = subprocess.run(["bash", str(SCRIPT), "build"], env=script_env, capture_output=True, text=True,
                           timeout=1800)
    assert build.returncode == 0, build.stdout[-2000:] + build.stderr[-3000:]
    print(f"arm-board build (or reuse): {time.monotonic() - started:.0f} s")

    port = _free_port()
    head_log = tmp_path / "head.log"
    ray_tmp = Path(tempfile.mkdtemp(prefix="es-ray-"))  # Ray's unix sockets need a short path
    with head_log.open("w") as log:
        head = subprocess.Popen([sys.executable, "-m", "ray.scripts.scripts", "start", "--head", "--block",
                                 f"--port={port}", "--num-cpus=2", "--include-dashboard=false",
                                 f"--temp-dir={ray_tmp}", "--disable-usage-stats"],
                                env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while "Ray runtime started" not in head_log.read_text():
            assert head.poll() is None and time.monotonic() < deadline, head_log.read_text()[-3000:]
            time.sleep(0.5)
        address = f"127.0.0.1:{port}"
        joined = subprocess.run(["bash", str(SCRIPT), "start", "--address", address, "--name", BOARD,
                                 "--token-file", str(token_file)], env=script_env, capture_output=True, text=True,
                                timeout=600)
        assert joined.returncode == 0, joined.stdout[-2000:] + joined.stderr[-3000:]

        config = tmp_path / "arm.yaml"
        config.write_text(yaml.safe_dump({
            "name": "arm", "output_dir": str(tmp_path / "runs"),
            "data": {"source": "default", "synth": {"train": 400, "val": 16, "size": 128, "seed": 0},
                     "calibration_images": 16},
            "training": {"batch_size": 16, "nominal_batch": 16, "warmup_epochs": 0},
            "search": {"quantization": {"grid": ["fp32", "int8"]}},
            "fixed": {"epochs": 8, "img_size": 128, "runtime": "onnxruntime", "board_threads": 1},
            "searcher": {"algorithm": "grid", "concurrency": 2},
            "resources": {"train": {"cpu": 1}, "export": {"cpu": 1}},
            "board": {"name": BOARD, "emulate_if_missing": False, "score_on_board": True, "timeout_s": 1200,
                      "timing": {"warmup_runs": 2, "min_runs": 5, "min_seconds": 0.1}}}))
        sweep = subprocess.run([sys.executable, "-m", "orchestrator", "sweep", str(config), "--address", address],
                               env={**env, "EDGESWEEP_CACHE": str(tmp_path / "cache")}, cwd=tmp_path,
                               capture_output=True, text=True, timeout=1500)
        assert sweep.returncode == 0, sweep.stdout[-3000:] + sweep.stderr[-3000:]

        import ray

        from device_actors.client import get_board, list_board_nodes

        os.environ.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=token, RAY_DEFAULT_PYTHON_VERSION_MATCH_LEVEL="minor")
        from orchestrator._ray_internals import reload_auth_config

        reload_auth_config()
        ray.init(address=address, namespace="edgesweep", logging_level="WARNING", log_to_driver=False)
        try:
            arm_node = next(n.node_id for n in list_board_nodes() if n.name == BOARD and n.alive)
            facts = get_board(BOARD).status().facts
        finally:
            ray.shutdown()
        assert facts["machine"] == "aarch64" and facts["emulation"] == "qemu-aarch64 (cortex-a53)"

        records = {r.metrics["format"]: r for r in load_records(tmp_path / "runs" / "arm")}
        assert set(records) == {"onnx", "onnx-int8"} and all(r.complete for r in records.values())
        for r in records.values():
            assert r.metrics["board_node"] == arm_node and r.metrics["board_emulated"] is True
            assert r.metrics["board_emulation"] == "qemu-aarch64 (cortex-a53)"
        fp32, int8 = records["onnx"].metrics, records["onnx-int8"].metrics
        assert fp32["map50_95"] > 0.01, "the student must detect something for the comparison to mean anything"
        assert abs(fp32["board_map50_95"] - fp32["map50_95"]) <= 0.001  # float32 kernels agree across ISAs
        print(f"mAP@.5:.95 x86 export node vs ARM (emulated kernels): fp32 {fp32['map50_95']:.4f} vs "
              f"{fp32['board_map50_95']:.4f}; int8 {int8['map50_95']:.4f} vs {int8['board_map50_95']:.4f} "
              f"({100 * (int8['board_map50_95'] - int8['map50_95']):+.2f} points)")
        assert "EMULATED" in sweep.stdout  # the report says the latencies are emulated
    finally:
        subprocess.run(["bash", str(SCRIPT), "stop"], env=script_env, capture_output=True, timeout=120)
        if head.poll() is None:
            os.killpg(head.pid, signal.SIGTERM)
            try:
                head.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(head.pid, signal.SIGKILL)
        shutil.rmtree(ray_tmp, ignore_errors=True)
