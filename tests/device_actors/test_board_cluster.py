"""The board on a real two-node Ray cluster on localhost.

The head is `ray start --head --block`; the board node is started the way a real board joins,
with `python -m orchestrator board join --block`, from an environment without torch: its
PYTHONPATH starts with a directory whose `sitecustomize.py` makes `import torch` raise, and
the Ray workers of that node inherit it. Both run with token authentication, unique ports and
their own --temp-dir, in their own process groups, and teardown stops exactly those groups
(never `ray stop`, which would hit every Ray cluster on the machine).
"""
from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import ray

from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from device_actors.client import BoardUnavailable, connect_board, get_board, list_board_nodes
from device_actors.join import local_versions, read_head_versions
from device_actors.naming import LABEL_KEY, NAMESPACE
from device_actors.overview import board_overviews
from device_actors.timing import TimingProtocol
from device_actors.toy_model import toy_detector_onnx

REPO = Path(__file__).resolve().parents[2]
BOARD = "testboard"
# Long enough that four callers really queue behind each other, short enough for CI.
QUEUED = TimingProtocol(warmup_runs=3, min_runs=20, min_seconds=0.8)
SHORT = TimingProtocol(warmup_runs=3, min_runs=20, min_seconds=0.2)

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
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _wait_for(predicate, timeout_s: float, what: str, logs: list[Path] = (),
              processes: list[subprocess.Popen] = ()):
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


