"""`run_sweep`: the whole loop of a `kd.yaml`, driven from one process.

config -> data check -> board actor -> teachers -> Tune trials (train on a trainer slot, export and
score in the trial, time on the board) -> Optuna (through OptunaSearch) -> MLflow -> Pareto report.
The sweep directory holds everything needed to resume after a crash: Tune's experiment state, the
Optuna study (SQLite), the finished-trial records and, by default, the MLflow store.
"""
from __future__ import annotations

import json
import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import ray
from ray import tune

from orchestrator import pareto
from orchestrator.config import SweepConfig
from orchestrator.errors import ConfigError
from orchestrator.live import LiveProgress
from orchestrator.preflight import check_inputs
from orchestrator.results import ResultsLog, TrialRecord, load_records
from orchestrator.searcher import fail_orphaned_trials, make_searcher
from orchestrator.stages import RealStages, TrainedModel, TrainSpec, teacher_task
from orchestrator.tracking import MlflowTrialCallback, SweepTracking, ui_command, ui_url
from orchestrator.trial import TrialContext, run_trial
from trainables.kd.registry import distilling_methods

log = logging.getLogger(__name__)

STATE = "sweep.json"
TUNE_DIR = "tune"


@dataclass(frozen=True)
class SweepResult:
    sweep_dir: Path
    records: list[TrialRecord]
    front: list[TrialRecord]
    tracking_uri: str
    experiment_id: str
    parent_run_id: str
    report_files: list[Path] = field(default_factory=list)

    @property
    def failed(self) -> list[TrialRecord]:
        return [r for r in self.records if r.status == "failed"]


# Trials checkpoint every epoch by design; Tune's advice to checkpoint less is noise here. Tune's own
# console output (experiment box, TensorBoard hint) would break the live view, which replaces it.
os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")


def init_ray(address: str | None, *, num_cpus: int | None = None, num_gpus: int | None = None) -> None:
    """Connect to a cluster (`address`, or RAY_ADDRESS), or start a private local one."""
    if ray.is_initialized():
        return
    kwargs = {"include_dashboard": False, "log_to_driver": False, "logging_level": logging.WARNING}
    logging.getLogger("ray.tune").setLevel(logging.WARNING)  # Tune's INFO lines would break the live view
    if address or os.environ.get("RAY_ADDRESS"):
        ray.init(address=address, **kwargs)
    else:  # "local": a new private cluster, never one that `ray start` left running on this machine
        ray.init(address="local", num_cpus=num_cpus, num_gpus=num_gpus, **kwargs)


def _train_spec(cfg: SweepConfig) -> TrainSpec:
    return TrainSpec(data=cfg.data, seed=cfg.seed, training=cfg.training,
                     threads=max(math.ceil(cfg.resources.train.cpu), 1))  # 1.5 CPUs: 2 torch threads


# The trial process only waits for its tasks and the board: it reserves memory and a token CPU share.
# The share is not for work: board nodes offer no CPU (`board join` passes --num-cpus=0), so it keeps
# trial processes off the board, where they would disturb its timing and die with it.
TRIAL_RESOURCES = {"cpu": 0.01, "memory": 256 * 1024 ** 2}


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


def prepare_teachers(cfg: SweepConfig, spec: TrainSpec, tracking: SweepTracking, parent: str,
                     on_epoch=None) -> dict:
    """Checkpoint bytes (as ObjectRefs) of every teacher a trial may use, trained once if needed."""
    refs = {}
    for name, img_size in needed_teachers(cfg):
        teacher = cfg.teachers[name]
        if teacher.checkpoint is not None:
            refs[(name, img_size)] = ray.put(TrainedModel(checkpoint=Path(teacher.checkpoint).read_bytes()))
            continue
        stream = teacher_task.options(**_task_options(cfg.resources.train)).remote(teacher.model, teacher.epochs,
                                                                                 img_size, spec)
        for ref in stream:
            item = ray.get(ref)
            if isinstance(item, TrainedModel):
                refs[(name, img_size)] = ref
                tracking.log_teacher(parent, f"{name}_{img_size}px", item.metrics)
            elif on_epoch is not None:
                on_epoch(name, item)
    return refs


def _teacher_for_trials(refs: dict) -> dict:
    """Trials look teachers up by "name@img_size"; ObjectRefs of TrainedModel are unwrapped there."""
    return {f"{name}@{size}": ref for (name, size), ref in refs.items()}


def write_report(cfg: SweepConfig, records: list[TrialRecord]) -> tuple[list[TrialRecord], list[Path]]:
    out = cfg.sweep_dir / "report"
    out.mkdir(parents=True, exist_ok=True)
    objectives = [(o.metric, o.mode) for o in cfg.objectives]
    on_front = pareto.front(records, objectives, cfg.constraints)
    files = [pareto.write_csv(out / "pareto.csv", on_front), pareto.write_csv(out / "trials.csv", records)]
    if any(r.complete for r in records):
        files += pareto.write_plots(out, records, on_front)
    return on_front, files


