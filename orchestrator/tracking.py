"""MLflow: one parent run per sweep, one nested child run per trial. All MLflow calls live here.

Only the driver writes to MLflow (a Tune callback), so trials on remote nodes need no access to
the tracking store and the default SQLite store never sees two writers. Child runs are found again
by their trial-id tag, so a resumed sweep continues its runs instead of duplicating them.
"""
from __future__ import annotations

import json
import logging
import math
import sys
import tempfile
from pathlib import Path

from mlflow.entities import Metric, Param, RunStatus, RunTag
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID, MLFLOW_RUN_NAME
from ray import tune

log = logging.getLogger(__name__)

SWEEP_TAG = "edgesweep.sweep_dir"
TRIAL_TAG = "edgesweep.trial_id"
EPOCH_KEYS = ("epoch", "lr", "images_per_second")  # per-epoch metrics besides loss_* and val_*
FINAL_METRICS = ("map50_95", "map50", "precision", "recall", "latency_ms", "latency_p90_ms", "latency_cv", "fps",
                 "size_mb")  # of the artifact on the board; the float model's val metrics come as float_*


def ui_url(tracking_uri: str, experiment_id: str) -> str:
    """Where to look: the MLflow 3 UI opens experiments on a GenAI page; /runs is the training table."""
    return f"http://127.0.0.1:5000/#/experiments/{experiment_id}/runs"


def ui_command(tracking_uri: str) -> str:
    """The command that opens the MLflow UI on this store, on loopback only (MLflow has no login)."""
    mlflow_bin = Path(sys.prefix) / "bin" / "mlflow"  # the environment's own mlflow, activated or not
    program = str(mlflow_bin) if mlflow_bin.exists() else "mlflow"
    return f"{program} ui --backend-store-uri {tracking_uri} --host 127.0.0.1 --port 5000"


def _finite(metrics: dict) -> dict[str, float]:
    out = {}
    for k, v in metrics.items():
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            continue
        if math.isfinite(v):
            out[k] = float(v)
    return out


class SweepTracking:
    """The sweep's parent run: config, search space, final Pareto table and plots."""

    def __init__(self, tracking_uri: str, experiment: str):
        self.tracking_uri = tracking_uri
        self.client = MlflowClient(tracking_uri=tracking_uri)
        found = self.client.get_experiment_by_name(experiment)
        self.experiment_id = found.experiment_id if found else self.client.create_experiment(experiment)

    def parent_run(self, name: str, sweep_dir: Path, *, resume: bool) -> str:
        """The parent run of this sweep directory: reused on resume, else a new one."""
        if resume:
            runs = self.client.search_runs([self.experiment_id], f"tags.`{SWEEP_TAG}` = '{sweep_dir}'",
                                           order_by=["attributes.start_time DESC"], max_results=1)
            if runs:
                self.client.update_run(runs[0].info.run_id, status="RUNNING")
                return runs[0].info.run_id
        run = self.client.create_run(self.experiment_id, run_name=name, tags={SWEEP_TAG: str(sweep_dir)})
        return run.info.run_id

    def log_config(self, run_id: str, config: dict, space: dict) -> None:
        flat = {f"sweep.{k}": v for k, v in config.get("searcher", {}).items()}
        flat.update({"sweep.name": config.get("name"), "sweep.objectives": json.dumps(config.get("objectives"))})
        self.client.log_batch(run_id, params=[Param(k, str(v)[:6000]) for k, v in flat.items()])
        self.client.log_dict(run_id, config, "config.json")
        self.client.log_dict(run_id, space, "search_space.json")

    def log_teacher(self, run_id: str, name: str, metrics: dict) -> None:
        self.client.log_batch(run_id, metrics=[Metric(f"teacher_{name}_{k}", v, 0, 0)
                                               for k, v in _finite(metrics).items()])

    def log_report(self, run_id: str, files: list[Path], summary: dict) -> None:
        for f in files:
            self.client.log_artifact(run_id, str(f), artifact_path="report")
        self.client.log_batch(run_id, metrics=[Metric(k, v, 0, 0) for k, v in _finite(summary).items()])

    def close_orphans(self, run_id: str) -> int:
        """Child runs still RUNNING once the sweep is over belonged to trials a crashed driver had
        started but never saved; the resumed sweep ran them under new ids. Mark them KILLED."""
        orphans = self.client.search_runs([self.experiment_id], f"tags.`{MLFLOW_PARENT_RUN_ID}` = '{run_id}' "
                                                                "and attributes.status = 'RUNNING'")
        for run in orphans:
            self.client.set_tag(run.info.run_id, "edgesweep.status", "interrupted: its driver stopped first")
            self.client.set_terminated(run.info.run_id, status="KILLED")
        return len(orphans)

    def finish(self, run_id: str, ok: bool) -> None:
        self.client.set_terminated(run_id, status="FINISHED" if ok else "FAILED")


