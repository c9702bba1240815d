"""The board node leaves the cluster in the middle of a sweep.

A real two-node cluster (tests/conftest.py `board_cluster`: a head, and a torch-free board node that
joined with `board join`) runs a sweep whose training and export are the test-only stand-ins of
`orchestrator.stand_in_stages`; the board stage is real, and slow enough (about a second per artifact, no
cache hits) that trials queue for it. Once the first trial is complete the board node is stopped, as when the
board is switched off. What a user must see: the live view shows the remaining trials waiting in
the "board" stage, each fails after `board.timeout_s` with a message that names the board and says
it left the cluster, and the trials completed before stay complete in trials.jsonl, MLflow and the
Pareto report.
"""
from __future__ import annotations

import csv
import io
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID
from rich.console import Console

import orchestrator.sweep
from orchestrator.config import parse_config
from orchestrator.live import LiveProgress
from orchestrator.results import load_records
from orchestrator.sweep import run_sweep
from orchestrator.stand_in_stages import StandInStages

BOARD_TIMEOUT_S = 12.0
TRIALS = 4


@dataclass
class Seen:
    """What the live view showed, captured inside its own callbacks (Tune's driver thread)."""

    board_stage: dict[str, tuple[float, str]] = field(default_factory=dict)  # trial -> (when, its table line)
    failed_at: dict[str, float] = field(default_factory=dict)


class RecordingLiveProgress(LiveProgress):
    """The sweep's own live view, unchanged, plus a record of the lines it drew."""

    seen = Seen()

    def on_trial_result(self, iteration, trials, trial, result, **info):
        super().on_trial_result(iteration, trials, trial, result, **info)
        if result.get("stage") == "board" and trial.trial_id not in self.seen.board_stage:
            self.seen.board_stage[trial.trial_id] = (time.monotonic(), self._line_of(trial.trial_id))

    def on_trial_error(self, iteration, trials, trial, **info):
        super().on_trial_error(iteration, trials, trial, **info)
        self.seen.failed_at[trial.trial_id] = time.monotonic()

    def _line_of(self, trial_id: str) -> str:
        screen = Console(width=200, file=io.StringIO())
        screen.print(self._render())
        return next(line for line in screen.file.getvalue().splitlines() if trial_id in line)


@dataclass(frozen=True)
class BoardGone:
    cfg: object
    result: object
    seen: Seen
    stopped_at: float  # monotonic


def _stop_board_after_first_complete(sweep_dir: Path, board_cluster, stopped: list[float]) -> None:
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if any(r.complete for r in load_records(sweep_dir)):
            board_cluster.stop_board()
            stopped.append(time.monotonic())
            return
        time.sleep(0.1)


@pytest.fixture(scope="module")
def board_gone(board_cluster, tmp_path_factory) -> BoardGone:
    root = tmp_path_factory.mktemp("board-gone")
    raw = {
        "name": "board-gone", "output_dir": str(root / "runs"),
        "data": {"source": "default", "synth": {"train": 8, "val": 4, "size": 64, "seed": 0},
                 "calibration_images": 4},
        "search": {"quantization": {"grid": ["fp32", "fp16", "dynamic", "int8"]}},
        "fixed": {"epochs": 2, "img_size": 64, "board_threads": 1},
        "searcher": {"algorithm": "grid", "concurrency": 2, "max_failures": 0},
        "resources": {"train": {"cpu": 0.25}},
        "board": {"name": board_cluster.board_name, "emulate_if_missing": False, "timeout_s": BOARD_TIMEOUT_S,
                  # every trial must reach the board: its toy detectors share one graph, so reuse is off
                  "timing": {"warmup_runs": 2, "min_runs": 5, "min_seconds": 1.0, "reuse_graphs": False}},
        "mlflow": {"experiment": "board-gone"},
    }
    cfg = parse_config(raw, base_dir=root)
    stopped: list[float] = []
    stopper = threading.Thread(target=_stop_board_after_first_complete,
                               args=(cfg.sweep_dir, board_cluster, stopped), daemon=True)
    RecordingLiveProgress.seen = Seen()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("EDGESWEEP_CACHE", str(root / "cache"))
        mp.setattr(orchestrator.sweep, "LiveProgress", RecordingLiveProgress)
        stopper.start()
        result = run_sweep(cfg, stages=StandInStages(train_seconds=0.2, distinct_artifacts=True),
                           show_progress=True)
        stopper.join(timeout=60)
    assert stopped, "the board was never stopped: no trial completed"
    return BoardGone(cfg=cfg, result=result, seen=RecordingLiveProgress.seen, stopped_at=stopped[0])