class Sweep:
    """One sweep run, in three steps so a CLI can show each: `open` (checks, MLflow parent run, Ray,
    board), `prepare_teachers` (train or load them once), `run` (the Tune trials and the report)."""

    def __init__(self, cfg: SweepConfig, *, resume: bool = False, tracking_uri: str | None = None,
                 address: str | None = None, stages=None):
        self.cfg, self.resume, self.stages = cfg, resume, stages
        self.sweep_dir = cfg.sweep_dir
        self.tune_dir = self.sweep_dir / TUNE_DIR
        if resume and not tune.Tuner.can_restore(str(self.tune_dir)):
            raise ConfigError(f"--resume: no sweep state in {self.tune_dir}; run without --resume to start it")
        if not resume and self.tune_dir.exists():
            raise ConfigError(f"{self.sweep_dir} already holds a sweep named {cfg.name!r}: finish it with --resume, "
                              f"or change `name:` in {cfg.source}")
        # Bad data or a checkpoint of the wrong architecture stops here, before anything is created or started.
        self.data = check_inputs(cfg)
        self.sweep_dir.mkdir(parents=True, exist_ok=True)
        self.tracking_uri = tracking_uri or cfg.mlflow.tracking_uri
        self.tracking = SweepTracking(self.tracking_uri, cfg.mlflow.experiment)
        self.parent = self.tracking.parent_run(cfg.name, self.sweep_dir, resume=resume)
        if not resume:
            self.tracking.log_config(self.parent, cfg.to_dict(), cfg.search.to_dict())
        # The config as run, so `report` and `--resume` never depend on the YAML staying unchanged.
        (self.sweep_dir / STATE).write_text(json.dumps(
            {"name": cfg.name, "source": str(cfg.source), "tracking_uri": self.tracking_uri,
             "experiment_id": self.tracking.experiment_id, "parent_run_id": self.parent,
             "config": cfg.to_dict()}, indent=2, default=str))
        init_ray(address)
        from device_actors.client import connect_board

        self.board = connect_board(cfg.board.name, emulate_if_missing=cfg.board.emulate_if_missing)
        self.spec = _train_spec(cfg)
        self.teachers: dict = {}

    def prepare_teachers(self, on_epoch=None) -> None:
        if self.stages is None:
            self.teachers = prepare_teachers(self.cfg, self.spec, self.tracking, self.parent, on_epoch)

    def _tuner(self, show_progress: bool) -> tune.Tuner:
        cfg = self.cfg
        ctx = TrialContext(space=cfg.search, train_spec=self.spec, train_options=_task_options(cfg.resources.train),
                           export_options=_task_options(cfg.resources.export),
                           teachers=_teacher_for_trials(self.teachers), board=self.board,
                           board_timeout_s=cfg.board.timeout_s, timing=cfg.board.timing,
                           runtime_options=cfg.board.runtime_options, calibration_images=cfg.data.calibration_images,
                           stages=self.stages or RealStages())
        trainable = tune.with_resources(tune.with_parameters(run_trial, ctx=ctx), TRIAL_RESOURCES)
        if self.resume:  # callbacks, searcher and run config come back from the sweep's saved state
            return tune.Tuner.restore(str(self.tune_dir), trainable, resume_unfinished=True, resume_errored=False,
                                      restart_errored=False)
        callbacks = [MlflowTrialCallback(self.tracking_uri, self.tracking.experiment_id, self.parent,
                                         cfg.search.complete),
                     ResultsLog(self.sweep_dir, cfg.search.complete)]
        if show_progress:
            callbacks.append(LiveProgress(cfg.searcher.trials, cfg.search.complete, f"sweep {cfg.name}"))
        searcher, param_space, num_samples = make_searcher(cfg, self.sweep_dir)
        return tune.Tuner(
            trainable, param_space=param_space,
            tune_config=tune.TuneConfig(search_alg=searcher, num_samples=num_samples,
                                        max_concurrent_trials=cfg.searcher.concurrency, reuse_actors=False),
            run_config=tune.RunConfig(
                name=TUNE_DIR, storage_path=str(self.sweep_dir), callbacks=callbacks, verbose=0,
                failure_config=tune.FailureConfig(max_failures=cfg.searcher.max_failures),
                checkpoint_config=tune.CheckpointConfig(num_to_keep=2)))

    def run(self, *, show_progress: bool = True) -> SweepResult:
        """Run the trials; whatever happens, finished results are written out and logged."""
        ok = False
        try:
            self._tuner(show_progress).fit()
            fail_orphaned_trials(self.cfg, self.sweep_dir)
            self.tracking.close_orphans(self.parent)
            ok = True
        finally:
            records = load_records(self.sweep_dir)
            on_front, files = write_report(self.cfg, records)
            summary = {"trials_complete": sum(r.complete for r in records),
                       "trials_failed": sum(r.status == "failed" for r in records), "pareto_size": len(on_front)}
            self.tracking.log_report(self.parent, files, summary)
            self.tracking.finish(self.parent, ok)  # failed trials show as FAILED child runs
        return SweepResult(sweep_dir=self.sweep_dir, records=records, front=on_front,
                           tracking_uri=self.tracking_uri, experiment_id=self.tracking.experiment_id,
                           parent_run_id=self.parent, report_files=files)


def run_sweep(cfg: SweepConfig, *, resume: bool = False, tracking_uri: str | None = None,
              address: str | None = None, stages=None, show_progress: bool = True) -> SweepResult:
    """Run (or with `resume`, finish) the sweep described by `cfg`; returns its records and front."""
    sweep = Sweep(cfg, resume=resume, tracking_uri=tracking_uri, address=address, stages=stages)
    sweep.prepare_teachers()
    return sweep.run(show_progress=show_progress)


def mlflow_hint(result: SweepResult) -> str:
    return f"{ui_command(result.tracking_uri)}\n  then open {ui_url(result.tracking_uri, result.experiment_id)}"
