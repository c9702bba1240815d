"""The board's latency cache, on the board's own disk.

Latency depends on the artifact and how it is run, not on which trial asks, so every
measurement is stored under its request key and an identical request is answered from here.
The file is append-only JSON lines written with fsync: it survives an actor restart (Ray
re-runs the constructor, which reloads it) and a power cut loses at most the line being written.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import threading
from pathlib import Path

from device_actors.report import LatencyReport

log = logging.getLogger(__name__)

CACHE_FILE = "latency-cache.jsonl"


class LatencyCache:
    def __init__(self, directory: Path):
        self.path = Path(directory) / CACHE_FILE
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._reports: dict[str, LatencyReport] = self._load()

    def _load(self) -> dict[str, LatencyReport]:
        reports: dict[str, LatencyReport] = {}
        if not self.path.exists():
            return reports
        with self.path.open(encoding="utf-8") as f:
            for number, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    entry = json.loads(line)
                    reports[entry["key"]] = LatencyReport.from_dict(entry["report"])
                except (ValueError, KeyError, TypeError) as e:
                    # A torn last line after a crash, or an entry from an older report format.
                    log.warning("skipping unreadable latency cache entry %s:%d (%s)", self.path, number, e)
        log.info("latency cache %s: %d entries", self.path, len(reports))
        return reports

    def get(self, key: str) -> LatencyReport | None:
        """The stored report marked `cached=True`, or None."""
        with self._lock:
            report = self._reports.get(key)
        return dataclasses.replace(report, cached=True) if report is not None else None

    def put(self, key: str, report: LatencyReport) -> None:
        stored = dataclasses.replace(report, cached=False)
        line = json.dumps({"key": key, "report": stored.to_dict()}, separators=(",", ":")) + "\n"
        with self._lock:
            with self.path.open("a", encoding="utf-8") as f:
                f.write(line)
                f.flush()
                os.fsync(f.fileno())
            self._reports[key] = stored

    def __len__(self) -> int:
        with self._lock:
            return len(self._reports)
