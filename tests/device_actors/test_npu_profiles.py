"""NPU profiles as data files, and the placement rules they drive, on hand-written operator lists
(the rules on a real exported model: tests/orchestrator/test_inspect.py)."""
from __future__ import annotations

import pytest

from device_actors.npu import ProfileError, load_profile, placement_of, profile_names
from device_actors.npu.placement import GraphOp, TensorInfo


def _t(index: int, dtype: str = "int8", shape=(1, 8, 8, 16), scales: int = 1, constant: bool = False,
       scale: float = 0.1) -> TensorInfo:
    return TensorInfo(index=index, dtype=dtype, shape=tuple(shape), scales=scales, constant=constant, scale=scale)


def _op(index: int, name: str, inputs=(), outputs=(), custom: bool = False) -> GraphOp:
    return GraphOp(index=index, name=name, custom=custom, inputs=tuple(inputs),
                   input_slots=tuple(range(len(inputs))), outputs=tuple(outputs))


def test_every_shipped_profile_loads_and_names_its_sources():
    assert {"vx", "xnnpack"} <= set(profile_names())
    for name in profile_names():
        profile = load_profile(name)
        assert profile.name == name and profile.sources and "CONV_2D" in profile.ops
    assert any("3f4759e07221e6b90bd82989b65febdaaf9ec0ea" in s for s in load_profile("vx").sources)
    assert load_profile("vx").weights == "per-tensor" and load_profile("xnnpack").weights == "any"


def test_a_bad_profile_file_names_the_file_and_each_bad_key(tmp_path):
    path = tmp_path / "my-npu.yaml"
    path.write_text("name: mine\ndescription: d\naccelerator: NPU\nfallback: CPU\nformats: [tflite]\n"
                    "sources: [here]\nops: 3\nweights: per-row\ncolour: red\n")
    with pytest.raises(ProfileError) as info:
        load_profile(str(path))
    message = str(info.value)
    assert message.startswith(f"{path}: ")
    assert "key ops:" in message and "key weights:" in message and "key colour:" in message


def test_a_profile_that_is_not_yaml_names_the_file_and_line(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("name: x\nops: [CONV_2D\n")
    with pytest.raises(ProfileError, match=rf"{path} line \d+: not YAML"):
        load_profile(str(path))


def test_an_unknown_profile_lists_the_shipped_ones():
    with pytest.raises(ProfileError, match="unknown NPU profile 'ethos'; known profiles: vx, xnnpack"):
        load_profile("ethos")


def test_each_rule_gives_its_reason_and_runs_of_delegated_ops_count_as_partitions():
    weights = _t(1, scales=16, constant=True)
    ops = [
        _op(0, "CONV_2D", [_t(0), weights, _t(2, "int32", (16,), 16, True)], [_t(3)]),
        _op(1, "LOGISTIC", [_t(3)], [_t(4)]),
        _op(2, "RESHAPE", [_t(4), _t(5, "int32", (4,), 0)], [_t(6)]),  # its shape is computed: dynamic
        _op(3, "ADD", [_t(6, "int16"), _t(6, "int16")], [_t(7, "int16")]),
        _op(4, "MUL", [_t(7, scales=0), _t(7)], [_t(8)]),
        _op(5, "NON_MAX_SUPPRESSION_V5", [_t(8)], [_t(9)]),
        _op(6, "TFLite_Detection_PostProcess", [_t(9)], [_t(10)], custom=True),
        _op(7, "ADD", [_t(10), _t(10)], [_t(11, shape=(1, -1, 16))]),
        _op(8, "CONCATENATION", [_t(11, shape=(1, 4, 16))], [_t(12, shape=(1, 4, 16))]),
        _op(9, "MAX_POOL_2D", [_t(12)], [_t(13)]),
    ]
    placement = placement_of(ops, load_profile("vx"), fmt="tflite")
    reasons = [p.reasons for p in placement.ops]
    assert reasons[0] == ("per-channel quantized weights (16 scales); the profile needs per-tensor",)
    assert reasons[1] == ()
    assert reasons[2] == ("dynamic shape (input 1 is computed at run time)",)
    assert reasons[3] == ("int16 activations",)
    assert reasons[4] == ("int8 tensor without quantization parameters",)
    assert reasons[5] == ("operator NON_MAX_SUPPRESSION_V5 unsupported",)
    assert reasons[6] == ("custom op TFLite_Detection_PostProcess",)
    assert reasons[7] == ("dynamic shape (a -1 dimension)",)
    assert [p.runs_on for p in placement.ops][:2] == ["CPU", "NPU"]
    assert placement.summary() == "delegated 3 of 10 ops in 2 partitions; 7 fall back"
    assert placement.metrics() == {"npu_ops": 10, "npu_delegated_ops": 3, "npu_partitions": 2, "npu_fallback_ops": 7}
    # XNNPACK takes per-channel weights; an ONNX model's nodes are not the TFLite profile's to place
    assert placement_of(ops[:2], load_profile("xnnpack"), fmt="tflite").summary() == \
        "delegated 2 of 2 ops in 1 partitions; 0 fall back"
    onnx = placement_of([_op(0, "Conv")], load_profile("vx"), fmt="onnx")
    assert onnx.ops[0].reasons == ("the profile covers tflite models, not onnx",)


def test_a_requantization_outside_the_profiles_range_or_between_8_bit_types_falls_back():
    profile = load_profile("xnnpack")
    to_uint8 = _op(0, "QUANTIZE", [_t(0)], [_t(1, "uint8")])
    assert placement_of([to_uint8], profile, fmt="tflite").ops[0].reasons == ("requantization from int8 to uint8",)
    assert placement_of([to_uint8], load_profile("vx"), fmt="tflite").delegated == 1
    tiny_ratio = _op(0, "QUANTIZE", [_t(0, scale=1e-10)], [_t(1, scale=1e-6)])
    assert placement_of([tiny_ratio], profile, fmt="tflite").ops[0].reasons == \
        ("requantization by 0.0001, outside 0.00390625-128",)
    halving = _op(0, "QUANTIZE", [_t(0, scale=0.1)], [_t(1, scale=0.2)])
    assert placement_of([halving], profile, fmt="tflite").delegated == 1
