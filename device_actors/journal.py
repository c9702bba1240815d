"""A guard against an artifact that kills the board actor.

The actor restarts forever and Ray retries the pending call forever (`max_restarts=-1`,
`max_task_retries=-1`), which is right when the board reboots or someone kills the actor, but
a model that segfaults the runtime or exhausts the board's memory would then crash it in a
loop and block every sweep. So the actor writes what it is about to run to disk first (timing,
scoring or detecting: `guard`); a restarted actor that is asked for the same thing again counts the
crash and, past a limit, refuses it with an error instead of crashing once more.

Only deaths on the same Ray node count: a board that reboots or rejoins comes back as a new
node, and a model that was being timed when the board went away is not to blame for it.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path

from common.errors import UserError

log = logging.getLogger(__name__)

JOURNAL_FILE = "in-flight.json"


class ArtifactCrashedBoard(UserError, RuntimeError):
    """The request took the actor down more often than allowed."""


class InFlightJournal:
    def __init__(self, directory: Path, max_attempts: int = 3, node_id: str = "local"):
        if max_attempts < 1:
            raise ValueError(f"max_attempts must be >= 1, got {max_attempts}")
        self.path = Path(directory) / JOURNAL_FILE
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.max_attempts = max_attempts
        self.node_id = node_id

    def _read(self) -> dict:
        try:
            return json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}

    def begin(self, key: str, description: str) -> int:
        """Record an attempt at `key`; returns its number (1 = first), raises past the limit."""
        previous = self._read()
        if previous.get("key") == key and previous.get("node") != self.node_id:
            log.warning("%s was being timed when the board's node went away; timing it again", description)
            previous = {}  # the node died, not the artifact's run
        attempt = previous.get("attempts", 0) + 1 if previous.get("key") == key else 1
        if attempt > self.max_attempts:
            self.end()
            raise ArtifactCrashedBoard(
                f"{description} ended the board actor {attempt - 1} times while it ran (a runtime crash or "
                f"out of memory on the board); refusing it. Check it on the board with "
                f"`python -m orchestrator board bench MODEL --board NAME` and the board's Ray logs")
        if attempt > 1:
            log.warning("retrying %s after the actor died during attempt %d", description, attempt - 1)
        tmp = self.path.with_suffix(".tmp")
        entry = {"key": key, "attempts": attempt, "what": description, "node": self.node_id}
        tmp.write_text(json.dumps(entry), encoding="utf-8")
        os.replace(tmp, self.path)
        return attempt

    def end(self) -> None:
        self.path.unlink(missing_ok=True)

    @contextlib.contextmanager
    def guard(self, key: str, description: str) -> Iterator[int]:
        """`begin` before the body and `end` after it, also when it raises: only a process that dies
        inside the body leaves the entry that the next actor counts."""
        attempt = self.begin(key, description)
        try:
            yield attempt
        finally:
            self.end()
