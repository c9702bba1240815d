"""The board on a real two-node Ray cluster on localhost.

The cluster is the `board_cluster` fixture of tests/conftest.py: a head started with `ray start
--head --block` and a board node started the way a real board joins, with `python -m orchestrator
board join --block`, from an environment whose Python cannot import torch, both with token auth.
"""
from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import ray

from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from device_actors.client import BoardUnavailable, connect_board, get_board, list_board_nodes
from device_actors.join import local_versions, read_head_versions
from device_actors.naming import LABEL_KEY
from device_actors.overview import board_overviews
from device_actors.timing import TimingProtocol
from device_actors.toy_model import toy_detector_onnx

REPO = Path(__file__).resolve().parents[2]
# Long enough that four callers really queue behind each other, short enough for CI. The toy
# detectors of these tests share one graph: they are timed each (reuse_graphs off) unless a test
# is about that reuse.
QUEUED = TimingProtocol(warmup_runs=3, min_runs=20, min_seconds=0.8, reuse_graphs=False)
SHORT = TimingProtocol(warmup_runs=3, min_runs=20, min_seconds=0.2, reuse_graphs=False)


@pytest.fixture(scope="module")
def board(board_cluster):
    return connect_board(board_cluster.board_name, cache_dir=str(board_cluster.tmp / "board-cache"))


def _model(seed: int, size: int = 96) -> bytes:
    return toy_detector_onnx(size, width=8, depth=1, seed=seed)


def test_join_checked_versions_against_the_head_and_offers_no_cpu(board_cluster):
    assert read_head_versions(board_cluster.address, board_cluster.env) == local_versions()
    node = next(n for n in ray.nodes() if n["NodeID"] == board_cluster.board_node_id)
    assert node["Resources"].get(f"board_{board_cluster.board_name}") == 1 and "CPU" not in node["Resources"]
    assert "memory" not in node["Resources"]  # trial processes, which reserve memory, never land here
    assert node["Labels"][LABEL_KEY] == board_cluster.board_name
    assert "versions match the head" in (board_cluster.tmp / "board.log").read_text()


def test_measurement_runs_on_the_board_node_whose_workers_cannot_import_torch(board_cluster, board):
    report = board.measure(_model(seed=1), protocol=SHORT)
    assert not board.emulated and not report.emulated
    assert report.node_id == board_cluster.board_node_id != board_cluster.head_node_id

    @ray.remote(num_cpus=0)
    def try_torch() -> str:
        try:
            import torch  # noqa: F401
        except ImportError as e:
            return str(e)
        return "torch imported"

    pinned = NodeAffinitySchedulingStrategy(board_cluster.board_node_id, soft=False)
    assert "not installed on the board" in ray.get(try_torch.options(scheduling_strategy=pinned).remote(), timeout=60)


def test_four_concurrent_callers_never_overlap_and_the_queue_is_visible(board_cluster, board):
    name = board_cluster.board_name

    @ray.remote(num_cpus=0.5)  # on the head: the board offers no CPU
    def trial(seed: int):
        return get_board(name).measure(toy_detector_onnx(96, width=8, depth=1, seed=seed), protocol=QUEUED)

    refs = [trial.remote(seed) for seed in range(10, 14)]
    most_waiting = 0
    while ray.wait(refs, num_returns=len(refs), timeout=0.2)[1]:
        queue = board.status().queue
        most_waiting = max(most_waiting, len(queue.waiting) + (queue.running is not None))
    reports = sorted(ray.get(refs), key=lambda r: r.started_at)
    assert {r.node_id for r in reports} == {board_cluster.board_node_id}
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


def test_an_artifact_whose_graph_the_board_timed_gets_that_measurement_there(board_cluster, board):
    reused = TimingProtocol(warmup_runs=3, min_runs=20, min_seconds=0.3)
    first = board.measure(_model(seed=6), protocol=reused)
    second = board.measure(_model(seed=7), protocol=reused)
    assert first.reused_from is None and first.node_id == board_cluster.board_node_id
    assert second.reused_from == first.artifact_sha256 != second.artifact_sha256 and second.cached


def test_killed_actor_is_restarted_and_its_pending_measurement_completes(board_cluster, board):
    pid_before = board.status().pid
    slow = TimingProtocol(warmup_runs=3, min_runs=20, min_seconds=2.0, max_runs=1_000_000, reuse_graphs=False)
    request, data = board.request_for(_model(seed=3), protocol=slow)
    ref = board.submit(request, data)
    board_cluster.wait_for(lambda: board.status().queue.running is not None, 60, "measurement start")
    killed_at = time.time()
    ray.kill(board.actor, no_restart=False)
    report = board.result(ref, timeout_s=120)
    assert report.started_at > killed_at, "the result must come from the retry on the restarted actor"
    assert report.node_id == board_cluster.board_node_id and not report.cached and report.runs >= 20
    assert board.status().pid != pid_before


def test_missing_board_falls_back_to_an_emulated_board_on_the_driver_node(board_cluster, quick_protocol):
    with pytest.raises(BoardUnavailable, match="board join --address HEAD:PORT --name absent"):
        connect_board("absent", emulate_if_missing=False)
    emulated = connect_board("absent", cache_dir=str(board_cluster.tmp / "emulated-cache"))
    report = emulated.measure(_model(seed=4), protocol=quick_protocol)
    assert emulated.emulated and report.emulated and report.node_id == board_cluster.head_node_id
    assert get_board("absent").emulated


