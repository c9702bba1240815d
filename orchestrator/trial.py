"""One sweep trial as a Ray Tune function trainable: train -> export -> score -> time -> report.

Every `tune.report` carries every objective key (Tune's OptunaSearch insists); until the trial is
done they are NaN, and only the last report, with `trial_complete: True`, holds the artifact's
real accuracy and board latency. Each epoch's report carries a checkpoint with the training state,
so a failed or preempted trial resumes training where it stopped; once trained, the checkpoint says
so and a resumed trial goes straight to export.
"""
from __future__ import annotations

import json
import logging
import math
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import ray
from ray import tune

from device_actors.npu.placement import TABLE_FILE as NPU_TABLE
from orchestrator.config import METRICS, latency_keys
from orchestrator.stages import EpochUpdate, Stages, TrainedModel, TrainSpec
from orchestrator.trial_spec import TrialSpec

if TYPE_CHECKING:
    from device_actors.client import Board
    from device_actors.npu import NpuProfile, Placement
    from device_actors.runtimes import RuntimeOptions
    from device_actors.timing import TimingProtocol
    from orchestrator.students import Students
    from orchestrator.trainers import TrainSlots
    from search_spaces import SearchSpace

log = logging.getLogger(__name__)

OBJECTIVE_KEYS = tuple(METRICS)  # map50_95, map50, latency_ms, size_mb (+ latency_ms@NAME): in every report
STATE_FILE = "state.json"
STUDENT_FILE = "student.pt"


@dataclass(frozen=True)
class TrialContext:
    """Everything a trial needs besides its knobs; built once by the driver."""

    space: SearchSpace  # completes the sampled knobs
    train_spec: TrainSpec
    trainers: TrainSlots  # where a student trains
    stages: Stages  # RealStages; tests swap in the stand-ins of orchestrator.stand_in_stages
    students: Students  # where a trained student is kept, and who trains which
    timing: TimingProtocol
    runtime_options: Callable[[int], RuntimeOptions]  # the board's threads -> how the board runs an artifact
    export_options: dict = field(default_factory=dict)  # Ray options of the export-and-score task
    teachers: dict[str, ray.ObjectRef] = field(default_factory=dict)  # teacher_key -> its TrainedModel (may train)
    boards: tuple[Board, ...] = ()  # one per board.names; every artifact is timed on each
    board_timeout_s: float = 3600.0
    board_val: ray.ObjectRef | None = None  # the packed val split when the board scores artifacts too
    npu_profile: NpuProfile | None = None  # board.npu_profile, loaded: where each artifact's operators would run

    @property
    def board(self) -> Board:
        """The first board: latency_ms and scoring on the board are its."""
        return self.boards[0]

    @property
    def objective_keys(self) -> tuple[str, ...]:
        return OBJECTIVE_KEYS + latency_keys(b.name for b in self.boards)


def _nan_objectives(ctx: TrialContext) -> dict[str, float]:
    return {k: math.nan for k in ctx.objective_keys}


def _read_state(checkpoint: tune.Checkpoint | None) -> tuple[dict, bytes | None]:
    if checkpoint is None:
        return {"stage": "new"}, None
    with checkpoint.as_directory() as d:
        state = json.loads((Path(d) / STATE_FILE).read_text())
        student = (Path(d) / STUDENT_FILE).read_bytes()
    return state, student


def _report(metrics: dict, files: dict[str, bytes | str], state: dict) -> None:
    with tempfile.TemporaryDirectory(prefix="edgesweep-ckpt-") as d:
        for name, content in files.items():
            path = Path(d) / name
            path.write_bytes(content) if isinstance(content, bytes) else path.write_text(content)
        (Path(d) / STATE_FILE).write_text(json.dumps(state))
        tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(d))


def _epoch_metrics(update: EpochUpdate, ctx: TrialContext) -> dict:
    m = {"stage": "train", "epoch": update.epoch, "epochs": update.epochs, "lr": update.lr,
         "images_per_second": update.images_per_second, "trial_complete": False, **_nan_objectives(ctx)}
    m.update({f"loss_{k}": v for k, v in update.losses.items()})
    m.update({f"val_{k}": v for k, v in update.metrics.items()})
    return m


