"""Peak resident memory of a block of work, from /proc/self/status.

The board actor lives for many measurements, so its lifetime high-water mark (VmHWM) says
nothing about the current model. Writing "5" to /proc/self/clear_refs resets VmHWM to the
current RSS (Linux >= 4.0), which turns it into a per-measurement peak: peak - baseline is the
memory the model needed while loading and running.
"""
from __future__ import annotations

import logging
from pathlib import Path

log = logging.getLogger(__name__)


def _status_kb(field: str, proc_self: Path) -> int | None:
    try:
        for line in (proc_self / "status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


class PeakRssTracker:
    """`start()` before the work, `increase_mb()` after it: the RSS high-water increase in MiB.

    None where /proc does not tell (not Linux). When the high-water mark cannot be reset the
    increase is still a lower bound: it is zero unless the work set a new lifetime peak.
    """

    def __init__(self, proc_self: Path = Path("/proc/self")):
        self._proc_self = proc_self
        self._baseline_kb: int | None = None

    def start(self) -> None:
        try:
            (self._proc_self / "clear_refs").write_text("5")
        except OSError as e:
            log.debug("cannot reset the RSS high-water mark (%s); the peak is a lower bound", e)
        self._baseline_kb = _status_kb("VmRSS", self._proc_self)

    def increase_mb(self) -> float | None:
        peak = _status_kb("VmHWM", self._proc_self)
        if peak is None or self._baseline_kb is None:
            return None
        return max(0, peak - self._baseline_kb) / 1024.0
