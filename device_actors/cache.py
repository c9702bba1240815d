"""The board's result caches, on the board's own disk: latency reports and artifact scores.

A result depends on the artifact and how it is run, not on which trial asks, so every result is
stored under its request key and an identical request is answered from here. Each file is
append-only JSON lines (`common.jsonlines`): it survives an actor restart (Ray re-runs the
constructor, which reloads it) and a power cut loses at most the line being written.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Generic, TypeVar

from common.jsonlines import append_line
from device_actors.report import LatencyReport

log = logging.getLogger(__name__)

CACHE_FILE = "latency-cache.jsonl"
SCORE_FILE = "score-cache.jsonl"
T = TypeVar("T")


class JsonLinesCache(Generic[T]):
    """key -> value, kept in memory and appended to one JSON-lines file."""

    def __init__(self, path: Path, what: str, *, encode: Callable[[T], object], decode: Callable[[object], T]):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._what, self._encode, self._decode = what, encode, decode
        self._lock = threading.Lock()
        self._values: dict[str, T] = self._load()

    def _load(self) -> dict[str, T]:
        values: dict[str, T] = {}
        if not self.path.exists():
            return values
        with self.path.open(encoding="utf-8") as f:
            for number, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    entry = json.loads(line)
                    values[entry["key"]] = self._decode(entry["value"] if "value" in entry else entry["report"])
                except (ValueError, KeyError, TypeError) as e:
                    # A torn last line after a crash, or an entry from an older format.
                    log.warning("skipping unreadable %s cache entry %s:%d (%s)", self._what, self.path, number, e)
        log.info("%s cache %s: %d entries", self._what, self.path, len(values))
        return values

    def get(self, key: str) -> T | None:
        with self._lock:
            return self._values.get(key)

    def put(self, key: str, value: T) -> None:
        line = json.dumps({"key": key, "value": self._encode(value)}, separators=(",", ":"))
        with self._lock:
            append_line(self.path, line)
            self._values[key] = value

    def __len__(self) -> int:
        with self._lock:
            return len(self._values)


class LatencyCache:
    """Latency reports by request key; a report read back says `cached=True`."""

    def __init__(self, directory: Path, filename: str = CACHE_FILE):
        self._store = JsonLinesCache(Path(directory) / filename, "latency", encode=lambda r: r.to_dict(),
                                     decode=LatencyReport.from_dict)
        self.path = self._store.path

    def get(self, key: str) -> LatencyReport | None:
        report = self._store.get(key)
        return dataclasses.replace(report, cached=True) if report is not None else None

    def put(self, key: str, report: LatencyReport) -> None:
        self._store.put(key, dataclasses.replace(report, cached=False))

    def __len__(self) -> int:
        return len(self._store)
