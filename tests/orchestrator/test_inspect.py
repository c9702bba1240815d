"""`inspect MODEL --npu PROFILE` on a real int8 TFLite export, what the sweep does with the counts
(metrics, the per-op table, the `npu_fallback_ops_max` constraint), and the board's count of what
its interpreter delegated.

There is no NPU here, so the VX delegate cannot be loaded: the measured side uses the one real
delegate this machine has, LiteRT's XNNPACK, and checks that the `xnnpack` profile predicts what it
takes. The VX delegate's own count is only had on a board (`board.delegate`)."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from device_actors.npu import load_profile, model_placement
from orchestrator.cli import main
from orchestrator.config import ConstraintsConfig
from orchestrator.pareto import front, violations
from orchestrator.results import TrialRecord

SUMMARY = re.compile(r"^delegated (\d+) of (\d+) ops in (\d+) partitions; (\d+) fall back$")


@pytest.fixture(scope="module")
def int8_tflite(tmp_path_factory) -> Path:
    """An untrained YOLO-n exported as per-channel static int8 TFLite at 64 px (4 calibration images):
    the demo's kind of artifact, in about 15 s."""
    from detection.coco import CocoDataset, SplitSpec
    from detection.synth import SynthConfig, generate
    from tests.exports import tools_problem
    from trainables.checkpoint import save_checkpoint
    from trainables.export import export_formats, get_format
    from trainables.models.yolo import ModelSpec, build_model

    problem = tools_problem(get_format("tflite-int8"))
    if problem:
        pytest.skip(problem)
    root = tmp_path_factory.mktemp("inspect")
    generate(root / "data", train=8, val=2, seed=0, config=SynthConfig(size=64))
    data = CocoDataset(SplitSpec(root / "data" / "train", root / "data" / "instances_train.json"))
    spec = ModelSpec("n", data.num_classes)
    save_checkpoint(root / "student.pt", {"model_spec": spec.to_dict(), "model": build_model(spec).state_dict()})
    [artifact] = export_formats(root / "student.pt", ["tflite-int8"], root / "out", img_size=64, calibration=data,
                                calib_images=4)
    return Path(artifact.path)


def _inspect(capsys, *argv: str) -> tuple[int, list[str], str]:
    code = main(["inspect", *argv])
    captured = capsys.readouterr()
    return code, captured.out.splitlines(), captured.err


def test_inspect_flags_per_channel_convolutions_under_vx_and_ends_with_the_summary(int8_tflite, capsys):
    code, lines, _ = _inspect(capsys, str(int8_tflite), "--npu", "vx")
    assert code == 0
    convs = [line for line in lines if re.match(r"^\s*\d+\s+CONV_2D\s", line)]
    assert convs and all(" CPU " in line and "per-channel quantized weights" in line and "needs per-tensor" in line
                         for line in convs)
    delegated, total, partitions, fallback = map(int, SUMMARY.match(lines[-1]).groups())
    assert delegated + fallback == total == len(lines) - 3  # the profile line, the header, the summary
    assert fallback == len(convs) and partitions >= 1
    assert any(re.match(r"^\s*\d+\s+LOGISTIC\s+NPU\s+-$", line) for line in lines)


def test_the_xnnpack_profile_predicts_what_the_real_xnnpack_delegate_takes(int8_tflite):
    """XNNPACK stands in for a board's delegate: it is real here, applied by LiteRT by default."""
    from device_actors.runtimes import RuntimeOptions, get_runtime

    model = int8_tflite.read_bytes()
    predicted = model_placement(model, load_profile("xnnpack"))
    session = get_runtime("tflite").load(model, RuntimeOptions())
    assert session.delegation.ops == len(predicted.ops)
    assert (session.delegation.delegated_ops, session.delegation.partitions) == (predicted.delegated,
                                                                                 predicted.partitions)
    assert 0 < predicted.delegated < len(predicted.ops)  # RESIZE_NEAREST_NEIGHBOR is not XNNPACK's
    bare = get_runtime("tflite").load(model, RuntimeOptions(xnnpack=False))
    assert (bare.delegation.delegated_ops, bare.delegation.partitions) == (0, 0)


def test_trials_above_npu_fallback_ops_max_are_infeasible(int8_tflite):
    metrics = model_placement(int8_tflite.read_bytes(), load_profile("vx")).metrics()
    fallback = metrics["npu_fallback_ops"]
    assert fallback > 0
    assert violations(ConstraintsConfig(npu_fallback_ops_max=0), metrics) == {"npu_fallback_ops_max": fallback}
    assert violations(ConstraintsConfig(npu_fallback_ops_max=fallback), metrics) == {"npu_fallback_ops_max": 0}
    per_channel = TrialRecord("per-channel", "complete", {}, {"map50_95": 0.5, "latency_ms": 1.0, **metrics})
    on_npu = TrialRecord("on-npu", "complete", {}, {"map50_95": 0.4, "latency_ms": 2.0, **metrics,
                                                     "npu_fallback_ops": 0})
    objectives = [("map50_95", "max"), ("latency_ms", "min")]
    assert [r.trial_id for r in front([per_channel, on_npu], objectives)] == ["per-channel"]
    assert [r.trial_id for r in front([per_channel, on_npu], objectives,
                                      ConstraintsConfig(npu_fallback_ops_max=0))] == ["on-npu"]


def test_inspect_refuses_a_file_that_is_not_a_model(tmp_path, capsys):
    notes = tmp_path / "notes.txt"
    notes.write_text("not a model")
    code, _, err = _inspect(capsys, str(notes))
    assert code == 2 and f"{notes}: not a model file" in err
    code, _, err = _inspect(capsys, str(tmp_path / "missing.tflite"))
    assert code == 2 and "missing.tflite: no such model file" in err


def test_inspect_with_a_bad_profile_names_the_file_and_key(int8_tflite, tmp_path, capsys):
    profile = tmp_path / "npu.yaml"
    profile.write_text("name: mine\n")
    code, _, err = _inspect(capsys, str(int8_tflite), "--npu", str(profile))
    assert code == 2 and f"{profile}: key description: Field required" in err


def test_a_trials_placement_goes_to_mlflow_as_npu_metrics_and_a_table_file(tmp_path):
    from orchestrator.tracking.names import metric_name
    from orchestrator.tracking.store import trial_files

    assert [metric_name(k) for k in ("npu_delegated_ops", "npu_partitions", "npu_fallback_ops", "first_run_ms",
                                     "board_delegated_ops")] == \
        ["npu/delegated_ops", "npu/partitions", "npu/fallback_ops", "board/first_run_ms", "board/delegated_ops"]
    for name in ("npu-placement.txt", "notes.txt"):
        (tmp_path / name).write_text("x")
    assert [f.name for f in trial_files(tmp_path)] == ["npu-placement.txt"]
