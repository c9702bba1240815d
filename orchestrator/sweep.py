"""`run_sweep`: the whole loop of a `kd.yaml`, driven from one process.

config -> data check -> board actor -> teachers (in parallel with the first trials) -> Tune trials
(train on a trainer slot, export and score, time on the board) -> Optuna (through OptunaSearch) ->
journal -> MLflow -> Pareto report. The sweep directory holds everything a sweep writes and needs
to resume: Tune's experiment state, the Optuna study (SQLite), the journal of trials, the config as
run and, by default, the MLflow store with its artifacts. One driver holds it at a time.

Ctrl-C, SIGTERM or SIGHUP stops launching trials, lets Tune save, marks the running trials
interrupted (not failed) in the journal, Optuna and MLflow, and `sweep --resume` finishes them;
`sweep --resume --retry-failed` runs the failed trials again too.
"""
from __future__ import annotations

import logging
import math
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path

import ray
from mlflow.entities import RunTag
from ray import tune

from common.redact import redact
from device_actors.npu import load_profile
from device_actors.runtimes import RUNTIMES
from orchestrator import pareto
from orchestrator._ray_internals import reload_auth_config, tune_state_saved, tuner_callbacks, tuner_searcher
from orchestrator.config import SweepConfig
from orchestrator.datasets import cache_dir, data_splits
from orchestrator.errors import ConfigError
from orchestrator.interrupts import StopSignals, around_ray_init
from orchestrator.live import LiveProgress
from orchestrator.plots import write_plots
from orchestrator.preflight import check_inputs
from orchestrator.results import ResultsLog, TrialRecord, load_records
from orchestrator.retime import retime_front
from orchestrator.searcher import (check_study, delete_study, fail_orphaned_trials, make_searcher,
                                   mark_interrupted_trials, repeated_proposals, tell_retried_trials)
from orchestrator.stages import RealStages, TrainedModel, TrainSpec, train_teacher
from orchestrator.sweep_state import (STATE, SweepLock, check_resumable, clear_unsaved_start, flat_keys, project_commit,
                                      read_state, resume_config, resume_tracking_uri, write_state)
from orchestrator.students import STUDENTS, start_students, students_trained
from orchestrator.thesis_tables import write_sessions
from orchestrator.tracking.callback import MlflowTrialCallback
from orchestrator.tracking.deadline import END_BUDGET_S, KILLED_BUDGET_S, MlflowDeadline
from orchestrator.tracking.store import SweepTracking
from orchestrator.trainers import TrainSlots, start_train_slots
from orchestrator.trial import TrialContext, run_trial
from orchestrator.trial_spec import teacher_key
from trainables.kd.registry import distilling_methods

log = logging.getLogger(__name__)

TUNE_DIR = "tune"
ARTIFACTS = "mlartifacts"  # MLflow artifacts of a local store


@dataclass(frozen=True)
class SweepResult:
    sweep_dir: Path
    records: list[TrialRecord]
    front: list[TrialRecord]
    tracking_uri: str
    experiment_id: str
    parent_run_id: str
    report_files: list[Path] = field(default_factory=list)
    interrupted: str | None = None  # the signal that stopped the sweep before its last trial, if any
    runs: dict[str, str] = field(default_factory=dict)  # trial id -> MLflow run id, as read at the end (or none)

    @property
    def failed(self) -> list[TrialRecord]:
        return [r for r in self.records if r.status == "failed"]


def _token_auth() -> None:
    """Token authentication for a private cluster. Ray 2.60 binds its gRPC servers (GCS, raylet,
    object manager, workers) on every interface and has no setting to bind loopback only, so the
    token is what keeps another machine that reaches those ports out. A token the user already
    has (RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH, ~/.ray/auth_token) is used; else a throwaway one."""
    has_token = any(os.environ.get(k) for k in ("RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH")) or \
        (Path.home() / ".ray" / "auth_token").is_file()
    if os.environ.get("RAY_AUTH_MODE") == "token" and has_token:
        return
    os.environ["RAY_AUTH_MODE"] = "token"
    if not has_token:
        os.environ["RAY_AUTH_TOKEN"] = secrets.token_hex(32)
    reload_auth_config()