class MlflowTrialCallback(tune.Callback):
    """Mirrors every trial into a child run: knobs as params, per-epoch metrics, final metrics,
    the exported artifact and the board's latency report; errors end the run as FAILED."""

    def __init__(self, tracking_uri: str, experiment_id: str, parent_run_id: str, complete_knobs):
        self.tracking_uri, self.experiment_id, self.parent_run_id = tracking_uri, experiment_id, parent_run_id
        self.complete_knobs = complete_knobs
        self._client: MlflowClient | None = None
        self._runs: dict[str, str] = {}

    @property
    def client(self) -> MlflowClient:
        if self._client is None:
            self._client = MlflowClient(tracking_uri=self.tracking_uri)
        return self._client

    def run_id(self, trial) -> str:
        if trial.trial_id in self._runs:
            return self._runs[trial.trial_id]
        runs = self.client.search_runs([self.experiment_id],
                                       f"tags.`{TRIAL_TAG}` = '{trial.trial_id}' and "
                                       f"tags.`{MLFLOW_PARENT_RUN_ID}` = '{self.parent_run_id}'", max_results=1)
        if runs:
            run_id = runs[0].info.run_id
            if runs[0].data.tags.get("edgesweep.finished") != "true":
                self.client.update_run(run_id, status="RUNNING")
        else:
            run = self.client.create_run(self.experiment_id, tags={
                MLFLOW_PARENT_RUN_ID: self.parent_run_id, TRIAL_TAG: trial.trial_id,
                MLFLOW_RUN_NAME: f"trial-{trial.trial_id}"})
            run_id = run.info.run_id
            knobs = self.complete_knobs(trial.config)
            self.client.log_batch(run_id, params=[Param(k, str(v)) for k, v in sorted(knobs.items())])
        self._runs[trial.trial_id] = run_id
        return run_id

    def _finished_before(self, run_id: str) -> bool:
        """A resumed sweep re-reports trials that had finished; their runs are complete already."""
        return self.client.get_run(run_id).data.tags.get("edgesweep.finished") == "true"

    def on_trial_start(self, iteration, trials, trial, **info):
        self.run_id(trial)

    def on_trial_result(self, iteration, trials, trial, result, **info):
        if result.get("stage") != "train":
            return
        step = int(result["epoch"])
        metrics = {k: v for k, v in result.items()
                   if k in EPOCH_KEYS or k.startswith(("loss_", "val_"))}
        now = int(result.get("timestamp", 0) * 1000)
        self.client.log_batch(self.run_id(trial), metrics=[Metric(k, v, now, step)
                                                           for k, v in _finite(metrics).items()])

    def on_trial_complete(self, iteration, trials, trial, **info):
        result = trial.last_result
        run_id = self.run_id(trial)
        if self._finished_before(run_id):
            return
        if not result.get("trial_complete"):
            self.client.set_tag(run_id, "edgesweep.status", "stopped before the end")
            self.client.set_terminated(run_id, status=RunStatus.to_string(RunStatus.KILLED))
            return
        final = {k: v for k, v in result.items() if k in FINAL_METRICS or k.startswith("float_")}
        self.client.log_batch(run_id, metrics=[Metric(k, v, 0, int(result["epoch"]))
                                               for k, v in _finite(final).items()],
                              tags=[RunTag("format", str(result.get("format"))),
                                    RunTag("stand_in_stages", str(result.get("stand_in"))),
                                    RunTag("board_emulated", str(result.get("board_emulated"))),
                                    RunTag("artifact_sha256", str(result.get("artifact_sha256")))])
        if trial.checkpoint is not None:
            with trial.checkpoint.as_directory() as d:
                for f in sorted(Path(d).iterdir()):
                    if f.suffix in {".onnx", ".tflite"}:
                        self.client.log_artifact(run_id, str(f), artifact_path="model")
                    elif f.name in {"latency.json", "export.json"}:
                        self.client.log_artifact(run_id, str(f))
        self.client.set_tag(run_id, "edgesweep.finished", "true")
        self.client.set_terminated(run_id, status="FINISHED")

    def on_trial_error(self, iteration, trials, trial, **info):
        run_id = self.run_id(trial)
        error = ""
        if trial.error_file and Path(trial.error_file).exists():
            error = Path(trial.error_file).read_text()
        self.client.set_tag(run_id, "edgesweep.error", error.strip().splitlines()[-1][:4000] if error else "unknown")
        with tempfile.TemporaryDirectory() as d:
            path = Path(d) / "error.txt"
            path.write_text(error or "the trial failed without an error file")
            self.client.log_artifact(run_id, str(path))
        self.client.set_terminated(run_id, status="FAILED")
