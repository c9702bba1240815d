"""Quiet cores: the board does not time while EdgeSweep trains on the same machine.

A board that shares its CPUs with training (the emulated local board, or a board node that also
trains) would time the trainers' noise. So each training process registers itself while it trains
(`Trainer`, whose `at_batch_end` is the trainer's `on_batch` hook) and, at each batch boundary,
looks whether a board on its machine asked for quiet: one directory listing. If so it parks until
the board is done. The board (`quiet`) asks, waits until every live registered trainer has parked,
at most `wait_s`, times, and lets them go. A board on a machine where nothing trains finds no one
registered and waits for nothing.

The files live in a directory per user and Ray session under /dev/shm (`fence_dir`; tmpfs, so a
listing costs microseconds and a reboot clears it), or $EDGESWEEP_QUIET_DIR:
    trainers/<pid>-<start>-<n>   one per training, while it trains
    parked/<pid>-<start>-<n>     while that training is parked
    asks/<pid>-<start>-<n>       one per board timing, while it times
A file of a process that is gone (pid dead, or reused: its start time differs) is stale: ignored
and removed, so a crashed trainer never holds a board and a crashed board never parks training.
A parked trainer goes on by itself after `MAX_PARK_S`, and the board's report then says not quiet.
No torch here: boards import this module.
"""
from __future__ import annotations

import itertools
import logging
import os
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

QUIET_DIR_ENV = "EDGESWEEP_QUIET_DIR"
POLL_S = 0.01  # how often a parked trainer and a waiting board look again
MAX_PARK_S = 600.0  # a trainer parks at most this long for one board timing
_TRAINERS, _PARKED, _ASKS = "trainers", "parked", "asks"
_serial = itertools.count()


def fence_dir() -> Path:
    """This machine's fence for the current Ray session: trainers and boards of one cluster meet there."""
    if os.environ.get(QUIET_DIR_ENV):
        return Path(os.environ[QUIET_DIR_ENV])
    session = "no-ray"
    try:
        import ray

        if ray.is_initialized():
            session = ray.get_runtime_context().get_session_name()
    except ImportError:
        pass
    root = Path("/dev/shm") if Path("/dev/shm").is_dir() else Path(tempfile.gettempdir())
    return root / f"edgesweep-quiet-{os.getuid()}" / session


def _start_time(pid: int) -> int:
    """The process's start time in clock ticks since boot (0 where /proc does not say)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return int(stat[stat.rindex(")") + 2:].split()[19])
    except (OSError, ValueError, IndexError):
        return 0


def _own_name() -> str:
    return f"{os.getpid()}-{_start_time(os.getpid())}-{next(_serial)}"


def _alive(name: str) -> bool:
    """Whether the process that wrote the file `name` (pid-start-n) still runs."""
    try:
        pid, start = (int(part) for part in name.split("-")[:2])
    except ValueError:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # someone else's process: it runs
    return start == 0 or _start_time(pid) in (0, start)


def _live(directory: Path) -> list[str]:
    """The names in `directory` of live processes; stale files are removed."""
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return []
    live = []
    for name in names:
        if _alive(name):
            live.append(name)
        else:
            (directory / name).unlink(missing_ok=True)
    return live


def _touch(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch()


class Trainer:
    """One training registered at the fence while it runs (`with Trainer() as t: fit(on_batch=t.at_batch_end)`)."""

    def __init__(self, directory: Path | None = None):
        self._dir = Path(directory) if directory is not None else fence_dir()
        self.name = _own_name()
        self.parks = 0  # how often it parked
        self._outwaited: set[str] = set()  # asks it parked MAX_PARK_S for and then ignored

    def __enter__(self) -> Trainer:
        _touch(self._dir / _TRAINERS / self.name)
        self.at_batch_end()  # a training that starts while a board times waits before its first batch
        return self

    def __exit__(self, *exc) -> None:
        (self._dir / _PARKED / self.name).unlink(missing_ok=True)
        (self._dir / _TRAINERS / self.name).unlink(missing_ok=True)

    def asks(self) -> set[str]:
        """The live boards on this machine asking for quiet (the common answer, none: one listing)."""
        try:
            if not os.listdir(self._dir / _ASKS):
                return set()
        except FileNotFoundError:
            return set()
        return set(_live(self._dir / _ASKS)) - self._outwaited

    def at_batch_end(self, *_batch) -> None:
        """The `on_batch` hook: park while a board asks for quiet (its arguments are not needed)."""
        asks = self.asks()
        if not asks:
            return
        parked = self._dir / _PARKED / self.name
        _touch(parked)
        self.parks += 1
        started = time.monotonic()
        try:
            while asks:
                if time.monotonic() - started > MAX_PARK_S:
                    log.warning("training %s parked %.0f s for a board's timing and goes on", self.name, MAX_PARK_S)
                    self._outwaited |= asks
                    return
                time.sleep(POLL_S)
                asks = self.asks()
        finally:
            parked.unlink(missing_ok=True)


@dataclass
class Quiet:
    """The board's side of one timing: how quiet it was, for the report."""

    directory: Path
    asked: bool
    quiet: bool | None = None  # None when not asked
    paused: int = 0  # trainers that parked for it
    waited_s: float = 0.0

    def running(self) -> list[str]:
        """Live registered trainers that are not parked."""
        parked = set(_live(self.directory / _PARKED))
        return [t for t in _live(self.directory / _TRAINERS) if t not in parked]

    def held(self) -> bool:
        """Whether it is still quiet (checked again after the timing: a trainer may have parked too long
        and gone on); updates `quiet`."""
        if self.asked and self.quiet and self.running():
            log.warning("a training process on this machine went on during the timing: the latency is not quiet")
            self.quiet = False
        return bool(self.quiet)


@contextmanager
def quiet(wait_s: float, *, directory: Path | None = None, what: str = "timing") -> Iterator[Quiet]:
    """Ask the trainers on this machine to park, wait up to `wait_s` until they all have, and let them
    go on when the block ends; `wait_s` 0 asks nothing (the result's `quiet` is None)."""
    directory = Path(directory) if directory is not None else fence_dir()
    if wait_s <= 0:
        yield Quiet(directory, asked=False)
        return
    ask = directory / _ASKS / _own_name()
    _touch(ask)
    try:
        state = Quiet(directory, asked=True)
        started = time.monotonic()
        deadline = started + wait_s
        while (running := state.running()) and time.monotonic() < deadline:
            time.sleep(POLL_S)
        state.waited_s = time.monotonic() - started
        state.quiet = not running
        state.paused = len(_live(directory / _PARKED))
        if running:
            log.warning("%s: %d training process(es) on this machine did not pause within %.0f s (%s); timing "
                        "anyway, and the report says quiet: false", what, len(running), wait_s, ", ".join(running))
        elif state.paused:
            log.info("%s: %d training process(es) on this machine paused after %.2f s", what, state.paused,
                     state.waited_s)
        yield state
    finally:
        ask.unlink(missing_ok=True)
