"""The front's latencies, timed again at a quiet moment before it is reported.

While a sweep runs, a board that shares its machine with the sweep (the emulated local board, a
board node that also trains) times artifacts beside exports, teachers and the driver; the quiet
fence (`device_actors.quiet`) pauses student training only. So when the trials have ended and
nothing else runs, every front trial whose latency is noisy (CV above `NOISY_CV`) is timed again
on each board, without its cache (`refresh`), and its record gets the new figures with
`latency_retimed: true` (a later journal line replaces an earlier one). The front can change with
them, so this repeats until the front holds no noisy latency that was not re-timed already. The
searcher was told the first figure (kept as `latency_ms_in_sweep`): Optuna's study, and so
optuna-dashboard's best trials, hold what the sweep measured; the report's front holds the re-timed.
"""
from __future__ import annotations

import logging
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
