"""MLflow: one parent run per sweep, one nested child run per trial. All MLflow calls live here.

Only the driver writes to MLflow (a Tune callback), so trials on remote nodes need no access to
the tracking store and the default SQLite store never sees two writers. Child runs are found again
by their trial-id tag, so a resumed sweep continues its runs instead of duplicating them.

MLflow is a mirror, never the record: the journal (`orchestrator.results`) is written first. A
write that still fails after a few retries is logged and skipped, MLflow is left alone for a while
(an outage must not stall every trial by the retries), the sweep goes on, and the next `--resume`
or `report` backfills every journal record MLflow lacks (per-epoch curves of that time are lost). On a local store (SQLite or a
directory) the experiment keeps its artifacts in the sweep directory; a tracking server keeps its
own artifact store.

Each complete trial's artifact is an MLflow LoggedModel of its run (the ONNX flavour for `.onnx`, so
`mlflow.onnx.load_model` takes it back; a plain LoggedModel holding the file for `.tflite`), and the
Pareto front's models are versions of a registered model named after the sweep, tagged with the
objectives they win; a version that left the front is tagged `edgesweep.pareto=false`.
"""
from __future__ import annotations

import json
import logging
import math
import queue
import sys
import tempfile
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar
from urllib.parse import quote, urlencode

from mlflow.entities import LoggedModelOutput, LoggedModelStatus, Metric, Param, RunTag
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID, MLFLOW_RUN_NAME
from ray import tune

from orchestrator.config import PER_BOARD
from orchestrator.results import TrialRecord, record_of, trial_error

log = logging.getLogger(__name__)

SWEEP_TAG = "edgesweep.sweep_dir"
TRIAL_TAG = "edgesweep.trial_id"
FINISHED_TAG = "edgesweep.finished"
TEACHER_TAG = "edgesweep.teacher"  # on a teacher's run: "name@img_size"
TEACHER_RUN_TAG = "edgesweep.teacher_run_id"  # on a distilled trial's run: its teacher's run
EPOCH_KEYS = ("lr", "images_per_second")  # per-epoch metrics besides loss_* and val_* (the epoch is the step)
ARTIFACT_METRICS = ("map50_95", "map50", "precision", "recall", "size_mb")  # the exported file, scored in its runtime
BOARD_METRICS = ("latency_ms", "latency_p90_ms", "latency_cv", "fps", "board_map50_95", "board_map50")
RETRY_DELAYS_S = (0.5, 1.0, 2.0)
OUTAGE_PAUSE_S = 30.0  # after writes gave up, MLflow is not tried again for this long
REMOTE_SCHEMES = ("http://", "https://", "databricks")
MODEL_SUFFIXES = (".onnx", ".tflite")
PARETO_TAG = "edgesweep.pareto"
WINS_TAG = "edgesweep.wins"
T = TypeVar("T")


def ui_url(experiment_id: str, *, port: int = 5000, front_only: bool = False) -> str:
    """The trials table of the MLflow 3 UI (its experiment page opens on a GenAI view), ranked by the
    artifact's mAP: sorted by a metric, the UI lists child runs flat instead of folded under the
    sweep's run. `front_only` filters it to the Pareto front."""
    query = {"orderByKey": "metrics.`artifact/map50_95`", "orderByAsc": "false"}
    if front_only:
        query["searchFilter"] = f"tags.`{PARETO_TAG}` = 'true'"
    return f"http://127.0.0.1:{port}/#/experiments/{experiment_id}/runs?{urlencode(query, quote_via=quote)}"


def ui_command(tracking_uri: str) -> str:
    """The command that opens the MLflow UI on this store, on loopback only (MLflow has no login)."""
    mlflow_bin = Path(sys.prefix) / "bin" / "mlflow"  # the environment's own mlflow, activated or not
    program = str(mlflow_bin) if mlflow_bin.exists() else "mlflow"
    return f"{program} ui --backend-store-uri {tracking_uri} --host 127.0.0.1 --port 5000"


def ui_hint(tracking_uri: str, experiment_id: str) -> str:
    """What `report` prints: the command on its own line (meant to be pasted), then the two views."""
    return (f"MLflow UI: {ui_command(tracking_uri)}\n  then open {ui_url(experiment_id)} (every trial, by mAP)\n"
            f"  the Pareto front only: {ui_url(experiment_id, front_only=True)}")


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