def _by_status(result) -> dict[str, list]:
    out: dict[str, list] = {"complete": [], "failed": [], "incomplete": []}
    for r in result.records:
        out[r.status].append(r)
    return out


def test_every_trial_ends_complete_or_failed_and_the_sweep_itself_finishes(board_gone):
    records = _by_status(board_gone.result)
    assert len(board_gone.result.records) == TRIALS and not records["incomplete"]
    assert records["complete"] and records["failed"], {k: len(v) for k, v in records.items()}


def test_trials_waiting_for_the_gone_board_show_the_board_stage_in_the_live_view(board_gone):
    for record in _by_status(board_gone.result)["failed"]:
        assert record.trial_id in board_gone.seen.board_stage, f"{record.trial_id} never showed the board stage"
        _, line = board_gone.seen.board_stage[record.trial_id]
        assert "RUNNING" in line and " board " in line, line
        assert record.metrics["stage"] == "board"  # where it was when it failed, kept in trials.jsonl


def test_they_fail_after_the_board_timeout_with_a_message_naming_the_board_and_its_absence(board_gone,
                                                                                           board_cluster):
    for record in _by_status(board_gone.result)["failed"]:
        assert f"board {board_cluster.board_name!r}" in record.error, record.error
        assert f"within {BOARD_TIMEOUT_S:.0f} s" in record.error and "left the cluster" in record.error, record.error
        waited_from, _ = board_gone.seen.board_stage[record.trial_id]
        failed_at = board_gone.seen.failed_at[record.trial_id]
        assert failed_at >= board_gone.stopped_at
        assert BOARD_TIMEOUT_S - 0.5 <= failed_at - waited_from <= BOARD_TIMEOUT_S + 30


def test_completed_trials_stay_complete_in_records_mlflow_and_the_pareto_report(board_gone):
    result = board_gone.result
    records = _by_status(result)
    complete = {r.trial_id for r in records["complete"]}
    failed = {r.trial_id for r in records["failed"]}
    assert all(r.metrics["latency_ms"] > 0 and r.metrics["board_emulated"] is False for r in records["complete"])

    client = MlflowClient(tracking_uri=result.tracking_uri)
    children = client.search_runs([result.experiment_id], f"tags.`{MLFLOW_PARENT_RUN_ID}` = '{result.parent_run_id}'")
    status = {r.data.tags["edgesweep.trial_id"]: r for r in children}
    assert {t for t, r in status.items() if r.info.status == "FINISHED"} == complete
    assert {t for t, r in status.items() if r.info.status == "FAILED"} == failed
    assert all("left the cluster" in status[t].data.tags["edgesweep.error"] for t in failed)
    assert all("board/latency_ms" in status[t].data.metrics for t in complete)
    assert client.get_run(result.parent_run_id).info.status == "FINISHED"

    with (board_gone.cfg.sweep_dir / "report" / "trials.csv").open() as f:
        in_report = {row["trial"]: row["status"] for row in csv.DictReader(f)}
    assert in_report == {**{t: "complete" for t in complete}, **{t: "failed" for t in failed}}
    with (board_gone.cfg.sweep_dir / "report" / "pareto.csv").open() as f:
        front = {row["trial"] for row in csv.DictReader(f)}
    assert front and front <= complete and front == {r.trial_id for r in result.front}
