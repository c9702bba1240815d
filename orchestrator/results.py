"""The sweep's own durable record of finished trials: one JSON line per trial, written by the
driver as each trial ends, so no finished result is lost whatever happens to Ray or MLflow later.
`report SWEEP` and the Pareto front read it."""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

from ray import tune

RECORDS = "trials.jsonl"


@dataclass(frozen=True)
class TrialRecord:
    trial_id: str
    status: str  # "complete", "incomplete" (stopped before the end) or "failed"
    knobs: dict
    metrics: dict
    error: str | None = None

    @property
    def complete(self) -> bool:
        return self.status == "complete"


def _plain(result: dict) -> dict:
    out = {}
    for k, v in result.items():
        if isinstance(v, (bool, int, str)) or v is None:
            out[k] = v
        elif isinstance(v, float):
            out[k] = v if math.isfinite(v) else None
    return out


def load_records(sweep_dir: Path) -> list[TrialRecord]:
    """Every recorded trial; a later line for the same trial (a resumed retry) replaces an earlier one."""
    path = Path(sweep_dir) / RECORDS
    if not path.exists():
        return []
    records: dict[str, TrialRecord] = {}
    for line in path.read_text().splitlines():
        if line.strip():
            r = TrialRecord(**json.loads(line))
            records[r.trial_id] = r
    return list(records.values())


class ResultsLog(tune.Callback):
    """Appends each ended trial once; a trial already recorded as complete (a resumed sweep
    re-reporting it) is not written again."""

    def __init__(self, sweep_dir: Path, complete_knobs):
        self.sweep_dir = Path(sweep_dir)
        self.path = self.sweep_dir / RECORDS
        self.complete_knobs = complete_knobs

    def _append(self, record: TrialRecord) -> None:
        if any(r.trial_id == record.trial_id and r.complete for r in load_records(self.sweep_dir)):
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a") as f:
            f.write(json.dumps(asdict(record), sort_keys=True) + "\n")

    def on_trial_complete(self, iteration, trials, trial, **info):
        result = trial.last_result or {}
        status = "complete" if result.get("trial_complete") else "incomplete"
        self._append(TrialRecord(trial.trial_id, status, self.complete_knobs(trial.config), _plain(result)))

    def on_trial_error(self, iteration, trials, trial, **info):
        error = Path(trial.error_file).read_text().strip() if trial.error_file and Path(trial.error_file).exists() else ""
        self._append(TrialRecord(trial.trial_id, "failed", self.complete_knobs(trial.config),
                                 _plain(trial.last_result or {}), error.splitlines()[-1] if error else "unknown error"))
