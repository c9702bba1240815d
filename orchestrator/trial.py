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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ray
from ray import tune

from orchestrator.config import METRICS, latency_keys
from orchestrator.stages import EpochUpdate, Stages, TrainedModel, TrainSpec
from trainables.kd.registry import kd_method

log = logging.getLogger(__name__)

OBJECTIVE_KEYS = tuple(METRICS)  # map50_95, map50, latency_ms, size_mb (+ latency_ms@NAME): in every report
STATE_FILE = "state.json"
STUDENT_FILE = "student.pt"


@dataclass(frozen=True)
class TrialContext:
    """Everything a trial needs besides its knobs; built once by the driver."""

    space: Any  # search_spaces.SearchSpace: completes the sampled knobs
    train_spec: TrainSpec
    trainers: Any  # orchestrator.trainers.TrainSlots: where a student trains
    export_options: dict = field(default_factory=dict)  # Ray options of the export-and-score task
    teachers: dict = field(default_factory=dict)  # "name@img_size" -> ObjectRef of its TrainedModel (may be training)
    boards: tuple = ()  # device_actors.client.Board per board.names; every artifact is timed on each
    board_timeout_s: float = 3600.0
    timing: Any = None  # device_actors.timing.TimingProtocol
    runtime_options: Any = None  # callable threads -> RuntimeOptions
    board_val: Any = None  # ObjectRef of the packed val split when the board scores artifacts too
    stages: Stages | None = None  # RealStages; tests swap in the stand-ins of orchestrator.stand_in_stages

    @property
    def board(self) -> Any:
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


def _report_stage(stage: str, knobs: dict, ctx: TrialContext, epoch: int | None = None) -> None:
    """Say where the trial is (the live view's stage column; a failed trial's record keeps it).
    No checkpoint: the last one still holds everything a retry needs."""
    tune.report({"stage": stage, "epoch": knobs["epochs"] if epoch is None else epoch, "epochs": knobs["epochs"],
                 "trial_complete": False, **_nan_objectives(ctx)})


def _system(facts: dict) -> str:
    """The board's system, in one line for the sessions table: CPU, cores, OS, kernel."""
    return ", ".join(str(facts[k]) for k in ("soc", "cpu_model", "machine", "os", "kernel") if facts.get(k)) + \
        (f", {facts['cores']} cores" if facts.get("cores") else "")


def run_trial(config: dict, ctx: TrialContext) -> None:
    """The Tune trainable (bound to its context with `tune.with_parameters`)."""
    stages = ctx.stages
    knobs = ctx.space.complete(config)
    state, student = _read_state(tune.get_checkpoint())
    if state["stage"] == "done":  # finished before the driver went down: report again, redo nothing
        tune.report(state["final"])
        return
    float_metrics: dict = state.get("float_metrics", {})
    if knobs["epochs"] == 0:  # a quantization-only sweep: the given checkpoint is the student
        student = Path(knobs["student_init"]).read_bytes()
    elif state["stage"] != "trained":
        distills = kd_method(knobs["kd_method"]).needs_teacher
        teacher = ctx.teachers.get(f"{knobs['teacher']}@{knobs['img_size']}") if distills else None
        if teacher is not None and not ray.wait([teacher], timeout=0)[0]:
            _report_stage("teacher", knobs, ctx, epoch=0)  # teachers train alongside the first trials
            ray.wait([teacher], timeout=None)
        for item in ctx.trainers.stream(stages.train_stream, knobs, ctx.train_spec, teacher, student):
            if isinstance(item, EpochUpdate):
                trained = item.epoch == item.epochs
                float_metrics = item.metrics or float_metrics
                _report(_epoch_metrics(item, ctx), {STUDENT_FILE: item.checkpoint},
                        {"stage": "trained" if trained else "train", "epoch": item.epoch,
                         "float_metrics": float_metrics})
            elif isinstance(item, TrainedModel):
                student, float_metrics = item.checkpoint, item.metrics or float_metrics
    _report_stage("export", knobs, ctx)
    exported = stages.export_and_score(student, knobs, ctx)
    _report_stage("board", knobs, ctx)  # queued or timing: a board that left the cluster shows here until the timeout
    reports = stages.time_on_board(exported, knobs, ctx)
    latency = reports[ctx.board.name]
    on_board = stages.score_on_board(exported, knobs, ctx) if ctx.board_val is not None else {}
    final = {
        "stage": "done", "trial_complete": True, "epoch": knobs["epochs"], "epochs": knobs["epochs"],
        "map50_95": exported.metrics["map50_95"], "map50": exported.metrics["map50"],
        "precision": exported.metrics["precision"], "recall": exported.metrics["recall"],
        "latency_ms": latency["median_ms"], "latency_p90_ms": latency["p90_ms"], "latency_cv": latency["cv"],
        "fps": latency["fps"], "latency_mean_ms": latency["mean_ms"], "preprocess_ms": latency["preprocess_ms"],
        "postprocess_ms": latency["postprocess_ms"], "board_system": _system(latency.get("facts") or {}),
        "size_mb": exported.size_mb, "format": exported.format,
        "board_emulated": any(r["emulated"] for r in reports.values()),  # any board's latency is emulated
        "board_emulation": latency.get("emulation"), "board_node": latency["node_id"],
        "board_map50_95": on_board.get("map50_95", math.nan), "board_map50": on_board.get("map50", math.nan),
        "artifact_sha256": exported.sha256, "stand_in": bool(exported.settings.get("stand_in", False)),
        **{f"float_{k}": v for k, v in float_metrics.items()},
    }
    # latency_ms is the first board's; with several boards each one's own is latency_ms@NAME
    final.update(zip(latency_keys(reports), (r["median_ms"] for r in reports.values())))
    _report(final, {STUDENT_FILE: student, exported.filename: exported.content, **exported.previews,
                    "latency.json": json.dumps(latency, indent=2, default=str),
                    **({f"latency-{name}.json": json.dumps(r, indent=2, default=str) for name, r in reports.items()}
                       if len(reports) > 1 else {}),
                    "export.json": json.dumps(exported.describe(), indent=2, default=str)},
            {"stage": "done", "epoch": knobs["epochs"], "float_metrics": float_metrics, "final": final})
