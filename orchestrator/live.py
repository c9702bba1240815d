"""The live view of a running sweep: every trial's state, epoch and scores, and the best so far."""
from __future__ import annotations

import math
import time
from pathlib import Path

from ray import tune
from rich.console import Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from orchestrator.console import console
from orchestrator.results import load_records
from orchestrator.trial_spec import TrialSpec


def _num(v, digits: int = 3) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "-"
    return f"{v:.{digits}f}" if isinstance(v, float) else str(v)


class LiveProgress(tune.Callback):
    """A Tune callback that redraws a table in the terminal (or logs lines when not a terminal)."""

    sweep_dir: Path | None = None  # a class default: a view saved by an older sweep restores from Tune's trials

    def __init__(self, total: int, complete_knobs, title: str, sweep_dir: Path | None = None):
        self.total, self.complete_knobs, self.title, self.sweep_dir = total, complete_knobs, title, sweep_dir
        self.rows: dict[str, dict] = {}
        self.started = time.monotonic()
        self._live: Live | None = None
        self._last_draw = 0.0
        self._restored = False

    def setup(self, **info):
        self.started = time.monotonic()
        self._live = Live(self._render(), console=console, refresh_per_second=2, transient=False)
        self._live.start()

    def _row(self, trial) -> dict:
        return self._row_of(trial.trial_id, self.complete_knobs(trial.config))

    def _row_of(self, trial_id: str, knobs: dict) -> dict:
        if trial_id not in self.rows:
            spec = TrialSpec.of(knobs)
            self.rows[trial_id] = {
                "kd": spec.kd_name(teacher=True),
                "format": spec.format, "state": "PENDING", "epoch": "-",
                "val": None, "map": None, "lat": None, "stage": ""}
        return self.rows[trial_id]

    def _render(self):
        table = Table(title=self.title, title_justify="left", expand=False)
        for col in ("trial", "state", "stage", "KD", "artifact", "epoch", "val mAP", "mAP@.5:.95", "latency ms"):
            table.add_column(col, justify="right" if col in {"epoch", "val mAP", "mAP@.5:.95", "latency ms"} else "left")
        for tid, r in self.rows.items():
            table.add_row(tid, r["state"], r["stage"], r["kd"], r["format"], r["epoch"], _num(r["val"]),
                          _num(r["map"]), _num(r["lat"], 2))
        done = [r for r in self.rows.values() if r["map"] is not None]
        best_map = max(done, key=lambda r: r["map"], default=None)
        best_lat = min(done, key=lambda r: r["lat"], default=None)
        states = {}
        for r in self.rows.values():
            states[r["state"]] = states.get(r["state"], 0) + 1
        summary = (f"{len(done)}/{self.total} trials done  " + "  ".join(f"{k.lower()} {v}" for k, v in states.items())
                   + f"  elapsed {time.monotonic() - self.started:.0f}s")
        if best_map:
            summary += (f"\nbest so far: mAP {best_map['map']:.3f} ({best_map['kd']}, {best_map['format']})"
                        f"  fastest: {best_lat['lat']:.2f} ms ({best_lat['kd']}, {best_lat['format']})")
        return Group(table, Text(summary))

    def _draw(self, force: bool = False) -> None:
        now = time.monotonic()
        if self._live is not None and (force or now - self._last_draw > 0.5):
            self._live.update(self._render())
            self._last_draw = now

    def _restore(self, trials) -> None:
        """On a resumed sweep, show the trials that finished before the restart (they get no more events):
        the journal's, as Tune's saved state may predate the last of them."""
        if self._restored:
            return
        self._restored = True
        if self.sweep_dir is not None:
            for record in load_records(self.sweep_dir):
                if record.ended:
                    row = self._row_of(record.trial_id, record.knobs)
                    self._update(row, record.metrics)
                    row["state"] = "FAILED" if record.status == "failed" else "DONE"
            self._draw(force=True)
            return
        for trial in trials:
            if trial.status in ("TERMINATED", "ERROR"):
                self._update(self._row(trial), trial.last_result or {})
                self._row(trial)["state"] = "DONE" if trial.status == "TERMINATED" else "FAILED"
        self._draw(force=True)

    def on_step_begin(self, iteration, trials, **info):
        self._restore(trials)

    def on_trial_start(self, iteration, trials, trial, **info):
        self._row(trial)["state"] = "RUNNING"
        self._draw()

    def on_trial_result(self, iteration, trials, trial, result, **info):
        self._update(self._row(trial), result)
        self._draw()

    @staticmethod
    def _update(r: dict, result: dict) -> None:
        r["stage"] = result.get("stage", "")
        r["epoch"] = f"{result.get('epoch', '-')}/{result.get('epochs', '-')}"
        r["val"] = result.get("val_map50_95", r["val"])
        if result.get("trial_complete"):
            r["map"], r["lat"] = result["map50_95"], result["latency_ms"]

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._row(trial)["state"] = "DONE"
        self._draw(force=True)

    def on_trial_error(self, iteration, trials, trial, **info):
        self._row(trial)["state"] = "FAILED"
        self._draw(force=True)

    def on_experiment_end(self, trials, **info):
        self._restore(trials)  # a resumed sweep that had nothing left to run never took a step
        self._draw(force=True)
        if self._live is not None:
            self._live.stop()
            if not console.is_terminal:  # rich ends a non-terminal Live without a newline
                console.line()
