"""A time budget for the MLflow calls of a sweep's end, so a hung tracking server cannot hold the driver.

MLflow's REST client retries a request that gets no answer for minutes (its timeout and retries
add up to about 20 minutes against a server that accepts connections and never answers), and a
SQLite store can be locked. Each call here runs on a daemon thread while the main thread waits at
most what is left of the budget, in a wait that a stop signal interrupts (KeyboardInterrupt from
`orchestrator.interrupts`). Once a call runs out of time MLflow counts as down and the later calls
are skipped: the journal holds every result, and `report` writes MLflow what it lacks.
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")
END_BUDGET_S = 120.0  # MLflow's share of a sweep's end: queued trial writes, run ids, the parent's end
KILLED_BUDGET_S = 5.0  # after a stop signal: only the parent run's KILLED is written, within this


class MlflowDeadline:
    """Calls that share one budget of `seconds`; `down` once one of them ran out of it."""

    def __init__(self, seconds: float) -> None:
        self.until = time.monotonic() + seconds
        self.down = False

    def call(self, fn: Callable[[], T], what: str, default: T) -> T:
        """`fn()`'s value (its exception is raised here), or `default` when MLflow is down or the
        budget runs out first."""
        if self.down:
            return default
        done, box = threading.Event(), {}

        def work() -> None:
            try:
                box["value"] = fn()
            except BaseException as e:  # noqa: BLE001 - handed to the waiting thread
                box["error"] = e
            finally:
                done.set()

        threading.Thread(target=work, name=f"edgesweep-mlflow-{what}", daemon=True).start()
        if not done.wait(max(self.until - time.monotonic(), 0.0)):
            self.down = True
            log.warning("MLflow did not answer in time while %s; the sweep ends without waiting for it (the "
                        "journal holds every result, and `python -m orchestrator report` writes MLflow what it "
                        "lacks)", what)
            return default
        if "error" in box:
            raise box["error"]
        return box["value"]
