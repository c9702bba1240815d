"""Fixtures for the board-side tests: small real ONNX detectors and quick timing protocols."""
from __future__ import annotations

import pytest

from device_actors.timing import TimingProtocol
from device_actors.toy_model import toy_detector_onnx

# Enough runs for real statistics, short enough for a 2-core CI machine.
QUICK = TimingProtocol(warmup_runs=3, min_runs=20, min_seconds=0.1, max_runs=2000)


@pytest.fixture(scope="session")
def toy_onnx() -> bytes:
    return toy_detector_onnx(96, width=8, depth=1)


@pytest.fixture
def quick_protocol() -> TimingProtocol:
    return QUICK


@pytest.fixture(autouse=True)
def private_fence(tmp_path, monkeypatch):
    """Each test's boards and trainers meet at a fence of their own (device_actors.quiet), not at this
    machine's, where other test runs may train."""
    from device_actors.quiet import QUIET_DIR_ENV

    monkeypatch.setenv(QUIET_DIR_ENV, str(tmp_path / "fence"))
    return tmp_path / "fence"
