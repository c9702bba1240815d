"""The queue ledger shows who waits for the board, what runs, and forgets callers that gave up."""
from __future__ import annotations

from device_actors.ledger import QueueLedger, Ticket


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _ticket(tid: str, submitted: float, expires: float = 1e9) -> Ticket:
    return Ticket(tid, f"model {tid}", "host:1", submitted, expires)


def test_waiting_running_and_finished_measurements():
    ledger = QueueLedger(_Clock())
    for i, tid in enumerate("abc"):
        ledger.announce(_ticket(tid, 10.0 + i))
    ledger.start("a", "model a")
    snap = ledger.snapshot()
    assert [t.id for t in snap.waiting] == ["b", "c"]
    assert snap.running.id == "a" and snap.running_since == 100.0
    ledger.finish()
    assert ledger.snapshot().running is None


def test_announcement_arriving_after_its_start_is_not_counted_as_waiting():
    ledger = QueueLedger(_Clock())
    ledger.start("late", "model late")  # status and measurement calls run on different threads
    ledger.announce(_ticket("late", 1.0))
    assert ledger.snapshot().waiting == ()


def test_expired_announcement_of_a_caller_that_gave_up_is_dropped():
    clock = _Clock()
    ledger = QueueLedger(clock)
    ledger.announce(_ticket("gone", 1.0, expires=150.0))
    assert len(ledger.snapshot().waiting) == 1
    clock.now = 151.0
    assert ledger.snapshot().waiting == ()


def test_measurement_without_ticket_still_shows_as_running():
    ledger = QueueLedger(_Clock())
    ledger.start(None, "model x")
    assert ledger.snapshot().running.what == "model x"