def _report_stage(stage: str, trial: TrialSpec, ctx: TrialContext, epoch: int | None = None) -> None:
    """Say where the trial is (the live view's stage column; a failed trial's record keeps it).
    No checkpoint: the last one still holds everything a retry needs."""
    epochs = trial.train.epochs
    tune.report({"stage": stage, "epoch": epochs if epoch is None else epoch, "epochs": epochs,
                 "trial_complete": False, **_nan_objectives(ctx)})


def _system(facts: dict) -> str:
    """The board's system, in one line for the sessions table: CPU, cores, OS, kernel."""
    return ", ".join(str(facts[k]) for k in ("soc", "cpu_model", "machine", "os", "kernel") if facts.get(k)) + \
        (f", {facts['cores']} cores" if facts.get("cores") else "")


def _student(trial: TrialSpec, ctx: TrialContext, resume: bytes | None,
             train_s: float) -> tuple[bytes, dict, dict]:
    """The trial's trained student, its float metrics and its provenance: read from the sweep's
    student cache when another trial trained it (waiting while it trains), else trained here on a
    trainer slot (from `resume`, after `train_s` seconds already spent) and stored for the others."""
    from orchestrator.students import CachedStudent, student_key

    teacher = ctx.teachers.get(trial.teacher_key) if trial.teacher_key else None
    if teacher is not None and not ray.wait([teacher], timeout=0)[0]:
        _report_stage("teacher", trial, ctx, epoch=0)  # teachers train alongside the first trials
        ray.wait([teacher], timeout=None)
    key = student_key(trial.train, ctx.train_spec, ray.get(teacher).sha256 if teacher is not None else None)
    trial_id = tune.get_context().get_trial_id()
    found = ctx.students.find_or_claim(key, trial_id, on_wait=lambda: _report_stage("student", trial, ctx, epoch=0))
    if found is not None:
        log.info("trial %s uses student %s, trained by trial %s", trial_id, key, found.trained_by)
        return found.checkpoint, found.metrics, {"key": key, "trained": False, "train_s": found.train_s}
    student, float_metrics = resume, {}
    with ctx.students.training(key, trial_id):
        for item in ctx.trainers.stream(ctx.stages.train_stream, trial, ctx.train_spec, teacher, resume):
            if isinstance(item, EpochUpdate):
                train_s += item.seconds
                float_metrics = item.metrics or float_metrics
                provenance = {"key": key, "trained": True, "train_s": train_s}
                _report(_epoch_metrics(item, ctx), {STUDENT_FILE: item.checkpoint},
                        {"stage": "trained" if item.epoch == item.epochs else "train", "epoch": item.epoch,
                         "float_metrics": float_metrics, "train_s": train_s, "student": provenance})
            elif isinstance(item, TrainedModel):
                student, float_metrics = item.checkpoint, item.metrics or float_metrics
        ctx.students.cache.store(CachedStudent(key, student, float_metrics, train_s, trial_id))
    return student, float_metrics, {"key": key, "trained": True, "train_s": train_s}


def _keep(ctx: TrialContext, provenance: dict, student: bytes, float_metrics: dict) -> None:
    """Store a student this trial trained before it was restarted, unless it is stored already."""
    from orchestrator.students import CachedStudent

    key = provenance["key"]
    if ctx.students.cache.load(key) is None:
        ctx.students.cache.store(CachedStudent(key, student, float_metrics, provenance["train_s"],
                                               tune.get_context().get_trial_id()))


def _placement(model: bytes, ctx: TrialContext) -> Placement | None:
    """Where the artifact's operators would run under the sweep's NPU profile (None without one)."""
    if ctx.npu_profile is None:
        return None
    from device_actors.npu import model_placement

    return model_placement(model, ctx.npu_profile)


