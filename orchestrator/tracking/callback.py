"""The Tune callback that mirrors each trial into its MLflow child run, from Tune's loop on the
driver. Its writes run on a thread of their own (`_Writer`), so a trial's `tune.report` never waits
for MLflow; a write that fails is logged and left to the journal's backfill (`store`).
"""
from __future__ import annotations

import logging
import queue
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from mlflow.entities import Metric
from ray import tune

from common.redact import redact
from orchestrator.results import TrialRecord, record_of, trial_error
from orchestrator.tracking.names import EPOCH_KEYS, TEACHER_RUN_TAG
from orchestrator.tracking.store import SweepTracking, retried, run_metrics, trial_files
from orchestrator.trial_spec import TrialSpec

log = logging.getLogger(__name__)

OUTAGE_PAUSE_S = 30.0  # after writes gave up, MLflow is not tried again for this long


class _Writer:
    """Runs MLflow writes in order on a thread of its own. Tune's loop is where every trial's
    `tune.report` waits for the driver, and at 200 trials SQLite writes took 70 % of that loop's time
    (py-spy on bench/sweep_scale.py); now a trial waits only for Tune. Its callback starts it with
    the first write and closes it (`MlflowTrialCallback.close`)."""

    def __init__(self):
        self.jobs: queue.Queue = queue.Queue()
        threading.Thread(target=self._work, name="edgesweep-mlflow-writer", daemon=True).start()

    def _work(self) -> None:
        while (job := self.jobs.get()) is not None:
            try:
                job()
            finally:
                self.jobs.task_done()
        self.jobs.task_done()

    def close(self) -> None:
        """Finish what is queued, then end the thread."""
        pending = self.jobs.qsize()
        if pending > 20:
            log.info("writing %d queued trial updates to MLflow", pending)
        self.jobs.put(None)
        self.jobs.join()