def _tune_settings() -> None:
    """How Tune behaves in a sweep's driver. Set when the sweep starts or joins Ray (`init_ray`), not
    at import, so importing this module changes nothing; `setdefault`, so a user's own value wins.
    Tune reads each when a Tuner is built or run."""
    # Trials checkpoint every epoch by design; Tune's advice to checkpoint less is noise here. Tune's own
    # console output (experiment box, TensorBoard hint) would break the live view, which replaces it.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    # The journal and MLflow hold every result; Tune's own per-trial JSON, CSV and TensorBoard files took
    # a fifth of the driver's loop at 200 trials (py-spy on bench/sweep_scale.py), which every report
    # waits on (its JSON logger alone adds 0.2 s per trial there). Without them the ResultGrid that
    # `Tuner.fit()` returns, which nothing here reads, warns once per trial that it found no metrics.
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    logging.getLogger("ray.tune.analysis.experiment_analysis").setLevel(logging.ERROR)
    logging.getLogger("ray.tune").setLevel(logging.WARNING)  # Tune's INFO lines would break the live view


def init_ray(address: str | None, *, num_cpus: int | None = None, num_gpus: int | None = None) -> None:
    """Connect to a cluster (`address`, or RAY_ADDRESS), or start a private local one. Every `Sweep`
    calls it, so a sweep on a Ray that a test or notebook started already gets Tune's settings too."""
    _tune_settings()
    if ray.is_initialized():
        return
    kwargs = {"include_dashboard": False, "log_to_driver": False, "logging_level": logging.WARNING}
    with around_ray_init():  # no SIGTERM handler of Ray's (it exits 15); a stop signal waits for ray.init
        if address or os.environ.get("RAY_ADDRESS"):
            ray.init(address=address, **kwargs)
        else:  # "local": a new private cluster, never one that `ray start` left running on this machine
            _token_auth()
            ray.init(address="local", num_cpus=num_cpus, num_gpus=num_gpus, **kwargs)


def _train_spec(cfg: SweepConfig, data_digest: str) -> TrainSpec:
    return TrainSpec(data=cfg.data, seed=cfg.seed, training=cfg.training, data_digest=data_digest,
                     torch_threads=max(math.ceil(cfg.resources.train.cpu), 1),  # 1.5 CPUs: 2 torch threads
                     device="auto" if cfg.resources.train.gpu else "cpu")  # a CPU slot trains on its CPUs


# The trial process only waits for its tasks and the board: it reserves no CPU, so every CPU is a
# trainer's, and a little memory, which board nodes do not offer (`board join` passes --memory=0):
# trial processes stay off the board, where they would disturb its timing and die with it.
TRIAL_RESOURCES = {"cpu": 0, "memory": 256 * 1024 ** 2}


def _task_options(resources) -> dict:
    # DEFAULT: the task leaves the trial's placement group and takes its own slot (a GPU for
    # training), so a waiting trial holds nothing that another trial could use.
    return {"num_cpus": resources.cpu, "num_gpus": resources.gpu, "scheduling_strategy": "DEFAULT"}


def needed_teachers(cfg: SweepConfig) -> list[tuple[str, int]]:
    """(teacher name, image size) pairs some trial may distil from."""
    if not set(cfg.search.possible_values("kd_method")) & set(distilling_methods()):
        return []
    names = cfg.search.possible_values("teacher")
    sizes = cfg.search.possible_values("img_size")
    if "img_size" in cfg.search.params and len(sizes) == 2 and not hasattr(cfg.search.params["img_size"], "values"):
        raise ConfigError("search.img_size: teachers are trained per image size, so img_size must be a choice or grid")
    return [(n, int(s)) for n in names if n is not None for s in sizes]


def start_teachers(cfg: SweepConfig, spec: TrainSpec, slots: TrainSlots) -> dict:
    """An ObjectRef of the TrainedModel of every teacher a trial may use. Teachers given by size
    train now, all at once, each on a `train` slot (a GPU on a cluster); a trial that needs one
    waits for it, and trials that need none start at once."""
    refs = {}
    for name, img_size in needed_teachers(cfg):
        teacher = cfg.teachers[name]
        if teacher.checkpoint is not None:
            refs[(name, img_size)] = ray.put(TrainedModel(checkpoint=Path(teacher.checkpoint).read_bytes()))
        else:
            refs[(name, img_size)] = slots.call(train_teacher, teacher.model, teacher.epochs, img_size, spec)
    return refs


