"""The NPU knobs at config check: a combination no artifact can be is refused naming the key path and
what is allowed (exit 2 from the CLI), and a valid one reaches the trial's export stage typed."""
from __future__ import annotations

import pytest

from orchestrator.config import parse_config
from orchestrator.errors import ConfigError
from orchestrator.trial_spec import TrialSpec
from tests.orchestrator.test_bad_input import (assert_refused_before_anything_started, data,  # noqa: F401 - fixtures
                                               pristine_data, ray_tripwire, sweep_file)
from trainables.export.registry import ArtifactShape


def config(search: dict, fixed: dict) -> dict:
    return {"name": "t", "search": search, "fixed": {"epochs": 1, **fixed}, "searcher": {"algorithm": "tpe", "trials": 4}}


INT8_OR_FP32 = {"quantization": {"choice": ["fp32", "int8"]}}


@pytest.mark.parametrize("search, fixed, expected", [
    ({"img_size": {"choice": [128, 160]}}, {"int8_granularity": "per-tensor"},
     "fixed.int8_granularity: only used when quantization is one of int8"),
    ({"runtime": {"choice": ["onnxruntime", "tflite"]}}, {"quantization": "int8", "int8_io": "nhwc-uint8"},
     "fixed.int8_io: onnx-int8 takes int8_io nchw only, but int8_io can be 'nhwc-uint8' while runtime can be "
     "onnxruntime"),
    ({"int8_io": {"choice": ["nchw", "nhwc-int8"]}, **INT8_OR_FP32}, {},
     "search.int8_io: onnx-int8 takes int8_io nchw only, but int8_io can be 'nhwc-int8'"),
    (INT8_OR_FP32, {"decode": "host", "outputs": "split"},
     "fixed.outputs: only used when decode is one of graph, but decode is always 'host'"),
    (INT8_OR_FP32, {"int8_granularity": "per-tensors"},
     "fixed.int8_granularity: 'per-tensors' is not an int8 granularity; allowed: per-channel, per-tensor"),
    (INT8_OR_FP32, {"decode": "device"}, "fixed.decode: 'device' is not a decode placement; allowed: graph, host"),
])
def test_a_combination_no_artifact_can_be_is_refused_naming_the_key(search, fixed, expected):
    with pytest.raises(ConfigError) as info:
        parse_config(config(search, fixed), source="kd.yaml")
    assert expected in str(info.value)


def test_searched_npu_knobs_reach_the_export_stage_as_their_format_reads_them():
    cfg = parse_config(config({**INT8_OR_FP32, "int8_granularity": {"choice": ["per-channel", "per-tensor"]}},
                              {"runtime": "tflite", "int8_io": "nhwc-uint8", "decode": "host"}), source="kd.yaml")
    npu = TrialSpec.of(cfg.search.complete({"quantization": "int8", "int8_granularity": "per-tensor"}))
    assert npu.export.shape == ArtifactShape(int8_granularity="per-tensor", int8_io="nhwc-uint8", decode="host")
    float_trial = TrialSpec.of(cfg.search.complete({"quantization": "fp32"}))
    assert float_trial.export.shape == ArtifactShape(decode="host")  # fp32 reads neither int8 knob


def test_the_sweep_command_refuses_per_tensor_with_fp32_only_with_exit_2(tmp_path, data, capsys):  # noqa: F811
    config_file = sweep_file(tmp_path, data, search={"img_size": {"choice": [64, 96]}},
                             fixed={"epochs": 1, "int8_granularity": "per-tensor"})
    assert_refused_before_anything_started(config_file, capsys, "fixed.int8_granularity: only used when quantization")