class MlflowTrialCallback(tune.Callback):
    """Mirrors every trial into a child run: knobs as params, per-epoch metrics, final metrics,
    the exported artifact and the board's latency report; errors end the run as FAILED.

    Each hook reads what it needs from the trial on Tune's thread and queues the writes on a
    `_Writer`. A write that fails after retries is logged, never raised, and MLflow is then left
    alone for OUTAGE_PAUSE_S (the journal holds what it would have written)."""

    # started by the first hook (a class default, so a callback restored from a sweep saved before the
    # writer existed starts without one too)
    _writer: _Writer | None = None

    def __init__(self, tracking_uri: str, experiment_id: str, parent_run_id: str, complete_knobs,
                 settings: dict | None = None, tags: dict | None = None, dataset: dict | None = None,
                 teacher_runs: dict | None = None):
        self.tracking_uri, self.experiment_id, self.parent_run_id = tracking_uri, experiment_id, parent_run_id
        self.complete_knobs = complete_knobs
        self.settings, self.tags, self.dataset = settings or {}, tags or {}, dataset  # of every trial run
        self.teacher_runs = teacher_runs or {}  # "name@img_size" -> the teacher's run id
        self.missed = 0  # MLflow writes given up on (backfilled later from the journal)
        self.down_until = 0.0  # time.monotonic() until which MLflow is left alone
        self._tracking: SweepTracking | None = None
        self._runs: dict[str, tuple[str, bool]] = {}  # trial id -> (run id, finished); the writer's only

    def __getstate__(self) -> dict:
        """Saved with Tune's experiment state: no client, thread or cached ids, and no password (a resume
        gives the store again: `log_to`)."""
        return {**self.__dict__, "tracking_uri": redact(self.tracking_uri), "_tracking": None, "_runs": {},
                "down_until": 0.0, "_writer": None}

    def log_to(self, tracking_uri: str, experiment_id: str, parent_run_id: str) -> None:
        """Where a resumed sweep logs: its store as the resume found it, which may not be the saved one
        (another URI, a recreated store, a moved sweep's own mlflow.db)."""
        self.tracking_uri, self.experiment_id, self.parent_run_id = tracking_uri, experiment_id, parent_run_id
        self._tracking, self._runs = None, {}

    @property
    def tracking(self) -> SweepTracking:
        if self._tracking is None:
            self._tracking = SweepTracking(self.tracking_uri, self.experiment_id)
        return self._tracking

    def _later(self, what: str, write: Callable[..., None], *args) -> None:
        """Queue `write(*args)` on the writer thread, guarded against an MLflow outage."""
        if self._writer is None:
            self._writer = _Writer()
        self._writer.jobs.put(lambda: self._guarded(what, write, *args))

    def _guarded(self, what: str, write: Callable[..., None], *args) -> None:
        if time.monotonic() < self.down_until:
            self.missed += 1
            return
        try:
            write(*args)
        except Exception as e:  # noqa: BLE001 - MLflow is a mirror: the journal holds the result
            self.missed += 1
            self.down_until = time.monotonic() + OUTAGE_PAUSE_S
            log.warning("MLflow write (%s) failed after retries (%s); the sweep goes on without MLflow for %.0f s, "
                        "and the journal's records are written to MLflow by the next --resume or report",
                        what, e, OUTAGE_PAUSE_S)

    def run_id(self, trial_id: str, config: dict) -> tuple[str, bool]:
        """The trial's run, found or created (on the writer thread)."""
        if trial_id not in self._runs:
            knobs = self.complete_knobs(config)
            teacher = self.teacher_runs.get(TrialSpec.of(knobs).teacher_key)
            tags = {**self.tags, TEACHER_RUN_TAG: teacher} if teacher else self.tags
            run_id, finished = retried(lambda: self.tracking.trial_run(
                self.parent_run_id, trial_id, knobs, self.settings, tags, self.dataset), "finding a trial's run")
            if not finished:
                retried(lambda: self.tracking.client.update_run(run_id, status="RUNNING"), "reopening a run")
            self._runs[trial_id] = (run_id, finished)
        return self._runs[trial_id]

    def on_trial_start(self, iteration, trials, trial, **info):
        self._later("opening a trial's run", self._start, trial.trial_id, dict(trial.config))

    def _start(self, trial_id: str, config: dict) -> None:
        """Open the trial's run; a FAILED one is reopened: the trial failed before and runs again
        (`sweep --resume --retry-failed`), and its run then ends as the retry does."""
        run_id, finished = self.run_id(trial_id, config)
        if finished and retried(lambda: self.tracking.reopen_failed(run_id), "reopening a failed run"):
            self._runs[trial_id] = (run_id, False)

    def on_trial_result(self, iteration, trials, trial, result, **info):
        if result.get("stage") != "train":
            return
        step = int(result["epoch"])
        metrics = {k: v for k, v in result.items() if k in EPOCH_KEYS or k.startswith(("loss_", "val_"))}
        now = int(result.get("timestamp") or time.time()) * 1000
        self._later("logging epoch metrics", self._log_epoch, trial.trial_id, dict(trial.config),
                    run_metrics(metrics, now, step))

    def _log_epoch(self, trial_id: str, config: dict, metrics: list[Metric]) -> None:
        run_id, _ = self.run_id(trial_id, config)
        retried(lambda: self.tracking.client.log_batch(run_id, metrics=metrics), "logging epoch metrics")

    def _end(self, trial_id: str, config: dict, record: TrialRecord, checkpoint=None, error_text: str = "") -> None:
        """Record the trial's end in its run (on the writer thread): the error, or the checkpoint's
        artifact, previews and latency reports."""
        run_id, finished = self.run_id(trial_id, config)
        if finished:  # a resumed sweep re-reports trials whose runs are complete already
            return
        if record.status == "failed":
            with tempfile.TemporaryDirectory() as d:
                path = Path(d) / "error.txt"
                path.write_text(error_text)
                retried(lambda: self.tracking.client.log_artifact(run_id, str(path)), "logging an error")
        if checkpoint is None:
            retried(lambda: self.tracking.record_trial(run_id, record), "recording a trial's end")
        else:
            with checkpoint.as_directory() as d:
                files = trial_files(Path(d))
                retried(lambda: self.tracking.record_trial(run_id, record, files), "recording a trial's end")
        self._runs[trial_id] = (run_id, record.status != "interrupted")

    def on_trial_complete(self, iteration, trials, trial, **info):
        record = record_of(trial, self.complete_knobs)
        checkpoint = trial.checkpoint if record.complete else None
        self._later("recording a trial's end", self._end, trial.trial_id, dict(trial.config), record, checkpoint)

    def on_trial_error(self, iteration, trials, trial, **info):
        text = Path(trial.error_file).read_text() if trial.error_file and Path(trial.error_file).exists() else ""
        self._later("recording a failed trial", self._end, trial.trial_id, dict(trial.config),
                    record_of(trial, self.complete_knobs, "failed"), None,
                    text or f"the trial failed: {trial_error(trial)}")

    def on_experiment_end(self, trials, **info):
        """Trials that never ended (a stopped sweep) get a run that says they were interrupted. Only
        queued: Tune's stop must not wait for MLflow (a hung server); the sweep drains the queue
        within a time budget (`close`, from `Sweep.run`)."""
        for trial in trials:
            self._later("recording an interrupted trial", self._end, trial.trial_id, dict(trial.config),
                        record_of(trial, self.complete_knobs, "interrupted"))

    def close(self) -> None:
        """Wait for every queued write, then end the writer thread (a later write starts another).
        The sweep calls it on every way out, before it reads MLflow back, on a thread it waits for
        at most its MLflow budget (`orchestrator.tracking.deadline`)."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None