def _teacher_for_trials(refs: dict) -> dict:
    """Trials look teachers up by `teacher_key`; ObjectRefs of TrainedModel are unwrapped there."""
    return {teacher_key(name, size): ref for (name, size), ref in refs.items()}


def source_tags(cfg: SweepConfig) -> dict[str, str]:
    """MLflow's source tags (the UI's Source column: the git commit) for the sweep's runs."""
    commit = project_commit()
    tags = {"mlflow.source.type": "LOCAL", "mlflow.source.name": f"python -m orchestrator sweep {cfg.source}",
            "edgesweep.commit": commit}
    if len(commit.removesuffix("-dirty")) == 40:
        tags["mlflow.source.git.commit"] = commit.removesuffix("-dirty")
    return tags


def trial_settings(cfg: SweepConfig) -> dict[str, object]:
    """Every setting besides the knobs that shaped a trial (training, data, board, resources), as
    params of its run: a child run can be compared with another without opening the parent."""
    config = cfg.to_dict()
    return flat_keys({key: config[key] for key in ("training", "data", "board", "resources") if key in config})


def data_location(cfg: SweepConfig) -> Path:
    """Where the sweep's data lies: its root, else the directory of its train annotations."""
    return cfg.data.root if cfg.data.root is not None else data_splits(cfg.data, seed=cfg.seed).train.annotations.parent


def dataset_input(cfg: SweepConfig, summary) -> dict:
    """The sweep's data set as an MLflow dataset input: named by source, digest of its annotations."""
    name = f"{cfg.data.source} ({summary.train_images} train / {summary.val_images} val images)"
    return {"name": name, "source": str(data_location(cfg)), "digest": summary.digest}


def data_label(cfg: SweepConfig) -> str:
    """The data of the sessions table: its source and where it lies."""
    return f"{cfg.data.source}: {data_location(cfg)}"


def devices(cfg: SweepConfig) -> dict[str, str]:
    """What ran each runtime's artifacts on the board (ONNX Runtime's first provider, TFLite's delegate or CPU)."""
    options = cfg.board.runtime_options(threads=1)  # threads name no device
    return {name: runtime.device(options) for name, runtime in RUNTIMES.items()}


def write_report(cfg: SweepConfig, records: list[TrialRecord],
                 runs: dict[str, str] | None = None) -> tuple[list[TrialRecord], list[Path]]:
    """pareto.csv, trials.csv (with each trial's MLflow run id from `runs`) and the plots in report/."""
    out = cfg.sweep_dir / "report"
    out.mkdir(parents=True, exist_ok=True)
    objectives = [(o.metric, o.mode) for o in cfg.objectives]
    on_front = pareto.front(records, objectives, cfg.constraints)
    files = [pareto.write_csv(out / "pareto.csv", on_front, runs), pareto.write_csv(out / "trials.csv", records, runs),
             write_sessions(out / "sessions.csv", records, board=cfg.board.name, data=data_label(cfg),
                            devices=devices(cfg))]
    if any(r.complete for r in records):
        files += write_plots(out, records, on_front, objectives, cfg.constraints)
    return on_front, files


