"""What the sweep's MLflow runs call things: our tag names, the grouped metric names of a trial's
results, and a trial run's name. The one module that owns them, so the writer (`store`), the UI
links (`ui`) and every reader agree on a name by importing it rather than spelling it again.
"""
from __future__ import annotations

from orchestrator.config import PER_BOARD

SWEEP_TAG = "edgesweep.sweep_dir"  # on the sweep's parent run: its sweep directory
TRIAL_TAG = "edgesweep.trial_id"
FINISHED_TAG = "edgesweep.finished"  # "true": the run holds the trial's end
STATUS_TAG = "edgesweep.status"  # why a run was KILLED (interrupted, stopped before the end)
ERROR_TAG = "edgesweep.error"  # a FAILED trial's error
RETRIED_TAG = "edgesweep.retried_after"  # on a failed trial's run reopened by --retry-failed: the earlier error
TEACHER_TAG = "edgesweep.teacher"  # on a teacher's run: "name@img_size"
TEACHER_RUN_TAG = "edgesweep.teacher_run_id"  # on a distilled trial's run: its teacher's run
PARETO_TAG = "edgesweep.pareto"  # on trial runs and model versions: "true" while on the front
WINS_TAG = "edgesweep.wins"  # on a front's model version: the objectives it is best at
FORMAT_TAG = "edgesweep.format"
SHA256_TAG = "edgesweep.artifact_sha256"
STUDENT_TAG = "edgesweep.student"  # the key of the trained student the trial exported (orchestrator.students)
RETIMED_TAG = "edgesweep.latency_retimed"  # "true": the front's latency was timed again with the sweep idle
STUDENT_TRAINED_TAG = "edgesweep.student_trained"  # "true": this trial trained it; "false": another trial had

EPOCH_KEYS = ("lr", "images_per_second")  # per-epoch metrics besides loss_* and val_* (the epoch is the step)
ARTIFACT_METRICS = ("map50_95", "map50", "precision", "recall", "size_mb")  # the exported file, scored in its runtime
# board/...: first_run_ms is the first inference, apart (a delegate compiles its graph there); board/delegated_ops
# and board/delegate_partitions what the board's interpreter delegated (device_actors.npu.delegated)
BOARD_METRICS = ("latency_ms", "latency_p90_ms", "latency_cv", "fps", "board_map50_95", "board_map50", "first_run_ms",
                 "board_delegated_ops", "board_delegate_partitions")


def metric_name(key: str) -> str | None:
    """A trial result's key as its grouped MLflow metric (None: not a metric): the UI then shows
    artifact/, board/ (board/NAME/ per board of a several-board sweep), float/ (the PyTorch model's
    val mAP), npu/ (the artifact's operators under the NPU profile), train/ and val/ sections."""
    if key in ARTIFACT_METRICS:
        return f"artifact/{key}"
    if key in BOARD_METRICS:
        return f"board/{key.removeprefix('board_')}"
    if key.startswith(f"{PER_BOARD}@"):  # latency_ms@rpi4 -> board/rpi4/latency_ms
        return f"board/{key.partition('@')[2]}/{PER_BOARD}"
    if key.startswith("float_"):
        return f"float/{key.removeprefix('float_')}"
    if key.startswith("npu_"):  # npu/delegated_ops, npu/partitions, npu/fallback_ops: under board.npu_profile
        return f"npu/{key.removeprefix('npu_')}"
    if key == "train_s":  # the student's training seconds, teacher forwards included: what the trial cost
        return "train/seconds"
    if key == "loss_kd_to_detection":
        return "train/kd_to_detection"
    if key.startswith("loss_"):
        return f"train/{key.removeprefix('loss_')}_loss"
    if key.startswith("val_"):
        return f"val/{key.removeprefix('val_')}"
    return f"train/{key}" if key in EPOCH_KEYS else None


def run_name(knobs: dict) -> str:
    """A trial's run name: its `TrialSpec.label` ("cwd x0.8 · onnx-int8 · 320px")."""
    from orchestrator.trial_spec import TrialSpec

    return TrialSpec.of(knobs).label


def result_tags(m: dict) -> dict[str, str]:
    """The edgesweep.* tags of a complete trial's metrics `m` (filterable in the UI:
    tags.`edgesweep.format` = 'onnx-int8')."""
    return {FORMAT_TAG: str(m.get("format")), SHA256_TAG: str(m.get("artifact_sha256")),
            "edgesweep.board_emulated": str(bool(m.get("board_emulated"))).lower(),
            "edgesweep.board_emulation": str(m.get("board_emulation") or ""),
            "edgesweep.board_node": str(m.get("board_node") or ""),
            "edgesweep.stand_in_stages": str(bool(m.get("stand_in"))).lower(),
            STUDENT_TAG: str(m.get("student_key") or ""),
            STUDENT_TRAINED_TAG: str(bool(m.get("student_trained"))).lower()}
