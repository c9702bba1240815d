"""Shared test fixtures: a briefly trained student, and a two-node Ray cluster with a joined board."""
from __future__ import annotations

import os
import subprocess

# Tests run on small CPU machines; keep torch and BLAS from oversubscribing the cores.
os.environ.setdefault("OMP_NUM_THREADS", "1")

from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402
from types import SimpleNamespace  # noqa: E402

import pytest  # noqa: E402


@pytest.fixture(scope="session", autouse=True)
def project_cache(tmp_path_factory) -> Path:
    """Tests never read or write the user's ~/.cache/edgesweep (data, teachers, board latency caches):
    a result cached by an earlier run must not decide what this run sees."""
    cache = tmp_path_factory.mktemp("edgesweep-cache")
    saved = os.environ.get("EDGESWEEP_CACHE")
    os.environ["EDGESWEEP_CACHE"] = str(cache)
    yield cache
    if saved is None:
        os.environ.pop("EDGESWEEP_CACHE", None)
    else:
        os.environ["EDGESWEEP_CACHE"] = saved


@pytest.fixture(scope="session")
def trained_student(tmp_path_factory) -> SimpleNamespace:
    """A YOLO-n trained briefly (8 epochs on 400 generated images at 128 px, about half a minute),
    shared by every test that needs a model whose mAP is well above zero: export and quantization
    accuracy, artifact evaluation, the CLI. `.checkpoint` is its last.pt, `.data_dir` its data set."""
    from detection.coco import CocoDataset, SplitSpec
    from detection.synth import SynthConfig, generate
    from trainables.models.yolo import ModelSpec
    from trainables.hyper import TrainConfig
    from trainables.train import fit

    root = tmp_path_factory.mktemp("trained-student")
    data_dir = root / "data"
    generate(data_dir, train=400, val=60, seed=0, config=SynthConfig(size=128))
    train = CocoDataset(SplitSpec(data_dir / "train", data_dir / "instances_train.json"))
    # lr0 0.002: AdamW's default for 10 classes is 0.000714 (Ultralytics' class-count rule), too slow for
    # 8 short epochs to leave zero mAP far behind
    result = fit(ModelSpec("n", train.num_classes), train, None,
                 TrainConfig(epochs=8, img_size=128, torch_threads=2, lr0=0.002), root / "run")
    return SimpleNamespace(checkpoint=Path(result.checkpoint), data_dir=data_dir)


@pytest.fixture(scope="session")
def student_exports(trained_student, tmp_path_factory):
    """The trained student's file in each registered format, exported on first use and scored once
    (`tests.exports.StudentExports`): export tests and the format and runtime conformance classes."""
    from tests.exports import StudentExports

    return StudentExports.of(trained_student, tmp_path_factory.mktemp("student-exports"))


# ---- a real two-node Ray cluster on localhost: a head, and a board node that joined with `board join` ----

BOARD_NAME = "testboard"
NO_TORCH_SITECUSTOMIZE = '''\
import sys

class _NoTorchOnTheBoard:
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ImportError(f"{name}: torch is not installed on the board (test board node)")
        return None

sys.meta_path.insert(0, _NoTorchOnTheBoard())
'''


def _free_ports(count: int) -> list[int]:
    import socket

    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def wait_for(predicate, timeout_s: float, what: str, logs=(), processes=()):
    """`predicate()`'s first truthy value; on timeout (or an exited process) a TimeoutError with the logs' tails."""
    import time

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        if any(p.poll() is not None for p in processes):
            break
        time.sleep(0.25)
    tails = "\n".join(f"--- {p}\n{p.read_text(errors='replace')[-3000:]}" for p in logs if p.exists())
    raise TimeoutError(f"{what}: not within {timeout_s} s or a process exited\n{tails}")


def stop_process_group(process, grace_s: float) -> None:
    """SIGTERM a process we started (ray cleans up its children), then SIGKILL its own session's group."""
    import signal

    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(grace_s)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(process.pid, signal.SIGKILL)  # started with start_new_session=True
    except ProcessLookupError:
        pass
    process.wait(10)


def _reset_ray_token_cache() -> None:
    from ray._raylet import AuthenticationTokenLoader, Config

    Config.initialize("")
    AuthenticationTokenLoader.instance().reset_cache()


@dataclass(frozen=True)
class BoardCluster:
    """The running cluster; this test process is connected to it as a driver."""

    address: str
    env: dict  # the environment of the cluster's processes (token auth included)
    board_name: str
    board_node_id: str
    head_node_id: str
    tmp: Path
    board_process: subprocess.Popen
    logs: tuple[Path, ...]

    def wait_for(self, predicate, timeout_s: float, what: str):
        return wait_for(predicate, timeout_s, what, self.logs)

    def stop_board(self, grace_s: float = 30) -> None:
        """Take the board node out of the cluster, as when the board is switched off."""
        stop_process_group(self.board_process, grace_s)