class Sweep:
    """One sweep run, in steps a CLI can show: the constructor (checks, lock, MLflow parent run, Ray,
    board), `prepare_teachers` (start them), `run` (the Tune trials and the report)."""

    def __init__(self, cfg: SweepConfig, *, resume: bool = False, tracking_uri: str | None = None,
                 address: str | None = None, stages=None, retry_failed: bool = False, stop: StopSignals | None = None):
        if retry_failed and not resume:
            raise ConfigError("--retry-failed runs the failed trials of a sweep again: give it with --resume")
        self.resume, self.stages, self.retry_failed = resume, stages, retry_failed
        self.stop = stop or StopSignals()  # the CLI's, installed for the whole command; else installed by `run`
        self.sweep_dir = cfg.sweep_dir
        self.tune_dir = self.sweep_dir / TUNE_DIR
        self.restarted = False  # a start over one whose driver stopped before Tune saved anything
        if resume:
            check_resumable(self.sweep_dir, self.tune_dir)
        elif self.tune_dir.exists():
            if tune_state_saved(self.tune_dir):
                raise ConfigError(f"{self.sweep_dir} already holds a sweep named {cfg.name!r}: finish it with "
                                  f"--resume, or change `name:` in {cfg.source}")
            self.restarted = True
        # Bad data or a checkpoint of the wrong architecture stops here, before anything is created or started.
        self.data = check_inputs(cfg)
        check_study(cfg, self.sweep_dir, fresh=not (resume or self.restarted))  # it answers; a new sweep, a new study
        self.lock = SweepLock.acquire(self.sweep_dir)  # a second driver on this directory stops here
        try:
            if self.restarted:
                clear_unsaved_start(self.sweep_dir, [self.tune_dir])
                delete_study(cfg, self.sweep_dir)
            self._open(cfg, tracking_uri, address)
        except BaseException as e:
            if isinstance(e, KeyboardInterrupt):
                self.abort()
            self.lock.release()
            raise

    def _open(self, cfg: SweepConfig, tracking_uri: str | None, address: str | None) -> None:
        earlier = read_state(self.sweep_dir) if self.resume else None
        if self.resume:  # the stored config, not the YAML as it is now
            tracking_uri = resume_tracking_uri(self.sweep_dir, tracking_uri, cfg.mlflow.tracking_uri)
            cfg = resume_config(self.sweep_dir, cfg)
        self.cfg = cfg
        self.tracking_uri = tracking_uri or cfg.mlflow.tracking_uri
        self.tracking = SweepTracking.open(self.tracking_uri, cfg.mlflow.experiment,
                                           artifact_dir=self.sweep_dir / ARTIFACTS)
        if self.restarted:
            self._close_unsaved_parent()
        self.parent, created = self.tracking.parent_run(cfg.name, self.sweep_dir, resume=self.resume,
                                                        run_id=earlier and earlier["parent_run_id"])
        self.run_tags = source_tags(cfg)
        self.dataset = dataset_input(cfg, self.data)
        if created:
            self.tracking.log_config(self.parent, cfg.to_dict(), cfg.search.to_dict())
            self.tracking.client.log_batch(self.parent, tags=[RunTag(k, v) for k, v in self.run_tags.items()])
            self.tracking.log_dataset(self.parent, self.dataset)
        if self.resume:
            if created:
                log.warning("MLflow: %s holds no run of this sweep (%s in sweep.json; another tracking URI, or its "
                            "store was deleted): its new parent run %s gets the config and every trial of the journal, "
                            "and the rest of the sweep logs there", redact(self.tracking_uri),
                            redact(earlier["tracking_uri"]), self.parent)
            self.tracking.backfill(self.parent, load_records(self.sweep_dir), self.sweep_dir)
        write_state(self.sweep_dir, cfg, tracking_uri=self.tracking_uri, experiment_id=self.tracking.experiment_id,
                    parent_run_id=self.parent)
        init_ray(address)
        from device_actors.client import connect_board

        self.boards = tuple(connect_board(name, emulate_if_missing=cfg.board.emulate_if_missing)
                            for name in cfg.board.names)
        self.spec = _train_spec(cfg, self.data.digest)
        self.trainers = start_train_slots(_task_options(cfg.resources.train))
        self.students = start_students(self.sweep_dir / STUDENTS if cfg.student.cache == "sweep"
                                       else cache_dir() / STUDENTS)
        self.teachers: dict = {}
        self.teacher_runs: dict[str, str] = {}  # "name@img_size" -> its MLflow run
        self.mlflow_callback: MlflowTrialCallback | None = None  # the one Tune runs (`_tuner`)

    def _close_unsaved_parent(self) -> None:
        """The parent run of a start that stopped before Tune saved anything ends KILLED: this start has its own."""
        if not (self.sweep_dir / STATE).exists():
            return
        earlier = read_state(self.sweep_dir)
        try:
            if redact(earlier["tracking_uri"]) == redact(self.tracking_uri):
                self.tracking.finish(earlier["parent_run_id"], "KILLED")
        except Exception as e:  # noqa: BLE001 - MLflow is a mirror
            log.warning("MLflow: the earlier start's run %s stays as it was (%s)", earlier["parent_run_id"], e)

    def _board_val(self):
        """The val split packed for the board, put in the object store once (None unless it scores)."""
        if not self.cfg.board.score_on_board:
            return None
        from detection.coco import CocoDataset
        from detection.packed import PackedSplit

        return ray.put(PackedSplit.of(CocoDataset(data_splits(self.cfg.data, seed=self.cfg.seed).val)))

    def prepare_teachers(self) -> list[str]:
        """Start every teacher the trials may need; returns their names ("s@128px")."""
        if self.stages is None:
            self.teachers = start_teachers(self.cfg, self.spec, self.trainers)
        for name, size in self.teachers:
            teacher = self.cfg.teachers[name]
            what = f"YOLO-{teacher.model}, {teacher.epochs} epochs" if teacher.model else f"checkpoint {teacher.checkpoint}"
            try:
                key = teacher_key(name, size)
                self.teacher_runs[key] = self.tracking.teacher_run(self.parent, key, what, self.run_tags)
            except Exception as e:  # noqa: BLE001 - MLflow is a mirror; trials then carry no teacher link
                log.warning("MLflow: no run for teacher %s (%s)", teacher_key(name, size), e)
        return [f"{teacher_key(name, size)}px" for name, size in self.teachers]

    def _tuner(self, show_progress: bool) -> tune.Tuner:
        cfg = self.cfg
        ctx = TrialContext(space=cfg.search, train_spec=self.spec, trainers=self.trainers,
                           export_options=_task_options(cfg.resources.export),
                           teachers=_teacher_for_trials(self.teachers), boards=self.boards,
                           board_timeout_s=cfg.board.timeout_s, timing=cfg.board.timing,
                           runtime_options=cfg.board.runtime_options,
                           board_val=self._board_val(), stages=self.stages or RealStages(), students=self.students,
                           npu_profile=load_profile(cfg.board.npu_profile) if cfg.board.npu_profile else None)
        trainable = tune.with_resources(tune.with_parameters(run_trial, ctx=ctx), TRIAL_RESOURCES)
        if self.resume:  # callbacks, searcher and run config come back from the sweep's saved state
            # --retry-failed: failed trials go back to PENDING and restart from their last checkpoint
            # (a trained student goes straight to export), once each (their failures count stays)
            tuner = tune.Tuner.restore(str(self.tune_dir), trainable, resume_unfinished=True,
                                       resume_errored=self.retry_failed, restart_errored=False)
            for callback in tuner_callbacks(tuner):  # saved where the sweep was, with the store it logged to then
                if isinstance(callback, (ResultsLog, LiveProgress)):
                    callback.sweep_dir = self.sweep_dir
                if isinstance(callback, MlflowTrialCallback):
                    callback.log_to(self.tracking_uri, self.tracking.experiment_id, self.parent)
                    self.mlflow_callback = callback
            relocate = getattr(tuner_searcher(tuner), "relocate", None)
            if relocate is not None:
                relocate(self.sweep_dir)
            return tuner
        self.mlflow_callback = MlflowTrialCallback(
            self.tracking_uri, self.tracking.experiment_id, self.parent, cfg.search.complete,
            settings=trial_settings(cfg), tags=self.run_tags, dataset=self.dataset, teacher_runs=self.teacher_runs)
        # The journal first: a trial's end is on disk before MLflow or the live view hear of it.
        callbacks = [ResultsLog(self.sweep_dir, cfg.search.complete), self.mlflow_callback]
        if show_progress:
            callbacks.append(LiveProgress(cfg.searcher.trials, cfg.search.complete, f"sweep {cfg.name}", self.sweep_dir))
        searcher, param_space, num_samples = make_searcher(cfg, self.sweep_dir)
        # reuse_actors: a finished trial's process runs the next trial (Tune resets it), so a trial
        # does not pay a process start; training runs on a long-lived trainer slot (orchestrator.trainers),
        # export in Ray's warm workers on CPUs (a GPU export task gets a process of its own: StageTask).
        return tune.Tuner(
            trainable, param_space=param_space,
            tune_config=tune.TuneConfig(search_alg=searcher, num_samples=num_samples,
                                        max_concurrent_trials=cfg.searcher.concurrency, reuse_actors=True),
            run_config=tune.RunConfig(
                name=TUNE_DIR, storage_path=str(self.sweep_dir), callbacks=callbacks, verbose=0,
                failure_config=tune.FailureConfig(max_failures=cfg.searcher.max_failures),
                checkpoint_config=tune.CheckpointConfig(num_to_keep=2)))

    def run(self, *, show_progress: bool = True) -> SweepResult:
        """Run the trials; whatever happens, finished results are written out and logged. A stop
        signal in any step (`orchestrator.interrupts`) ends the sweep KILLED, `interrupted` saying which."""
        status, stop = "FAILED", self.stop
        with stop:
            try:
                try:
                    tuner = self._tuner(show_progress)
                    with stop.during_tune():
                        tuner.fit()
                    status = self._after_tune()
                except KeyboardInterrupt:  # a signal outside Tune's graceful stop: the end waits for nothing
                    status, stop.hurry = "KILLED", True
                finally:
                    status, records, on_front, files, runs = self._end(status)
            finally:
                self.lock.release()
        return SweepResult(sweep_dir=self.sweep_dir, records=records, front=on_front,
                           tracking_uri=self.tracking_uri, experiment_id=self.tracking.experiment_id,
                           parent_run_id=self.parent, report_files=files, interrupted=stop.received,
                           runs=runs)

    def _after_tune(self) -> str:
        """FINISHED when the sweep ran its trials (or its space ran out), else KILLED; the study told so."""
        ended = sum(r.ended for r in load_records(self.sweep_dir))
        _, exhausted_after = repeated_proposals(self.cfg, self.sweep_dir)
        tell_retried_trials(self.cfg, self.sweep_dir)
        if self.stop.received or (ended < self.cfg.searcher.trials and exhausted_after is None):
            self.stop.received = self.stop.received or "an interrupt"
            mark_interrupted_trials(self.cfg, self.sweep_dir)  # Optuna keeps them RUNNING, to be told on resume
            return "KILLED"
        fail_orphaned_trials(self.cfg, self.sweep_dir)
        return "FINISHED"

    def _end(self, status: str) -> tuple[str, list[TrialRecord], list[TrialRecord], list[Path], dict[str, str]]:
        """After Tune: MLflow's queued trial writes, the front re-timed (a finished sweep), the report
        files, the parent run's end. MLflow gets END_BUDGET_S for all of it (`tracking.deadline`: a
        hung server cannot hold the driver). A stop signal here, or a second one during Tune, cuts
        every wait short: the report files are still written, and MLflow gets only the parent's KILLED."""
        mlflow, runs = MlflowDeadline(END_BUDGET_S), {}
        hurry = self.stop.hurry
        try:
            if not hurry:
                if self.mlflow_callback is not None:  # its queued MLflow writes, before MLflow is read back
                    mlflow.call(self.mlflow_callback.close, "writing the trials' runs", None)
                if status == "FINISHED":
                    self._retime_front(mlflow)
                runs = self._trial_runs(mlflow)
        except KeyboardInterrupt:
            status, hurry = "KILLED", True
        with self.stop.deferred():  # local files, written in a second: a signal meanwhile waits for them
            records = load_records(self.sweep_dir)
            on_front, files = write_report(self.cfg, records, runs)
        if not hurry:
            try:
                mlflow.call(lambda: self._log_end(files, records, on_front, status, runs), "ending the sweep's run",
                            None)
            except KeyboardInterrupt:
                status, hurry = "KILLED", True
        if hurry:
            self.stop.received = self.stop.received or "SIGINT"
            self.abort()
        return status, records, on_front, files, runs

    def abort(self) -> None:
        """After a stop signal: the parent run and the trial runs still open end KILLED, within
        KILLED_BUDGET_S; a further signal ends the wait (`report` closes them later)."""
        if not hasattr(self, "parent"):
            return

        def end() -> None:
            self.tracking.finish(self.parent, "KILLED")
            self.tracking.close_orphans(self.parent, "interrupted: it runs again on --resume")

        try:
            MlflowDeadline(KILLED_BUDGET_S).call(end, "ending the sweep's run KILLED", None)
        except (Exception, KeyboardInterrupt) as e:  # noqa: BLE001 - MLflow is a mirror; `report` closes the run
            log.warning("MLflow: the sweep's run %s is not marked KILLED (%s); `python -m orchestrator report %s` "
                        "closes it", self.parent, e or type(e).__name__, self.sweep_dir)

    def _retime_front(self, mlflow: MlflowDeadline) -> None:
        """The front's noisy latencies timed again now that nothing else runs (`orchestrator.retime`);
        a board that fails here leaves the figures as they were (the report marks them noisy)."""
        runs: dict[str, str] = {}

        def mirror(record: TrialRecord) -> None:
            try:
                runs.update(runs or self._trial_runs(mlflow))
                if record.trial_id in runs:
                    mlflow.call(lambda: self.tracking.log_retimed(runs[record.trial_id], record),
                                "logging a re-timed latency", None)
            except Exception as e:  # noqa: BLE001 - MLflow is a mirror; `report` shows the journal's figures
                log.warning("MLflow: the re-timed latency of trial %s is not logged (%s)", record.trial_id, e)

        try:
            retime_front(self.cfg, self.sweep_dir, self.boards, on_retimed=mirror)
        except Exception as e:  # noqa: BLE001 - every trial's result is in the journal already
            log.warning("could not time the front again at the end (%s): its latencies stay as measured during "
                        "the sweep", e)

    def _trial_runs(self, mlflow: MlflowDeadline) -> dict[str, str]:
        """Trial id -> MLflow run id for the report; empty while MLflow is unreachable."""
        try:
            return mlflow.call(lambda: self.tracking.trial_runs(self.parent), "reading the trial runs", {})
        except Exception as e:  # noqa: BLE001 - MLflow is a mirror
            log.warning("MLflow unreachable (%s): the report names no run ids; `report` adds them later", e)
            return {}

    def _log_end(self, files: list[Path], records: list[TrialRecord], on_front: list[TrialRecord],
                 status: str, runs: dict[str, str]) -> None:
        """The report, the teachers' metrics and the parent's end in MLflow (a failure is logged:
        the journal and the report files already hold everything, and `report` backfills MLflow)."""
        trained, artifacts = students_trained(records)
        summary = {"trials_complete": sum(r.complete for r in records), "students_trained": trained,
                   "artifacts": artifacts,
                   "trials_failed": sum(r.status == "failed" for r in records), "pareto_size": len(on_front),
                   "searcher_repeats": repeated_proposals(self.cfg, self.sweep_dir)[0]}
        reason = ("interrupted: it runs again on --resume" if status == "KILLED"
                  else "interrupted: its driver stopped first")  # a run a crashed driver had started
        try:
            for (name, size), ref in self.teachers.items():  # before close_orphans: a trained teacher's run FINISHED
                if ray.wait([ref], timeout=0)[0]:
                    try:
                        metrics = ray.get(ref).metrics
                    except ray.exceptions.RayError:  # its trials failed with the teacher's error
                        continue
                    if teacher_key(name, size) in self.teacher_runs:
                        self.tracking.log_teacher(self.teacher_runs[teacher_key(name, size)], metrics)
            self.tracking.close_orphans(self.parent, reason)
            self.tracking.log_report(self.parent, files, summary)
            self.tracking.register_front(self.cfg.name, on_front, [(o.metric, o.mode) for o in self.cfg.objectives],
                                         runs)
            self.tracking.mark_front(runs, on_front)
            self.tracking.finish(self.parent, status)  # failed trials show as FAILED child runs
        except Exception as e:  # noqa: BLE001 - MLflow is a mirror
            log.warning("could not write the sweep's end to MLflow (%s); the report files are in %s, and "
                        "`python -m orchestrator report %s` writes MLflow what it lacks", e, self.sweep_dir / "report",
                        self.sweep_dir)


def run_sweep(cfg: SweepConfig, *, resume: bool = False, tracking_uri: str | None = None,
              address: str | None = None, stages=None, show_progress: bool = True,
              retry_failed: bool = False) -> SweepResult:
    """Run (or with `resume`, finish) the sweep described by `cfg`; returns its records and front."""
    sweep = Sweep(cfg, resume=resume, tracking_uri=tracking_uri, address=address, stages=stages,
                  retry_failed=retry_failed)
    sweep.prepare_teachers()
    return sweep.run(show_progress=show_progress)