def _cli(board_cluster, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "orchestrator", "board", *args, "--address", board_cluster.address],
                          env=board_cluster.env, cwd=REPO, capture_output=True, text=True, timeout=120)


def test_status_and_bench_commands_against_the_cluster(board_cluster, board, tmp_path):
    name = board_cluster.board_name
    model = tmp_path / "toy.onnx"
    model.write_bytes(_model(seed=5))
    bench = _cli(board_cluster, "bench", str(model), "--board", name, "--min-runs", "20", "--min-seconds", "0.2",
                 "--warmup", "3", "--json")
    assert bench.returncode == 0, bench.stderr
    report = json.loads(bench.stdout)
    assert report["node_id"] == board_cluster.board_node_id and report["board"] == name and not report["emulated"]

    status = _cli(board_cluster, "status", "--json")
    assert status.returncode == 0, status.stderr
    boards = json.loads(status.stdout)
    assert [b["name"] for b in boards] == [name] and boards[0]["alive"]
    assert report["artifact_sha256"] in [r["artifact_sha256"] for r in boards[0]["status"]["recent"]]

    table = _cli(board_cluster, "status")
    assert table.returncode == 0, table.stderr
    assert name in table.stdout and "last results" in table.stdout and report["artifact_sha256"][:12] in table.stdout


def test_detect_on_the_board_draws_what_the_same_file_finds_here(board_cluster, board, trained_student, tmp_path):
    """`detect --board`: the frames run through the board node's runtime (same CPU kind here, so the
    annotated images must equal those of a local run byte for byte)."""
    from trainables.export import export_formats

    source = tmp_path / "images"
    source.mkdir()
    for f in sorted((Path(trained_student.data_dir) / "val").iterdir())[:3]:
        (source / f.name).write_bytes(f.read_bytes())
    (artifact,) = export_formats(trained_student.checkpoint, ["onnx"], tmp_path, img_size=128)
    common = [sys.executable, "-m", "orchestrator", "detect", "--model", str(artifact.path), "--source", str(source)]
    remote = subprocess.run([*common, "--save", str(tmp_path / "board"), "--board", board_cluster.board_name,
                             "--address", board_cluster.address], env=board_cluster.env, cwd=REPO,
                            capture_output=True, text=True, timeout=180)
    assert remote.returncode == 0, remote.stderr
    assert f"on board {board_cluster.board_name} (onnxruntime)" in remote.stdout and "EMULATED" not in remote.stdout
    from orchestrator.cli import main

    assert main(common[3:] + ["--save", str(tmp_path / "here")]) == 0  # the same command, run here
    for f in sorted(source.iterdir()):
        assert (tmp_path / "board" / f.name).read_bytes() == (tmp_path / "here" / f.name).read_bytes()
    absent = subprocess.run([*common, "--board", "absent", "--address", board_cluster.address], env=board_cluster.env,
                            cwd=REPO, capture_output=True, text=True, timeout=180)
    assert absent.returncode == 2 and "board join --address HEAD:PORT --name absent" in absent.stderr


# Keep this test last: it stops the board node that the tests above use.
def test_an_artifact_scored_on_the_board_equals_the_same_file_scored_here(board_cluster, board, trained_student,
                                                                          tmp_path):
    """Same CPU kind on both nodes here, so the board's mAP must equal the local one exactly; the
    val split travels once as bytes and is unpacked into the board's cache."""
    from detection.coco import CocoDataset, SplitSpec
    from detection.packed import PackedSplit
    from device_actors.accuracy import evaluate_artifact
    from trainables.export import export_formats

    data = Path(trained_student.data_dir)
    val = CocoDataset(SplitSpec(data / "val", data / "instances_val.json", subset=12, seed=3))
    (artifact,) = export_formats(trained_student.checkpoint, ["onnx"], tmp_path, img_size=128)
    split = ray.put(PackedSplit.of(val))
    on_board = board.score(artifact.path, split)
    here = evaluate_artifact(artifact.read_bytes(), "onnxruntime", val).metrics
    assert on_board["images"] == 12 and on_board["map50_95"] > 0.01
    assert on_board["map50_95"] == here.map50_95 and on_board["map50"] == here.map50
    assert board.score(artifact.path, split) == on_board  # cached on the board
    assert list((board_cluster.tmp / "board-cache").glob("val-*/images"))  # unpacked in the board's cache


def test_board_that_left_is_still_listed_as_dead(board_cluster, board):
    name = board_cluster.board_name
    board_cluster.stop_board()
    board_cluster.wait_for(lambda: [n for n in list_board_nodes() if n.name == name and not n.alive], 60,
                           "board node death")
    (overview,) = board_overviews(timeout_s=5)
    assert (overview.name, overview.alive, overview.status) == (name, False, None)
    assert "restart `board join`" in overview.note
    with pytest.raises(BoardUnavailable, match="left the cluster"):
        connect_board(name, emulate_if_missing=False)