def metric_name(key: str) -> str | None:
    """A trial result's key as its grouped MLflow metric (None: not a metric): the UI then shows
    artifact/, board/ (board/NAME/ per board of a several-board sweep), float/ (the PyTorch model's
    val mAP), train/ and val/ sections."""
    if key in ARTIFACT_METRICS:
        return f"artifact/{key}"
    if key in BOARD_METRICS:
        return f"board/{key.removeprefix('board_')}"
    if key.startswith(f"{PER_BOARD}@"):  # latency_ms@rpi4 -> board/rpi4/latency_ms
        return f"board/{key.partition('@')[2]}/{PER_BOARD}"
    if key.startswith("float_"):
        return f"float/{key.removeprefix('float_')}"
    if key == "loss_kd_to_detection":
        return "train/kd_to_detection"
    if key.startswith("loss_"):
        return f"train/{key.removeprefix('loss_')}_loss"
    if key.startswith("val_"):
        return f"val/{key.removeprefix('val_')}"
    return f"train/{key}" if key in EPOCH_KEYS else None


def run_name(knobs: dict) -> str:
    """What a trial is, in a few words: "cwd x0.8 · onnx-int8 · 320px", "no KD · tflite · 128px";
    a student activation other than YOLOv5's SiLU is named too ("... · 128px · relu6")."""
    from orchestrator.pareto import kd_name
    from trainables.export.registry import format_for
    from trainables.models.family import DEFAULT_ACTIVATION

    activation = knobs.get("activation", DEFAULT_ACTIVATION)
    return (f"{kd_name(knobs)} · {format_for(knobs['runtime'], knobs['quantization']).name} · {knobs['img_size']}px"
            + ("" if activation == DEFAULT_ACTIVATION else f" · {activation}"))


def _metrics(values: dict, timestamp_ms: int, step: int) -> list[Metric]:
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
            log.warning("MLflow experiment %r keeps its artifacts in %s, outside this sweep's directory; give the "
                        "sweep its own mlflow.experiment to keep them in %s", experiment, found.artifact_location,
                        artifact_dir)
        return cls(tracking_uri, found.experiment_id)

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
        self.client.log_batch(run_id, metrics=[Metric(f"val/{k}", v, now, 0) for k, v in _finite(metrics).items()])
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

    def record_trial(self, run_id: str, record: TrialRecord, files: Sequence[Path] = ()) -> None:
        """Write a trial's end as the journal holds it (plus its artifact files) and close its run."""
        if record.status == "interrupted":
            self.client.set_tag(run_id, "edgesweep.status", "interrupted: it runs again on --resume")
            self.client.set_terminated(run_id, status="KILLED")
            return
        if record.status == "failed":
            self.client.set_tag(run_id, "edgesweep.error", (record.error or "unknown")[:4000])
            self.client.set_terminated(run_id, status="FAILED")
            self.client.set_tag(run_id, FINISHED_TAG, "true")
            return
        if not record.complete:
            self.client.set_tag(run_id, "edgesweep.status", "stopped before the end")
            self.client.set_terminated(run_id, status="KILLED")
            return
        m = record.metrics
        final = {k: v for k, v in m.items() if not k.startswith(("loss_", "val_")) and k not in EPOCH_KEYS}
        self.client.log_batch(run_id, metrics=_metrics(final, int(time.time() * 1000), int(m.get("epoch") or 0)),
                              tags=[RunTag(k, v) for k, v in _result_tags(m).items()])
        for f in files:
            if f.suffix in MODEL_SUFFIXES:
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

    def log_model(self, run_id: str, path: Path, record: TrialRecord) -> str:
        """The trial's artifact as a LoggedModel of its run; returns the model id."""
        m = record.metrics
        model = self.client.create_logged_model(
            self.experiment_id, name=f"trial-{record.trial_id}", source_run_id=run_id,
            model_type=path.suffix.lstrip("."), params={k: str(v) for k, v in sorted(record.knobs.items())},
            tags={TRIAL_TAG: record.trial_id, "edgesweep.format": str(m.get("format")),
                  "edgesweep.artifact_sha256": str(m.get("artifact_sha256"))})
        with tempfile.TemporaryDirectory(prefix="edgesweep-model-") as d:
            if path.suffix == ".onnx":
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
            self.client.set_tag(run.info.run_id, "edgesweep.status", reason)
            self.client.set_terminated(run.info.run_id, status="KILLED")
        return len(orphans)

    def finish(self, run_id: str, status: str) -> None:
        """End the parent run: FINISHED, FAILED, or KILLED for an interrupted sweep."""
        self.client.set_terminated(run_id, status=status)


