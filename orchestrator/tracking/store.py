"""The sweep's MLflow store: one parent run per sweep, one nested child run per trial, written and
read back through `SweepTracking`. With `orchestrator.tracking.callback` (which calls it), the only
code that talks to MLflow.

Only the driver writes to MLflow (a Tune callback), so trials on remote nodes need no access to
the tracking store and the default SQLite store never sees two writers. Child runs are found again
by their trial-id tag, so a resumed sweep continues its runs instead of duplicating them.

MLflow is a mirror, never the record: the journal (`orchestrator.results`) is written first. A
write that still fails after a few retries (`retried`) is given up, and the next `--resume` or
`report` backfills every journal record MLflow lacks (`SweepTracking.backfill`; per-epoch curves of
that time are lost). On a local store (SQLite or a directory) the experiment keeps its artifacts in
the sweep directory; a tracking server keeps its own artifact store.

Each complete trial's artifact (a file of an export format, `trainables.export.registry`) is an MLflow
LoggedModel of its run (the ONNX flavour for an ONNX Runtime file, so `mlflow.onnx.load_model` takes
it back; a plain LoggedModel holding the file for the others, such as `.tflite`), and the
Pareto front's models are versions of a registered model named after the sweep, tagged with the
objectives they win; a version that left the front is tagged `edgesweep.pareto=false`.
"""
from __future__ import annotations

import json
import logging
import math
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

from mlflow.entities import LoggedModelOutput, LoggedModelStatus, Metric, Param, RunTag
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID, MLFLOW_RUN_NAME

from common.redact import redact_tree
from device_actors.npu.placement import TABLE_FILE as NPU_TABLE
from orchestrator.results import TrialRecord
from orchestrator.tracking.filters import tag_filter, tag_matches
from orchestrator.tracking.names import (EPOCH_KEYS, ERROR_TAG, FINISHED_TAG, FORMAT_TAG, PARETO_TAG, RETIMED_TAG,
                                         RETRIED_TAG,
                                         SHA256_TAG, STATUS_TAG, SWEEP_TAG, TEACHER_TAG, TRIAL_TAG, WINS_TAG, metric_name,
                                         result_tags, run_name)
from trainables.export.registry import FORMATS, suffixes

log = logging.getLogger(__name__)

RETRY_DELAYS_S = (0.5, 1.0, 2.0)
REMOTE_SCHEMES = ("http://", "https://", "databricks")
T = TypeVar("T")


def is_remote(tracking_uri: str) -> bool:
    return tracking_uri.startswith(REMOTE_SCHEMES)


def retried(call: Callable[[], T], what: str) -> T:
    """`call()`, retried after short waits: a busy SQLite file or a restarting server often recovers."""
    for delay in RETRY_DELAYS_S:
        try:
            return call()
        except Exception as e:  # noqa: BLE001 - MLflow raises many types; the last attempt re-raises
            log.debug("MLflow %s failed (%s); retrying in %.1f s", what, e, delay)
            time.sleep(delay)
    return call()




def _onnx_flavoured(path: Path) -> bool:
    """Whether MLflow's ONNX flavour logs the file: a format the registry gives that flavour has its suffix."""
    return path.suffix in {f.suffix for f in FORMATS.values() if f.mlflow_flavor == "onnx"}


def trial_files(checkpoint_dir: Path) -> list[Path]:
    """The files of a trial's checkpoint that its run keeps (`SweepTracking.record_trial`): the
    artifact, its previews (.png), export.json, the board's latency reports (latency-NAME.json) and the
    artifact's operators under the NPU profile (npu-placement.txt)."""
    return [f for f in sorted(Path(checkpoint_dir).iterdir())
            if f.suffix in {*suffixes(), ".png"} or f.name in ("export.json", NPU_TABLE)
            or (f.name.startswith("latency") and f.suffix == ".json")]


def run_metrics(values: dict, timestamp_ms: int, step: int) -> list[Metric]:
    """The finite numbers of `values` that are metrics, under their MLflow names (`names.metric_name`)."""
    return [Metric(name, v, timestamp_ms, step) for k, v in _finite(values).items()
            if (name := metric_name(k)) is not None]


def _finite(metrics: dict) -> dict[str, float]:
    out = {}
    for k, v in metrics.items():
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            continue
        if math.isfinite(v):
            out[k] = float(v)
    return out


