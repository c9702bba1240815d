"""Append-only JSON-lines files that survive a crash: each line is fsync'd before `append` returns,
and a line torn by a crash is left alone (readers skip it) while the next one starts afresh."""
from __future__ import annotations

import os
from pathlib import Path


def append_line(path: Path, line: str) -> None:
    """Append `line` (no newline) as one line of `path`, on disk when this returns."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with os.fdopen(os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600), "ab") as f:  # new: its owner's only
        torn = False
        if f.tell():
            with path.open("rb") as last:
                last.seek(-1, os.SEEK_END)
                torn = last.read(1) != b"\n"
        # after a torn line, start a new one: glued to it, this line would be unreadable too
        f.write((b"\n" if torn else b"") + line.encode("utf-8") + b"\n")
        f.flush()
        os.fsync(f.fileno())
