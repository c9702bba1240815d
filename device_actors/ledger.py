"""Who is waiting for the board.

Ray queues calls to a `max_concurrency=1` actor where the actor's code cannot see them, and the
Ray state API that lists them needs the dashboard (`ray[default]`), which a minimal cluster
lacks. So callers announce each measurement in a cheap status call just before submitting it,
and the actor marks it started and finished: waiting = announced, not started, not expired.
An announcement from a caller that died is dropped when its deadline passes.
"""
from __future__ import annotations

import threading
import time
from collections import OrderedDict
from dataclasses import dataclass


@dataclass(frozen=True)
class Ticket:
    id: str
    what: str  # MeasureRequest.describe()
    caller: str  # host:pid of the submitting process
    submitted_at: float  # Unix seconds
    expires_at: float  # the caller's own deadline


@dataclass(frozen=True)
class QueueSnapshot:
    waiting: tuple[Ticket, ...]  # oldest first
    running: Ticket | None
    running_since: float | None


class QueueLedger:
    """Thread-safe: measurements and status queries run on different actor threads."""

    _REMEMBERED = 1000  # started ids kept to ignore an announcement that arrives after its start

    def __init__(self, clock=time.time):
        self._clock = clock
        self._lock = threading.Lock()
        self._waiting: dict[str, Ticket] = {}
        self._started: OrderedDict[str, None] = OrderedDict()
        self._running: Ticket | None = None
        self._running_since: float | None = None

    def announce(self, ticket: Ticket) -> None:
        with self._lock:
            if ticket.id not in self._started:
                self._waiting[ticket.id] = ticket

    def start(self, ticket_id: str | None, what: str) -> None:
        with self._lock:
            now = self._clock()
            if ticket_id is None:
                self._running = Ticket("", what, "", now, float("inf"))
            else:
                self._started[ticket_id] = None
                while len(self._started) > self._REMEMBERED:
                    self._started.popitem(last=False)
                self._running = self._waiting.pop(ticket_id, None) or Ticket(ticket_id, what, "", now, float("inf"))
            self._running_since = now

    def finish(self) -> None:
        with self._lock:
            self._running, self._running_since = None, None

    def snapshot(self) -> QueueSnapshot:
        with self._lock:
            now = self._clock()
            for tid in [t for t, ticket in self._waiting.items() if ticket.expires_at < now]:
                del self._waiting[tid]
            waiting = tuple(sorted(self._waiting.values(), key=lambda t: t.submitted_at))
            return QueueSnapshot(waiting=waiting, running=self._running, running_since=self._running_since)
