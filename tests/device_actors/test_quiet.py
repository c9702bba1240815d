"""Quiet cores: a training process (a stand-in loop in a second process calling the same `on_batch`
hook a real training gets) parks when the board asks and goes on after; the board waits for it, gives
up after its wait and says so, and ignores the files of processes that are gone."""
from __future__ import annotations

import dataclasses
import logging
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from device_actors import quiet as fence
from device_actors.measure import measure_artifact, sha256_hex
from device_actors.report import MeasureRequest

REPO = Path(__file__).resolve().parents[2]

# A stand-in training: batches of busy work, each end logged (wall time) and followed by the hook.
TRAINER = textwrap.dedent('''
    import sys, time
    from pathlib import Path
    from device_actors.quiet import Trainer
    directory, log, batch_s = Path(sys.argv[1]), Path(sys.argv[2]), float(sys.argv[3])
    with Trainer(directory) as trainer, log.open("a") as out:
        while not (directory / "stop").exists():
            started = time.perf_counter()
            while time.perf_counter() - started < batch_s:
                pass
            out.write(f"{time.time()}\\n")
            out.flush()
            trainer.at_batch_end(1, 1, 1, {})
''')


class StandInTrainer:
    def __init__(self, directory: Path, tmp_path: Path, batch_s: float = 0.02):
        self.directory, self.log = directory, tmp_path / f"batches-{batch_s}.log"
        self.process = subprocess.Popen([sys.executable, "-c", TRAINER, str(directory), str(self.log), str(batch_s)],
                                        cwd=REPO)

    def batch_ends(self) -> list[float]:
        return [float(line) for line in self.log.read_text().split()] if self.log.exists() else []

    def wait_for_batches(self, count: int, timeout_s: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_s
        while len(self.batch_ends()) < count:
            assert self.process.poll() is None, "the stand-in trainer died"
            assert time.monotonic() < deadline, "the stand-in trainer did not start"
            time.sleep(0.02)

    def stop(self) -> None:
        (self.directory / "stop").touch()
        self.process.wait(timeout=60)


def _wait_until_listed(directory: Path, timeout_s: float = 60.0) -> None:
    """Until a file is in `directory` (a trainer registered, or parked)."""
    deadline = time.monotonic() + timeout_s
    while not (directory.exists() and os.listdir(directory)):
        assert time.monotonic() < deadline, f"nothing in {directory}"
        time.sleep(0.02)


@pytest.fixture
def trainers(private_fence, tmp_path):
    started: list[StandInTrainer] = []

    def start(batch_s: float = 0.02) -> StandInTrainer:
        started.append(StandInTrainer(private_fence, tmp_path, batch_s))
        return started[-1]

    yield start
    for trainer in started:
        if trainer.process.poll() is None:
            trainer.stop()


def test_a_training_parks_at_a_batch_boundary_while_the_board_times_and_goes_on_after(private_fence, trainers):
    trainer = trainers()
    trainer.wait_for_batches(5)
    with fence.quiet(30, directory=private_fence) as state:
        asked_quiet = time.time()
        time.sleep(0.5)
        assert state.held()
        released = time.time()
    assert state.quiet and state.paused == 1
    assert not [t for t in trainer.batch_ends() if asked_quiet < t < released]  # nothing trained meanwhile
    before = len(trainer.batch_ends())
    trainer.wait_for_batches(before + 3)  # and it goes on


def test_a_training_that_starts_while_the_board_times_waits_before_its_first_batch(private_fence, trainers):
    with fence.quiet(30, directory=private_fence) as state:
        trainer = trainers()
        _wait_until_listed(private_fence / "parked")
        time.sleep(0.2)
        assert trainer.batch_ends() == [] and state.held()
    trainer.wait_for_batches(1)


def test_the_board_waits_at_most_its_wait_and_then_says_it_was_not_quiet(private_fence, trainers, caplog):
    trainer = trainers(batch_s=30.0)  # inside one long batch for the whole test
    _wait_until_listed(private_fence / "trainers")
    with caplog.at_level(logging.WARNING, logger="device_actors"):
        with fence.quiet(0.3, directory=private_fence) as state:
            assert not state.held()
    assert state.quiet is False and state.paused == 0 and 0.3 <= state.waited_s < 5
    assert "did not pause within" in caplog.text
    trainer.process.kill()
    trainer.process.wait()


def test_a_measurement_beside_a_training_that_does_not_pause_reports_not_quiet(private_fence, trainers, toy_onnx,
                                                                                quick_protocol):
    trainer = trainers(batch_s=30.0)
    _wait_until_listed(private_fence / "trainers")
    request = MeasureRequest(sha256_hex(toy_onnx), "onnxruntime",
                             protocol=dataclasses.replace(quick_protocol, quiet_wait_s=0.2))
    report = measure_artifact(toy_onnx, request, board="testboard", node_id="local", emulated=True)
    assert report.quiet is False and report.quiet_wait_s >= 0.2
    assert any(w.startswith("not quiet") for w in report.warnings)
    trainer.process.kill()
    trainer.process.wait()


def test_a_measurement_with_no_training_beside_it_is_quiet_at_once_and_one_not_asking_says_nothing(
        toy_onnx, quick_protocol):
    request = MeasureRequest(sha256_hex(toy_onnx), "onnxruntime", protocol=quick_protocol)
    report = measure_artifact(toy_onnx, request, board="testboard", node_id="local", emulated=True)
    assert report.quiet is True and report.paused_trainers == 0 and report.quiet_wait_s < 0.5
    unasked = dataclasses.replace(request, protocol=dataclasses.replace(quick_protocol, quiet_wait_s=0.0))
    assert measure_artifact(toy_onnx, unasked, board="testboard", node_id="local", emulated=True).quiet is None


def _gone_pid() -> int:
    done = subprocess.Popen([sys.executable, "-c", "pass"])
    done.wait()
    return done.pid


def test_files_of_processes_that_are_gone_are_ignored_and_removed(private_fence):
    me = os.getpid()
    stale_trainers = [f"{_gone_pid()}-1-0", f"{me}-{fence._start_time(me) + 1}-0"]  # dead; pid reused by this one
    for name in stale_trainers:
        (private_fence / "trainers").mkdir(parents=True, exist_ok=True)
        (private_fence / "trainers" / name).touch()
    with fence.quiet(30, directory=private_fence) as state:
        assert state.waited_s < 1
    assert state.quiet and state.paused == 0
    assert os.listdir(private_fence / "trainers") == []

    (private_fence / "asks" / f"{_gone_pid()}-1-0").touch()  # a board that died while it timed
    with fence.Trainer(private_fence) as trainer:
        started = time.monotonic()
        trainer.at_batch_end()
        assert time.monotonic() - started < 1 and trainer.parks == 0
    assert os.listdir(private_fence / "asks") == []


def test_the_hook_costs_a_directory_listing_when_no_board_asks(private_fence):
    with fence.Trainer(private_fence) as trainer:
        started = time.perf_counter()
        for _ in range(1000):
            trainer.at_batch_end(1, 1, 1, {})
        per_call_us = (time.perf_counter() - started) * 1e3
    assert trainer.parks == 0 and per_call_us < 1000  # microseconds each, against batches of 100 ms and more
