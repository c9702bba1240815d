"""An actor that dies while it starts is stopped after a few restarts, with a message that says why,
instead of restarting forever while the caller waits.

The crash is real (the actor's worker kills itself with SIGSEGV in its constructor, as a native
library crashing on import would); the Ray cluster is a real local one.
"""
from __future__ import annotations

import os
import signal
import time

import pytest
import ray

from device_actors._ray_internals import actor_restarts
from device_actors.client import MAX_START_RESTARTS, Board, BoardUnavailable, _wait_ready


class CrashesOnStart:
    def __init__(self):
        os.kill(os.getpid(), signal.SIGSEGV)

    def status(self):
        return "never"


@pytest.fixture
def local_ray(monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    ray.init(address="local", num_cpus=1, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    yield
    ray.shutdown()


def test_an_actor_crashing_while_it_starts_is_stopped_with_the_reason(local_ray):
    actor = ray.remote(max_restarts=-1, num_cpus=0)(CrashesOnStart).remote()
    started = time.monotonic()
    with pytest.raises(BoardUnavailable, match=rf"died \d+ times while starting on a test node and was stopped"):
        _wait_ready(Board("crashy", False, actor), 120, "a test node")
    assert time.monotonic() - started < 90  # well before the ready timeout
    restarts, _ = actor_restarts(actor)
    assert restarts >= MAX_START_RESTARTS
    time.sleep(3)
    assert actor_restarts(actor)[0] <= restarts + 1  # no longer restarting
