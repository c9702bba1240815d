"""The sweep's own durable record of its trials: one JSON line per ended trial in `trials.jsonl`.

The driver appends a trial's line (flushed and fsync'd) before any other callback sees the trial
end, so no finished result is lost whatever happens to MLflow, Ray or the driver afterwards.
`report SWEEP`, the Pareto front and MLflow's backfill read it. A later line for the same trial (a
resumed retry, a trial interrupted and then finished) replaces an earlier one. A complete trial's
exported artifact is copied to `models/<trial id>/` first (its sha256 checked), so the file the
report names stays in the sweep directory after Tune prunes its checkpoints.
"""
from __future__ import annotations

import json
import logging
import math
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from ray import tune

from common import atomic
from common.hashing import file_sha256
from common.jsonlines import append_line
from trainables.export.registry import suffixes

log = logging.getLogger(__name__)

RECORDS = "trials.jsonl"
MODELS = "models"  # <sweep dir>/models/<trial id>/<artifact>: every complete trial's exported file


@dataclass(frozen=True)
class TrialRecord:
    trial_id: str
    status: str  # "complete", "incomplete" (stopped before the end), "failed" or "interrupted" (to be resumed)
    knobs: dict
    metrics: dict
    error: str | None = None
    artifact: str | None = None  # the exported file, relative to the sweep directory (complete trials)

    @property
    def complete(self) -> bool:
        return self.status == "complete"

    @property
    def ended(self) -> bool:
        """Finished for good: complete or failed (an interrupted trial runs again on --resume)."""
        return self.status in ("complete", "incomplete", "failed")


def _plain(result: dict) -> dict:
    out = {}
    for k, v in result.items():
        if isinstance(v, (bool, int, str)) or v is None:
            out[k] = v
        elif isinstance(v, float):
            out[k] = v if math.isfinite(v) else None
    return out


def trial_error(trial) -> str:
    """The last line of a failed trial's error file (the exception), or 'unknown error'."""
    path = Path(trial.error_file) if trial.error_file else None
    text = path.read_text().strip() if path is not None and path.exists() else ""
    return text.splitlines()[-1] if text else "unknown error"


def record_of(trial, complete_knobs, status: str | None = None) -> TrialRecord:
    """The record of a Tune trial as it ended (or `status`, e.g. "interrupted")."""
    result = trial.last_result or {}
    if status is None:
        status = "complete" if result.get("trial_complete") else "incomplete"
    return TrialRecord(trial.trial_id, status, complete_knobs(trial.config), _plain(result),
                       trial_error(trial) if status == "failed" else None)


def keep_artifact(sweep_dir: Path, trial, record: TrialRecord) -> TrialRecord:
    """Copy a complete trial's artifact out of its Tune checkpoint into `models/<trial id>/` and
    name it in the record. The copy must hash to the sha256 the trial measured, or it is refused."""
    if not record.complete or trial.checkpoint is None:
        return record
    with trial.checkpoint.as_directory() as d:
        found = [f for f in sorted(Path(d).iterdir()) if f.name.endswith(suffixes())]  # any registered format
        if not found:
            return record
        target = Path(sweep_dir) / MODELS / record.trial_id / found[0].name
        atomic.copy_file(found[0], target)
    expected = record.metrics.get("artifact_sha256")
    if expected and file_sha256(target) != expected:
        raise RuntimeError(f"{target}: the copied artifact's sha256 differs from the trial's {expected}")
    return replace(record, artifact=str(target.relative_to(sweep_dir)))


def load_records(sweep_dir: Path) -> list[TrialRecord]:
    """Every recorded trial, the latest line of each. A torn last line (the driver died while writing
    it) is skipped with a warning; its trial is run again on --resume."""
    path = Path(sweep_dir) / RECORDS
    if not path.exists():
        return []
    records: dict[str, TrialRecord] = {}
    lines = path.read_text().splitlines()
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            r = TrialRecord(**json.loads(line))
        except (ValueError, TypeError) as e:
            where = "its last line" if number == len(lines) else f"line {number}"
            log.warning("%s: %s is not a trial record (%s); skipped", path, where, e)
            continue
        records[r.trial_id] = r
    return list(records.values())


def append_record(sweep_dir: Path, record: TrialRecord) -> None:
    """Append one line and fsync it: once this returns, the record survives a crash."""
    append_line(Path(sweep_dir) / RECORDS, json.dumps(asdict(record), sort_keys=True))


class ResultsLog(tune.Callback):
    """Appends each ended trial once (a resumed sweep re-reporting a complete trial writes nothing),
    and at the experiment's end an "interrupted" line for every trial that was still running."""

    # trial ids complete in the journal: read on first use, then kept (a class default, so a callback
    # restored from a sweep saved before this cache starts without it too)
    _complete: set[str] | None = None
    _failed: set[str] | None = None  # failed in the journal when this driver started (read once, on a trial's start)
    _retrying: set[str] | None = None  # of those, the ones this driver started again (--retry-failed)

    def __init__(self, sweep_dir: Path, complete_knobs):
        self.sweep_dir = Path(sweep_dir)
        self.complete_knobs = complete_knobs

    def __getstate__(self) -> dict:  # saved with Tune's experiment state: the journal is read again on resume
        return {**self.__dict__, "_complete": None, "_failed": None, "_retrying": None}

    def _is_complete(self, trial_id: str) -> bool:
        if self._complete is None:
            self._complete = {r.trial_id for r in load_records(self.sweep_dir) if r.complete}
        return trial_id in self._complete

    def _append(self, record: TrialRecord) -> None:
        if self._is_complete(record.trial_id):
            return
        append_record(self.sweep_dir, record)
        self._retrying = (self._retrying or set()) - {record.trial_id}
        if record.complete:
            self._complete.add(record.trial_id)

    def on_trial_start(self, iteration, trials, trial, **info):
        """A trial the journal has as failed starts again only on --retry-failed: until its retry
        ends, it counts as not ended (stopped now, it is "interrupted", to be resumed)."""
        if self._failed is None:
            self._failed = {r.trial_id for r in load_records(self.sweep_dir) if r.status == "failed"}
        if trial.trial_id in self._failed:
            self._retrying = (self._retrying or set()) | {trial.trial_id}

    def on_trial_complete(self, iteration, trials, trial, **info):
        if self._is_complete(trial.trial_id):  # a resumed sweep re-reporting it: its kept file stays as recorded
            return
        self._append(keep_artifact(self.sweep_dir, trial, record_of(trial, self.complete_knobs)))

    def on_trial_error(self, iteration, trials, trial, **info):
        self._append(record_of(trial, self.complete_knobs, "failed"))

    def on_experiment_end(self, trials, **info):
        # Tune stops what still runs at the end (it marks it TERMINATED without a completion event);
        # after a signal it saved those trials as running first, so --resume runs them again.
        ended = {r.trial_id for r in load_records(self.sweep_dir) if r.ended} - (self._retrying or set())
        for trial in trials:
            if trial.trial_id not in ended:
                self._append(record_of(trial, self.complete_knobs, "interrupted"))