def _result_tags(m: dict) -> dict[str, str]:
    """The edgesweep.* tags of a complete trial (filterable in the UI: tags.`edgesweep.format` = 'onnx-int8')."""
    return {"edgesweep.format": str(m.get("format")), "edgesweep.artifact_sha256": str(m.get("artifact_sha256")),
            "edgesweep.board_emulated": str(bool(m.get("board_emulated"))).lower(),
            "edgesweep.board_emulation": str(m.get("board_emulation") or ""),
            "edgesweep.board_node": str(m.get("board_node") or ""),
            "edgesweep.stand_in_stages": str(bool(m.get("stand_in"))).lower()}


class _Writer:
    """Runs MLflow writes in order on a thread of its own. Tune's loop is where every trial's
    `tune.report` waits for the driver, and at 200 trials SQLite writes took 70 % of that loop's time
    (py-spy on bench/sweep_scale.py); now a trial waits only for Tune. `drain_writes` waits for what
    is queued: the sweep calls it before it reads MLflow back, on every way out."""

    def __init__(self):
        self.jobs: queue.Queue = queue.Queue()
        threading.Thread(target=self._work, name="edgesweep-mlflow-writer", daemon=True).start()
        _WRITERS.add(self)

    def _work(self) -> None:
        while (job := self.jobs.get()) is not None:
            try:
                job()
            finally:
                self.jobs.task_done()
        self.jobs.task_done()

    def close(self) -> None:
        """Finish what is queued, then end the thread."""
        _WRITERS.discard(self)
        self.jobs.put(None)
        self.jobs.join()

    def drain(self) -> None:
        pending = self.jobs.qsize()
        if pending > 20:
            log.info("writing %d queued trial updates to MLflow", pending)
        self.jobs.join()


_WRITERS: "weakref.WeakSet[_Writer]" = weakref.WeakSet()


def drain_writes() -> None:
    """Wait until every trial callback's queued MLflow writes are done."""
    for writer in list(_WRITERS):
        writer.drain()


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

    def __getstate__(self) -> dict:  # saved with Tune's experiment state: no client, thread or cached ids
        return {**self.__dict__, "_tracking": None, "_runs": {}, "down_until": 0.0, "_writer": None}

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
            teacher = self.teacher_runs.get(f"{knobs.get('teacher')}@{knobs.get('img_size')}")
            tags = {**self.tags, TEACHER_RUN_TAG: teacher} if teacher and knobs.get("kd_method") != "none" else self.tags
            run_id, finished = retried(lambda: self.tracking.trial_run(
                self.parent_run_id, trial_id, knobs, self.settings, tags, self.dataset), "finding a trial's run")
            if not finished:
                retried(lambda: self.tracking.client.update_run(run_id, status="RUNNING"), "reopening a run")
            self._runs[trial_id] = (run_id, finished)
        return self._runs[trial_id]

    def on_trial_start(self, iteration, trials, trial, **info):
        self._later("opening a trial's run", self.run_id, trial.trial_id, dict(trial.config))

    def on_trial_result(self, iteration, trials, trial, result, **info):
        if result.get("stage") != "train":
            return
        step = int(result["epoch"])
        metrics = {k: v for k, v in result.items() if k in EPOCH_KEYS or k.startswith(("loss_", "val_"))}
        now = int(result.get("timestamp") or time.time()) * 1000
        self._later("logging epoch metrics", self._log_epoch, trial.trial_id, dict(trial.config),
                    _metrics(metrics, now, step))

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
                files = [f for f in sorted(Path(d).iterdir())
                         if f.suffix in {".onnx", ".tflite", ".png"} or f.name == "export.json"
                         or (f.name.startswith("latency") and f.suffix == ".json")]  # latency-NAME.json per board
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
        """Trials that never ended (a stopped sweep) get a run that says they were interrupted;
        returns once every queued write is done."""
        for trial in trials:
            self._later("recording an interrupted trial", self._end, trial.trial_id, dict(trial.config),
                        record_of(trial, self.complete_knobs, "interrupted"))
        if self._writer is not None:
            self._writer.close()
            self._writer = None