def _stop(process: subprocess.Popen, grace_s: float) -> None:
    """SIGTERM the process we started (ray cleans up its children), then SIGKILL its group."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(grace_s)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(process.pid, signal.SIGKILL)  # our own session: start_new_session=True
    except ProcessLookupError:
        pass
    process.wait(10)


def _reset_ray_token_cache() -> None:
    from ray._raylet import AuthenticationTokenLoader, Config

    Config.initialize("")
    AuthenticationTokenLoader.instance().reset_cache()


@dataclass(frozen=True)
class ClusterInfo:
    address: str
    env: dict
    board_node_id: str
    head_node_id: str
    tmp: Path
    board_process: subprocess.Popen


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
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
        _wait_for(lambda: "Ray runtime started" in head_log.read_text(), 90, "head start", [head_log], processes)
        with board_log.open("w") as log:
            processes.append(subprocess.Popen(
                [sys.executable, "-m", "orchestrator", "board", "join", "--address", address, "--name", BOARD,
                 "--block", "--node-ip-address=127.0.0.1", f"--temp-dir={ray_tmp / 'board'}",
                 f"--ray-arg=--dashboard-agent-listen-port={board_agent}",
                 f"--ray-arg=--metrics-export-port={board_metrics}"],
                env={**env, "PYTHONPATH": str(no_torch)}, cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True))
        os.environ.pop("RAY_ADDRESS", None)
        os.environ.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=env["RAY_AUTH_TOKEN"])
        _reset_ray_token_cache()
        ray.init(address=address, namespace=NAMESPACE, log_to_driver=False, logging_level="WARNING")
        board_nodes = _wait_for(lambda: [n for n in list_board_nodes() if n.name == BOARD and n.alive], 90,
                                "board node join", [head_log, board_log], processes)
        yield ClusterInfo(address=address, env=env, board_node_id=board_nodes[0].node_id,
                          head_node_id=ray.get_runtime_context().get_node_id(), tmp=tmp,
                          board_process=processes[1])
    finally:
        ray.shutdown()
        for process in reversed(processes):
            _stop(process, grace_s=30)
        for key, value in saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        _reset_ray_token_cache()
        shutil.rmtree(ray_tmp, ignore_errors=True)


@pytest.fixture(scope="module")
def board(cluster):
    return connect_board(BOARD, cache_dir=str(cluster.tmp / "board-cache"))


def _model(seed: int, size: int = 96) -> bytes:
    return toy_detector_onnx(size, width=8, depth=1, seed=seed)


def test_join_checked_versions_against_the_head_and_offers_no_cpu(cluster):
    assert read_head_versions(cluster.address, cluster.env) == local_versions()
    node = next(n for n in ray.nodes() if n["NodeID"] == cluster.board_node_id)
    assert node["Resources"].get(f"board_{BOARD}") == 1 and "CPU" not in node["Resources"]
    assert node["Labels"][LABEL_KEY] == BOARD
    assert "versions match the head" in (cluster.tmp / "board.log").read_text()


def test_measurement_runs_on_the_board_node_whose_workers_cannot_import_torch(cluster, board):
    report = board.measure(_model(seed=1), protocol=SHORT)
    assert not board.emulated and not report.emulated
    assert report.node_id == cluster.board_node_id != cluster.head_node_id

    @ray.remote(num_cpus=0)
    def try_torch() -> str:
        try:
            import torch  # noqa: F401
        except ImportError as e:
            return str(e)
        return "torch imported"

    pinned = NodeAffinitySchedulingStrategy(cluster.board_node_id, soft=False)
    assert "not installed on the board" in ray.get(try_torch.options(scheduling_strategy=pinned).remote(), timeout=60)


def test_four_concurrent_callers_never_overlap_and_the_queue_is_visible(cluster, board):
    @ray.remote(num_cpus=0.5)  # on the head: the board offers no CPU
    def trial(seed: int):
        return get_board(BOARD).measure(toy_detector_onnx(96, width=8, depth=1, seed=seed), protocol=QUEUED)

    refs = [trial.remote(seed) for seed in range(10, 14)]
    most_waiting = 0
    while ray.wait(refs, num_returns=len(refs), timeout=0.2)[1]:
        queue = board.status().queue
        most_waiting = max(most_waiting, len(queue.waiting) + (queue.running is not None))
    reports = sorted(ray.get(refs), key=lambda r: r.started_at)
    assert {r.node_id for r in reports} == {cluster.board_node_id}
    assert not any(r.cached for r in reports)
    for earlier, later in zip(reports, reports[1:]):
        assert earlier.ended_at <= later.started_at, "two measurements overlapped on the board"
    assert most_waiting >= 2, "status never showed a queue"


def test_repeated_artifact_is_answered_from_the_board_cache(board):
    model = _model(seed=2)
    first = board.measure(model, protocol=SHORT)
    again = board.measure(model, protocol=SHORT)
    assert not first.cached and again.cached
    assert (again.median_ms, again.started_at) == (first.median_ms, first.started_at)
    status = board.status()
    assert status.cache_hits >= 1 and status.recent[-1].cached


def test_killed_actor_is_restarted_and_its_pending_measurement_completes(cluster, board):
    pid_before = board.status().pid
    slow = TimingProtocol(warmup_runs=3, min_runs=20, min_seconds=2.0, max_runs=1_000_000)
    request, data = board.request_for(_model(seed=3), protocol=slow)
    ref = board.submit(request, data)
    _wait_for(lambda: board.status().queue.running is not None, 60, "measurement start")
    killed_at = time.time()
    ray.kill(board.actor, no_restart=False)
    report = board.result(ref, timeout_s=120)
    assert report.started_at > killed_at, "the result must come from the retry on the restarted actor"
    assert report.node_id == cluster.board_node_id and not report.cached and report.runs >= 20
    assert board.status().pid != pid_before


def test_missing_board_falls_back_to_an_emulated_board_on_the_driver_node(cluster, quick_protocol):
    with pytest.raises(BoardUnavailable, match="board join --address HEAD:PORT --name absent"):
        connect_board("absent", emulate_if_missing=False)
    emulated = connect_board("absent", cache_dir=str(cluster.tmp / "emulated-cache"))
    report = emulated.measure(_model(seed=4), protocol=quick_protocol)
    assert emulated.emulated and report.emulated and report.node_id == cluster.head_node_id
    assert get_board("absent").emulated


def _cli(cluster, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "orchestrator", "board", *args, "--address", cluster.address],
                          env=cluster.env, cwd=REPO, capture_output=True, text=True, timeout=120)


def test_status_and_bench_commands_against_the_cluster(cluster, board, tmp_path):
    model = tmp_path / "toy.onnx"
    model.write_bytes(_model(seed=5))
    bench = _cli(cluster, "bench", str(model), "--board", BOARD, "--min-runs", "20", "--min-seconds", "0.2",
                 "--warmup", "3", "--json")
    assert bench.returncode == 0, bench.stderr
    report = json.loads(bench.stdout)
    assert report["node_id"] == cluster.board_node_id and report["board"] == BOARD and not report["emulated"]

    status = _cli(cluster, "status", "--json")
    assert status.returncode == 0, status.stderr
    boards = json.loads(status.stdout)
    assert [b["name"] for b in boards] == [BOARD] and boards[0]["alive"]
    assert report["artifact_sha256"] in [r["artifact_sha256"] for r in boards[0]["status"]["recent"]]

    table = _cli(cluster, "status")
    assert table.returncode == 0, table.stderr
    assert BOARD in table.stdout and "last results" in table.stdout and report["artifact_sha256"][:12] in table.stdout


# Keep this test last: it stops the board node that the tests above use.
def test_board_that_left_is_still_listed_as_dead(cluster, board):
    _stop(cluster.board_process, grace_s=30)
    _wait_for(lambda: [n for n in list_board_nodes() if n.name == BOARD and not n.alive], 60, "board node death")
    (overview,) = board_overviews(timeout_s=5)
    assert (overview.name, overview.alive, overview.status) == (BOARD, False, None)
    assert "restart `board join`" in overview.note
    with pytest.raises(BoardUnavailable, match="left the cluster"):
        connect_board(BOARD, emulate_if_missing=False)