class SweepTracking:
    """The sweep's parent run: config, search space, final Pareto table and plots; and the trial
    runs as the journal records them."""

    def __init__(self, tracking_uri: str, experiment_id: str):
        self.tracking_uri, self.experiment_id = tracking_uri, experiment_id
        self.client = MlflowClient(tracking_uri=tracking_uri)

    @classmethod
    def open(cls, tracking_uri: str, experiment: str, *, artifact_dir: Path | None = None) -> "SweepTracking":
        """The sweep's experiment, created on first use; on a local store its artifacts go to `artifact_dir`."""
        client = MlflowClient(tracking_uri=tracking_uri)
        found = client.get_experiment_by_name(experiment)
        local = artifact_dir is not None and not is_remote(tracking_uri)
        if found is None:
            location = Path(artifact_dir).resolve().as_uri() if local else None
            return cls(tracking_uri, client.create_experiment(experiment, artifact_location=location))
        if local and not found.artifact_location.startswith(Path(artifact_dir).resolve().as_uri()):
            # MLflow stores an experiment's artifact location as an absolute URI and cannot change it
            # (mlflow/mlflow#8226): a sweep copied or moved with its own mlflow.db still points at the old place.
            log.warning("MLflow experiment %r keeps its artifacts in %s, outside this sweep's directory, and MLflow "
                        "cannot move that location; new artifacts go there. If the sweep was copied or moved, delete "
                        "its mlflow.db (and mlartifacts) before resuming: the resume rebuilds the store here from the "
                        "journal. Else give the sweep its own mlflow.experiment", experiment, found.artifact_location)
        return cls(tracking_uri, found.experiment_id)

    def parent_run(self, name: str, sweep_dir: Path, *, resume: bool, run_id: str | None = None) -> tuple[str, bool]:
        """(run id, whether it is new) of this sweep directory's parent run. A resume reuses `run_id`
        (sweep.json's) when this store holds it in the sweep's experiment, else the latest run tagged
        with the directory; a store without either (another URI, a deleted mlflow.db) gets a new one."""
        if resume:
            found = self._run_in_experiment(run_id) if run_id else None
            if found is None:
                runs = tag_matches(self.client.search_runs([self.experiment_id], tag_filter(SWEEP_TAG, str(sweep_dir)),
                                                           order_by=["attributes.start_time DESC"], max_results=100),
                                   SWEEP_TAG, str(sweep_dir))  # a path may hold quotes
                found = runs[0].info.run_id if runs else None
            if found is not None:
                self.client.update_run(found, status="RUNNING")
                self.client.set_tag(found, SWEEP_TAG, str(sweep_dir))  # where it is now, if it moved
                return found, False
        run = self.client.create_run(self.experiment_id, run_name=name, tags={SWEEP_TAG: str(sweep_dir)})
        return run.info.run_id, True

    def _run_in_experiment(self, run_id: str) -> str | None:
        try:
            run = self.client.get_run(run_id)
        except MlflowException:
            return None
        usable = run.info.experiment_id == self.experiment_id and run.info.lifecycle_stage == "active"
        return run_id if usable else None

    def log_config(self, run_id: str, config: dict, space: dict) -> None:
        """The sweep's config (passwords in URIs hidden: `common.redact`) and search space on its run."""
        config = redact_tree(config)
        flat = {f"sweep.{k}": v for k, v in config.get("searcher", {}).items()}
        flat.update({"sweep.name": config.get("name"), "sweep.objectives": json.dumps(config.get("objectives"))})
        self.client.log_batch(run_id, params=[Param(k, str(v)[:6000]) for k, v in flat.items()])
        self.client.log_dict(run_id, config, "config.json")
        self.client.log_dict(run_id, space, "search_space.json")

    def teacher_run(self, parent_run_id: str, key: str, description: str, tags: dict) -> str:
        """The run of a teacher ("s@128" -> "teacher s · YOLO-s, 10 epochs · 128px"), nested under the
        sweep's run; found again on resume. Trials that distil from it carry its id as a tag."""
        runs = self.client.search_runs([self.experiment_id], f"tags.`{TEACHER_TAG}` = '{key}' and "
                                                             f"tags.`{MLFLOW_PARENT_RUN_ID}` = '{parent_run_id}'",
                                       max_results=1)
        if runs:
            return runs[0].info.run_id
        name, size = key.split("@")
        run = self.client.create_run(self.experiment_id, tags={
            **tags, MLFLOW_PARENT_RUN_ID: parent_run_id, TEACHER_TAG: key,
            MLFLOW_RUN_NAME: f"teacher {name} · {description} · {size}px"})
        return run.info.run_id

    def log_teacher(self, run_id: str, metrics: dict) -> None:
        """A trained teacher's val metrics (of the PyTorch model) on its run, which then ends."""
        if self.client.get_run(run_id).info.status == "FINISHED":
            return
        now = int(time.time() * 1000)
        self.client.log_batch(run_id, metrics=run_metrics({f"val_{k}": v for k, v in metrics.items()}, now, 0))
        self.client.set_terminated(run_id, status="FINISHED")

    def log_report(self, run_id: str, files: list[Path], summary: dict) -> None:
        for f in files:
            self.client.log_artifact(run_id, str(f), artifact_path="report")
        self.client.log_batch(run_id, metrics=[Metric(k, v, 0, 0) for k, v in _finite(summary).items()])

    # ---- trial runs --------------------------------------------------------------------------

    def trial_run(self, parent_run_id: str, trial_id: str, knobs: dict, settings: dict | None = None,
                  tags: dict | None = None, dataset: dict | None = None) -> tuple[str, bool]:
        """(run id, whether it already holds the trial's end) of a trial's child run, created the
        first time with its name, the knobs and the sweep's `settings` as params, `tags` and the
        `dataset` input (see `log_dataset`)."""
        runs = self.client.search_runs([self.experiment_id], f"tags.`{TRIAL_TAG}` = '{trial_id}' and "
                                                             f"tags.`{MLFLOW_PARENT_RUN_ID}` = '{parent_run_id}'",
                                       max_results=1)
        if runs:  # both marks: a write cut between the tag and the status (an outage) is done again
            run = runs[0]
            return run.info.run_id, run.data.tags.get(FINISHED_TAG) == "true" and run.info.status in ("FINISHED", "FAILED")
        run = self.client.create_run(self.experiment_id, tags={
            **(tags or {}), MLFLOW_PARENT_RUN_ID: parent_run_id, TRIAL_TAG: trial_id, MLFLOW_RUN_NAME: run_name(knobs)})
        params = [Param(k, str(v)[:6000]) for k, v in sorted({**(settings or {}), **knobs}.items())]
        for i in range(0, len(params), 100):  # MLflow takes at most 100 params per batch
            self.client.log_batch(run.info.run_id, params=params[i:i + 100])
        if dataset:
            self.log_dataset(run.info.run_id, dataset)
        return run.info.run_id, False

    def log_dataset(self, run_id: str, dataset: dict) -> None:
        """The data set as the run's MLflow dataset input: {"name", "source" (a path or URI), "digest"}."""
        import warnings

        from mlflow.data.dataset_source_registry import resolve_dataset_source
        from mlflow.data.meta_dataset import MetaDataset
        from mlflow.entities import DatasetInput, InputTag

        with warnings.catch_warnings():  # a local path matches two equal local-artifact sources
            warnings.simplefilter("ignore")
            source = resolve_dataset_source(str(dataset["source"]))
        entity = MetaDataset(source, name=dataset["name"], digest=dataset["digest"])._to_mlflow_entity()
        self.client.log_inputs(run_id, datasets=[DatasetInput(entity, tags=[InputTag("mlflow.data.context", "train+val")])])

    def mark_front(self, runs: dict[str, str], front: Sequence[TrialRecord]) -> None:
        """Tag every trial run edgesweep.pareto=true or false, as the report's front says now."""
        on = {r.trial_id for r in front}
        for trial_id, run_id in runs.items():
            self.client.set_tag(run_id, PARETO_TAG, str(trial_id in on).lower())

    def log_retimed(self, run_id: str, record: TrialRecord) -> None:
        """A front trial's latencies timed again at the sweep's end (`orchestrator.retime`): the run's
        board metrics take the new values (their history keeps the first) and a tag says so."""
        keys = [k for k in record.metrics if k.startswith("latency") or k == "fps"]
        self.client.log_batch(run_id, metrics=run_metrics({k: record.metrics[k] for k in keys},
                                                          int(time.time() * 1000), 1),
                              tags=[RunTag(RETIMED_TAG, "true")])

    def record_trial(self, run_id: str, record: TrialRecord, files: Sequence[Path] = ()) -> None:
        """Write a trial's end as the journal holds it (plus its artifact files) and close its run."""
        if record.status == "interrupted":
            self.client.set_tag(run_id, STATUS_TAG, "interrupted: it runs again on --resume")
            self.client.set_terminated(run_id, status="KILLED")
            return
        if record.status == "failed":
            self.client.set_tag(run_id, ERROR_TAG, (record.error or "unknown")[:4000])
            self.client.set_terminated(run_id, status="FAILED")
            self.client.set_tag(run_id, FINISHED_TAG, "true")
            return
        if not record.complete:
            self.client.set_tag(run_id, STATUS_TAG, "stopped before the end")
            self.client.set_terminated(run_id, status="KILLED")
            return
        m = record.metrics
        final = {k: v for k, v in m.items() if not k.startswith(("loss_", "val_")) and k not in EPOCH_KEYS}
        self.client.log_batch(run_id, metrics=run_metrics(final, int(time.time() * 1000), int(m.get("epoch") or 0)),
                              tags=[RunTag(k, v) for k, v in result_tags(m).items()])
        for f in files:
            if f.suffix in suffixes():
                self.log_model(run_id, f, record)
                continue
            if f.name == "latency.json":  # the runtime versions the board timed with
                report = json.loads(f.read_text())
                versions = {f"board.{k}_version": str(v) for k, v in (report.get("runtime_versions") or {}).items()}
                versions[f"board.{report.get('runtime')}_version"] = str(report.get("runtime_version"))
                self.client.log_batch(run_id, params=[Param(k, v) for k, v in sorted(versions.items())])
            self.client.log_artifact(run_id, str(f), artifact_path="detections" if f.suffix == ".png" else None)
        self.client.set_terminated(run_id, status="FINISHED")
        self.client.set_tag(run_id, FINISHED_TAG, "true")  # last: a run with this tag holds the trial's end

    def reopen_failed(self, run_id: str) -> bool:
        """Reopen a FAILED trial run for its retry (`sweep --resume --retry-failed`): RUNNING again,
        its error kept as `edgesweep.retried_after`; the retry's end closes it as any trial's does.
        One run per trial either way, so `trial_runs` and the report name one run. False when the
        run did not fail."""
        run = self.client.get_run(run_id)
        if run.info.status != "FAILED":
            return False
        self.client.set_tag(run_id, RETRIED_TAG, run.data.tags.get(ERROR_TAG, "unknown")[:4000])
        for tag in (FINISHED_TAG, ERROR_TAG):
            if tag in run.data.tags:
                self.client.delete_tag(run_id, tag)
        self.client.update_run(run_id, status="RUNNING")
        return True

    def log_model(self, run_id: str, path: Path, record: TrialRecord) -> str:
        """The trial's artifact as a LoggedModel of its run; returns the model id."""
        m = record.metrics
        model = self.client.create_logged_model(
            self.experiment_id, name=f"trial-{record.trial_id}", source_run_id=run_id,
            model_type=path.suffix.lstrip("."), params={k: str(v) for k, v in sorted(record.knobs.items())},
            tags={TRIAL_TAG: record.trial_id, FORMAT_TAG: str(m.get("format")),
                  SHA256_TAG: str(m.get("artifact_sha256"))})
        with tempfile.TemporaryDirectory(prefix="edgesweep-model-") as d:
            if _onnx_flavoured(path):
                import onnx
                import onnxruntime
                import mlflow.onnx
                from mlflow.models import Model

                mlflow.onnx.save_model(onnx.load(str(path)), f"{d}/model", save_as_external_data=False,
                                       pip_requirements=[f"onnxruntime=={onnxruntime.__version__}"],
                                       mlflow_model=Model(model_id=model.model_id, run_id=run_id,
                                                          artifact_path=model.artifact_location))
                self.client.log_model_artifacts(model.model_id, f"{d}/model")
            else:  # no MLflow flavour runs TFLite: the file itself, with its hash beside it
                self.client.log_model_artifact(model.model_id, str(path))
        self.client.finalize_logged_model(model.model_id, LoggedModelStatus.READY)
        self.client.log_outputs(run_id, [LoggedModelOutput(model.model_id, step=0)])
        return model.model_id

    def trial_runs(self, parent_run_id: str) -> dict[str, str]:
        """Trial id -> MLflow run id of the sweep's child runs."""
        runs = self.client.search_runs([self.experiment_id], f"tags.`{MLFLOW_PARENT_RUN_ID}` = '{parent_run_id}'",
                                       max_results=50000)
        return {r.data.tags[TRIAL_TAG]: r.info.run_id for r in runs if TRIAL_TAG in r.data.tags}

    def _model_of(self, run_id: str) -> str | None:
        outputs = self.client.get_run(run_id).outputs
        return outputs.model_outputs[0].model_id if outputs and outputs.model_outputs else None

    def register_front(self, name: str, front: Sequence[TrialRecord], objectives: Sequence[tuple[str, str]],
                       runs: dict[str, str]) -> list[int]:
        """Register the front's models as versions of the model `name` (once each), tagged with the
        objectives each one wins among the front; earlier versions no longer on it get pareto=false.
        Returns the front's version numbers."""
        try:
            self.client.create_registered_model(name, description=f"The Pareto front of the EdgeSweep sweep {name}")
        except MlflowException as e:
            if e.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
        versions = {v.run_id: v for v in self.client.search_model_versions(f"name = '{name}'")}
        numbers, on_front = [], set()
        for r in front:
            run_id = runs.get(r.trial_id)
            model_id = self._model_of(run_id) if run_id else None
            if model_id is None:  # its run or model was never written (MLflow was down): the next report does it
                continue
            on_front.add(run_id)
            wins = [metric for metric, mode in objectives
                    if float(r.metrics[metric]) == (max if mode == "max" else min)(float(f.metrics[metric]) for f in front)]
            tags = {PARETO_TAG: "true", WINS_TAG: ",".join(wins) or "trade-off", TRIAL_TAG: r.trial_id}
            version = versions.get(run_id)
            if version is None:
                # the artifact location, not models:/<id>: MLflow's SQL registry resolves that through the
                # process-wide tracking URI, not this client's
                source = self.client.get_logged_model(model_id).artifact_location
                version = self.client.create_model_version(name, source=source, run_id=run_id, model_id=model_id,
                                                           tags=tags)
            else:
                for k, v in tags.items():
                    self.client.set_model_version_tag(name, version.version, k, v)
            numbers.append(int(version.version))
        for run_id, version in versions.items():
            if run_id not in on_front:
                self.client.set_model_version_tag(name, version.version, PARETO_TAG, "false")
                self.client.set_model_version_tag(name, version.version, WINS_TAG, "")
        return numbers

    def backfill(self, parent_run_id: str, records: Sequence[TrialRecord], sweep_dir: Path | None = None) -> int:
        """Give every journal record a child run that holds its end (what failed MLflow writes missed),
        with its artifact from `sweep_dir/models/` where the journal names one. Returns how many runs it wrote."""
        written = 0
        for record in records:
            run_id, finished = self.trial_run(parent_run_id, record.trial_id, record.knobs)
            if not finished and record.status != "interrupted":
                kept = Path(sweep_dir) / record.artifact if sweep_dir is not None and record.artifact else None
                self.record_trial(run_id, record, [kept] if kept is not None and kept.exists() else [])
                written += 1
        if written:
            log.info("MLflow: wrote %d trial run(s) from the journal that earlier MLflow writes had missed", written)
        return written

    def close_parent(self, run_id: str, records: Sequence[TrialRecord], trials: int) -> None:
        """End a parent run that its driver left RUNNING (MLflow was down at the sweep's end):
        FINISHED when every trial ended, else KILLED (the sweep is to be resumed)."""
        if self.client.get_run(run_id).info.status == "RUNNING":
            self.finish(run_id, "FINISHED" if sum(r.ended for r in records) >= trials else "KILLED")

    def close_orphans(self, run_id: str, reason: str) -> int:
        """Mark child runs still RUNNING as KILLED, saying why (an interrupted sweep, a crashed driver)."""
        orphans = self.client.search_runs([self.experiment_id], f"tags.`{MLFLOW_PARENT_RUN_ID}` = '{run_id}' "
                                                                "and attributes.status = 'RUNNING'")
        for run in orphans:
            self.client.set_tag(run.info.run_id, STATUS_TAG, reason)
            self.client.set_terminated(run.info.run_id, status="KILLED")
        return len(orphans)

    def finish(self, run_id: str, status: str) -> None:
        """End the parent run: FINISHED, FAILED, or KILLED for an interrupted sweep."""
        self.client.set_terminated(run_id, status=status)