@pytest.fixture(scope="module")
def board_cluster(tmp_path_factory):
    """A head (`ray start --head --block`, 2 CPUs) and a board node started the way a real board joins,
    `python -m orchestrator board join --block`, in an environment without torch: its PYTHONPATH starts
    with a directory whose `sitecustomize.py` makes `import torch` raise, and the Ray workers of that
    node inherit it. Both use token authentication, unique ports and their own --temp-dir, in their own
    process groups; teardown stops exactly those groups (never `ray stop`, which would hit every Ray
    cluster on the machine). One cluster per test module."""
    import secrets
    import shutil
    import sys
    import tempfile

    import ray

    from device_actors.client import list_board_nodes
    from device_actors.naming import NAMESPACE

    repo = Path(__file__).resolve().parents[1]
    tmp = tmp_path_factory.mktemp("board-cluster")
    # Ray's unix sockets live under --temp-dir and must stay under 107 bytes: pytest's tmp is too deep.
    ray_tmp = Path(tempfile.mkdtemp(prefix="es-ray-"))
    no_torch = tmp / "no_torch"
    no_torch.mkdir()
    (no_torch / "sitecustomize.py").write_text(NO_TORCH_SITECUSTOMIZE)
    gcs, head_agent, head_metrics, board_agent, board_metrics = _free_ports(5)
    address = f"127.0.0.1:{gcs}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=secrets.token_hex(16),
               EDGESWEEP_BOARD_CACHE=str(tmp / "board-cache"),  # this cluster's board starts with an empty cache
               RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S="0")  # no 30 s drain wait on SIGTERM in teardown
    head_log, board_log = tmp / "head.log", tmp / "board.log"
    processes = []
    saved_env = {k: os.environ.get(k) for k in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_ADDRESS")}
    try:
        with head_log.open("w") as log:
            processes.append(subprocess.Popen(
                [sys.executable, "-m", "ray.scripts.scripts", "start", "--head", "--block", f"--port={gcs}",
                 "--node-ip-address=127.0.0.1", "--num-cpus=2", "--include-dashboard=false",
                 f"--dashboard-agent-listen-port={head_agent}", f"--metrics-export-port={head_metrics}",
                 f"--temp-dir={ray_tmp / 'head'}", "--disable-usage-stats"],
                env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True))
        wait_for(lambda: "Ray runtime started" in head_log.read_text(), 90, "head start", [head_log], processes)
        with board_log.open("w") as log:
            processes.append(subprocess.Popen(
                [sys.executable, "-m", "orchestrator", "board", "join", "--address", address, "--name", BOARD_NAME,
                 "--block", "--node-ip-address=127.0.0.1", f"--temp-dir={ray_tmp / 'board'}",
                 f"--ray-arg=--dashboard-agent-listen-port={board_agent}",
                 f"--ray-arg=--metrics-export-port={board_metrics}"],
                env={**env, "PYTHONPATH": str(no_torch)}, cwd=repo, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True))
        os.environ.pop("RAY_ADDRESS", None)
        os.environ.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=env["RAY_AUTH_TOKEN"])
        _reset_ray_token_cache()
        ray.init(address=address, namespace=NAMESPACE, log_to_driver=False, logging_level="WARNING")
        board_nodes = wait_for(lambda: [n for n in list_board_nodes() if n.name == BOARD_NAME and n.alive], 90,
                               "board node join", [head_log, board_log], processes)
        yield BoardCluster(address=address, env=env, board_name=BOARD_NAME, board_node_id=board_nodes[0].node_id,
                           head_node_id=ray.get_runtime_context().get_node_id(), tmp=tmp,
                           board_process=processes[1], logs=(head_log, board_log))
    finally:
        ray.shutdown()
        for process in reversed(processes):
            stop_process_group(process, grace_s=30)
        for key, value in saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        _reset_ray_token_cache()
        shutil.rmtree(ray_tmp, ignore_errors=True)


def _iou_python(a: list[float], b: list[float]) -> float:
    inter_w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    inter_h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = inter_w * inter_h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _greedy_nms_reference(boxes: list[list[float]], scores: list[float], iou_threshold: float) -> list[int]:
    """Textbook greedy NMS in plain python: visit by score, keep what no kept box overlaps."""
    keep: list[int] = []
    for i in sorted(range(len(scores)), key=lambda k: -scores[k]):
        if all(_iou_python(boxes[i], boxes[k]) <= iou_threshold for k in keep):
            keep.append(i)
    return keep


@pytest.fixture
def greedy_nms_reference():
    """The brute-force NMS that both the numpy and the torch NMS are checked against (lists in, indices out)."""
    return _greedy_nms_reference