def run_trial(config: dict, ctx: TrialContext) -> None:
    """The Tune trainable (bound to its context with `tune.with_parameters`)."""
    stages = ctx.stages
    trial = TrialSpec.of(ctx.space.complete(config))
    state, student = _read_state(tune.get_checkpoint())
    if state["stage"] == "done":  # finished before the driver went down: report again, redo nothing
        tune.report(state["final"])
        return
    float_metrics: dict = state.get("float_metrics", {})
    provenance: dict = state.get("student", {})  # which student, whether this trial trained it, its cost
    if trial.train.epochs == 0:  # a quantization-only sweep: the given checkpoint is the student
        student, provenance = Path(trial.train.student_init).read_bytes(), {"train_s": 0.0}
    elif state["stage"] != "trained":
        student, float_metrics, provenance = _student(trial, ctx, student, state.get("train_s", 0.0))
    elif provenance.get("trained"):  # trained before a restart: make sure the other trials find it
        _keep(ctx, provenance, student, float_metrics)
    _report_stage("export", trial, ctx)
    exported = stages.export_and_score(student, trial, ctx)
    placement = _placement(exported.content, ctx)
    _report_stage("board", trial, ctx)  # queued or timing: a board that left the cluster shows here until the timeout
    reports = stages.time_on_board(exported, trial, ctx)
    latency = reports[ctx.board.name]
    on_board = stages.score_on_board(exported, trial, ctx) if ctx.board_val is not None else {}
    epochs = trial.train.epochs
    final = {
        "stage": "done", "trial_complete": True, "epoch": epochs, "epochs": epochs,
        "map50_95": exported.metrics["map50_95"], "map50": exported.metrics["map50"],
        "precision": exported.metrics["precision"], "recall": exported.metrics["recall"],
        "latency_ms": latency["median_ms"], "latency_p90_ms": latency["p90_ms"], "latency_cv": latency["cv"],
        "fps": latency["fps"], "latency_mean_ms": latency["mean_ms"], "preprocess_ms": latency["preprocess_ms"],
        # the artifact whose measurement this is when the board reused its graph's; whether training was paused
        "latency_reused_from": latency.get("reused_from"), "latency_quiet": latency.get("quiet"),
        "postprocess_ms": latency["postprocess_ms"], "board_system": _system(latency.get("facts") or {}),
        # the first inference, apart (a delegate compiles its graph there), and what the board's interpreter delegated
        "first_run_ms": latency["first_run_ms"], "board_delegated_ops": latency.get("delegated_ops"),
        "board_delegate_partitions": latency.get("delegate_partitions"),
        "size_mb": exported.size_mb, "format": exported.format,
        "board_emulated": any(r["emulated"] for r in reports.values()),  # any board's latency is emulated
        "board_emulation": latency.get("emulation"), "board_node": latency["node_id"],
        "board_map50_95": on_board.get("map50_95", math.nan), "board_map50": on_board.get("map50", math.nan),
        "artifact_sha256": exported.sha256, "stand_in": bool(exported.settings.get("stand_in", False)),
        "student_key": provenance.get("key"), "student_trained": provenance.get("trained"),
        "train_s": provenance.get("train_s", math.nan),
        **{f"float_{k}": v for k, v in float_metrics.items()},
        **(placement.metrics() if placement is not None else {}),
        # int8-mixed: how many convolutions it kept float (their names: export.json's settings, the file's metadata)
        **({"float_layers": len(exported.settings["float_layers"])} if "float_layers" in exported.settings else {}),
    }
    # latency_ms is the first board's; with several boards each one's own is latency_ms@NAME
    final.update(zip(latency_keys(reports), (r["median_ms"] for r in reports.values())))
    _report(final, {STUDENT_FILE: student, exported.filename: exported.content, **exported.previews,
                    "latency.json": json.dumps(latency, indent=2, default=str),
                    **({f"latency-{name}.json": json.dumps(r, indent=2, default=str) for name, r in reports.items()}
                       if len(reports) > 1 else {}),
                    "export.json": json.dumps(exported.describe(), indent=2, default=str),
                    **({NPU_TABLE: placement.table()} if placement is not None else {})},
            {"stage": "done", "epoch": epochs, "float_metrics": float_metrics, "final": final})
