"""The front's latencies, timed again at a quiet moment before it is reported.

While a sweep runs, a board that shares its machine with the sweep (the emulated local board, a
board node that also trains) times artifacts beside exports, teachers and the driver; the quiet
fence (`device_actors.quiet`) pauses student training only. So when the trials have ended, and
once this machine is idle (the sweep's processes take seconds to wind down; at most
`SETTLE_MAX_S`), every front trial whose latency is noisy (CV above `NOISY_CV`) is timed again
on each board, without its cache (`refresh`), and its record gets the new figures with
`latency_retimed: true` (a later journal line replaces an earlier one). The front can change with
them, so this repeats until the front holds no noisy latency that was not re-timed already. The
searcher was told the first figure (kept as `latency_ms_in_sweep`): Optuna's study, and so
optuna-dashboard's best trials, hold what the sweep measured; the report's front holds the re-timed.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

from common.knobs import pick
from device_actors.runtimes import BoardKnobs
from orchestrator import pareto
from orchestrator.config import SweepConfig, latency_keys
from orchestrator.reports import NOISY_CV
from orchestrator.results import TrialRecord, append_record, load_records

log = logging.getLogger(__name__)

ROUNDS = 3  # a front changed by re-timed latencies is looked at again, this many times at most
SETTLED = 0.15  # the machine counts as idle below this share of its CPU time busy ...
SETTLE_MAX_S = 30.0  # ... waited for this long at most


def _noisy(record: TrialRecord) -> bool:
    cv = record.metrics.get("latency_cv")
    return record.complete and bool(record.artifact) and not record.metrics.get("latency_retimed") and \
        cv is not None and cv > NOISY_CV


def _retimed(record: TrialRecord, reports: dict[str, dict]) -> TrialRecord:
    """The record with the first board's figures (and each board's latency_ms@NAME) replaced."""
    first = next(iter(reports.values()))
    metrics = {**record.metrics, "latency_ms_in_sweep": record.metrics["latency_ms"], "latency_ms": first["median_ms"],
               "latency_p90_ms": first["p90_ms"], "latency_cv": first["cv"], "latency_mean_ms": first["mean_ms"],
               "fps": first["fps"],
               "latency_quiet": first.get("quiet"), "latency_reused_from": None, "latency_retimed": True}
    metrics.update(zip(latency_keys(reports), (r["median_ms"] for r in reports.values())))
    return replace(record, metrics=metrics)


def busy_share(interval_s: float = 0.5) -> float | None:
    """The share of this machine's CPU time spent busy over `interval_s` (Linux /proc/stat; None elsewhere)."""
    def times() -> tuple[int, int]:
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        return sum(fields), fields[3] + fields[4]  # total, idle + iowait

    try:
        total0, idle0 = times()
        time.sleep(interval_s)
        total1, idle1 = times()
    except (OSError, ValueError, IndexError):
        return None
    return 1 - (idle1 - idle0) / max(total1 - total0, 1)


def settle(*, below: float = SETTLED, max_s: float = SETTLE_MAX_S) -> float | None:
    """Wait until the machine is idle (the sweep's processes wind down for seconds after its last
    trial), at most `max_s`; returns the last busy share seen."""
    deadline = time.monotonic() + max_s
    busy = busy_share()
    while busy is not None and busy >= below and time.monotonic() < deadline:
        busy = busy_share()
    return busy


def retime_front(cfg: SweepConfig, sweep_dir: Path, boards: Sequence, *,
                 on_retimed: Callable[[TrialRecord], None] | None = None) -> list[TrialRecord]:
    """Re-time the front's noisy latencies (see the module docstring); returns the records as they are now.
    `on_retimed` hears of each re-timed record (MLflow's mirror)."""
    objectives = [(o.metric, o.mode) for o in cfg.objectives]
    records = load_records(sweep_dir)
    for _ in range(ROUNDS):
        noisy = [r for r in pareto.front(records, objectives, cfg.constraints) if _noisy(r)]
        if not noisy:
            break
        busy = settle()
        log.info("timing %d front trial(s) again; this machine is %s busy", len(noisy),
                 "?" if busy is None else f"{busy:.0%}")
        for record in noisy:
            options = cfg.board.runtime_options(pick(BoardKnobs, record.knobs).board_threads)
            reports = {board.name: board.measure(Path(sweep_dir) / record.artifact, options=options,
                                                 protocol=cfg.board.timing, timeout_s=cfg.board.timeout_s,
                                                 refresh=True).to_dict() for board in boards}
            retimed = _retimed(record, reports)
            log.info("trial %s: latency %.3f ms (CV %.0f %%) timed again with the sweep idle: %.3f ms (CV %.0f %%)",
                     record.trial_id, record.metrics["latency_ms"], 100 * record.metrics["latency_cv"],
                     retimed.metrics["latency_ms"], 100 * retimed.metrics["latency_cv"])
            append_record(sweep_dir, retimed)
            if on_retimed is not None:
                on_retimed(retimed)
        records = load_records(sweep_dir)
    return records
