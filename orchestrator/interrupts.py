"""Stopping a sweep on SIGINT (Ctrl-C), SIGTERM (schedulers, systemd) and SIGHUP (a dropped SSH
session), in every phase from the config check to the report. The sweep command exits 130 for each
of them (docs/robustness.md#signals-and-exit-codes).

Outside Tune a stop signal raises KeyboardInterrupt where the driver is (config check, MLflow,
Ray's start, the report), and the sweep ends its parent run KILLED. Inside Tune it becomes SIGUSR1,
Tune's graceful stop (it saves the experiment state; the running trials resume on `--resume`):
Tune's own SIGINT handler would make `Tuner.fit()` return as if the sweep had ended, and it ignores
SIGTERM and SIGHUP. A second signal while Tune stops is never raised into Tune, where it could cut
its final save (a few seconds): it is recorded as `hurry`, and the sweep's end then waits for
nothing more (no MLflow drain, no re-timing). A SIGUSR1 that comes before Tune has installed its
handler raises KeyboardInterrupt too (its default would kill the driver without saving anything).

`ray.init` would install a SIGTERM handler of its own (`sys.exit(15)`, which skips the report);
`around_ray_init` keeps ours and holds a signal until `ray.init` returns.
"""
from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Iterator

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
TUNE_STOP = signal.SIGUSR1
INTERRUPTED = 130  # the sweep's exit status after any stop signal: the shell's for Ctrl-C


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()  # signal handlers live in the main thread


class StopSignals:
    """Which stop signal arrived, if any, and whether a second one asked to hurry. A context manager
    (re-entrant: a nested `with` restores the outer handlers); `during_tune()` wraps `Tuner.fit()`,
    `deferred()` a step that must not be cut (writing the report files)."""

    def __init__(self) -> None:
        self.received: str | None = None
        self.hurry = False  # a second signal: end without waiting for anything that can wait
        self._in_tune = False
        self._deferred = False
        self._saved: list[dict[int, object]] = []

    def _handle(self, signum: int, frame) -> None:
        name = signal.Signals(signum).name
        if signum == TUNE_STOP:  # ours only while Tune's handler is not installed
            raise KeyboardInterrupt(name)
        first = self.received is None
        self.received = self.received or name
        self.hurry = self.hurry or not first
        if self._in_tune:
            if first:
                os.kill(os.getpid(), TUNE_STOP)  # Tune: stop, save the experiment, return from fit()
            else:
                os.write(2, f"\n{name}: the sweep ends as soon as Tune has saved its state (seconds)\n".encode())
            return
        if not self._deferred:
            raise KeyboardInterrupt(name)

    def __enter__(self) -> "StopSignals":
        if _main_thread():
            self._saved.append({sig: signal.signal(sig, self._handle) for sig in (*STOP_SIGNALS, TUNE_STOP)})
        return self

    def __exit__(self, *exc) -> None:
        if self._saved:
            for sig, handler in self._saved.pop().items():
                signal.signal(sig, handler)

    @contextlib.contextmanager
    def during_tune(self) -> Iterator[None]:
        os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"  # read by Tune as it starts: SIGINT is handled here
        self._in_tune = True
        try:
            yield
        finally:
            self._in_tune = False

    @contextlib.contextmanager
    def deferred(self) -> Iterator[None]:
        """Signals are recorded, not raised, inside the block (the caller reads `received` after it)."""
        self._deferred = True
        try:
            yield
        finally:
            self._deferred = False


@contextlib.contextmanager
def around_ray_init() -> Iterator[None]:
    """Wraps `ray.init` while a `StopSignals` handles the stop signals. Ray would install SIGTERM
    handlers of its own as it starts (`sys.exit(15)`, which skips the sweep's end); here it installs
    none (`_ray_internals.ray_sigterm_handlers_off`). And a signal during the seconds `ray.init`
    takes is recorded, then raised once it returns: raised inside it, it can land in a fork hook,
    where Python swallows it with logging's lock still held (seen: the signal lost, and every thread
    that logs blocked for good). Without a StopSignals, Ray's own handling is left as it is."""
    from orchestrator._ray_internals import ray_sigterm_handlers_off

    handler = signal.getsignal(signal.SIGTERM) if _main_thread() else None
    stop = getattr(handler, "__self__", None)
    if not isinstance(stop, StopSignals):
        yield
        return
    before = stop.received
    with ray_sigterm_handlers_off(), stop.deferred():
        yield
    if stop.received is not None and before is None:
        raise KeyboardInterrupt(stop.received)
