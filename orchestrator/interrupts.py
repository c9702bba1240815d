"""Ctrl-C (SIGINT) and SIGTERM during a sweep: stop launching trials, let Tune save, say so.

Ray Tune stops a run gracefully on SIGUSR1 (it saves the experiment state, and the trials still
running are resumed by `--resume`), but its own SIGINT handler makes `Tuner.fit()` return as if the
sweep had ended and it ignores SIGTERM, the signal schedulers and systemd send. So while the Tuner
runs, both signals are recorded here and passed on to Tune as SIGUSR1; outside it they raise
KeyboardInterrupt as usual. A second signal while Tune is saving raises KeyboardInterrupt too, and
so does a SIGUSR1 that comes before Tune has installed its handler (its default would kill the
driver without saving anything).
"""
from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Iterator

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
TUNE_STOP = signal.SIGUSR1


class StopSignals:
    """Which stop signal arrived, if any; `during_tune()` wraps `Tuner.fit()`."""

    def __init__(self) -> None:
        self.received: str | None = None
        self._in_tune = False
        self._previous: dict[int, object] = {}

    def _handle(self, signum: int, frame) -> None:
        first = self.received is None
        self.received = self.received or signal.Signals(signum).name
        if self._in_tune and first and signum != TUNE_STOP:
            os.kill(os.getpid(), TUNE_STOP)  # Tune: stop, save the experiment, return from fit()
            return
        raise KeyboardInterrupt(signal.Signals(signum).name)

    def __enter__(self) -> "StopSignals":
        if threading.current_thread() is threading.main_thread():  # signal handlers live in the main thread
            for sig in (*STOP_SIGNALS, TUNE_STOP):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    @contextlib.contextmanager
    def during_tune(self) -> Iterator[None]:
        os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"  # read by Tune as it starts: SIGINT is handled here
        self._in_tune = True
        try:
            yield
        finally:
            self._in_tune = False
