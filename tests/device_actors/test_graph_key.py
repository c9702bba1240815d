"""Graph keys: artifacts that differ only in weight values share one; a change of operators, shapes
or quantization layout gives another. Toy ONNX detectors (device_actors.toy_model) for the ONNX
reader's details, and the trained student's real exports in every registered format, exported
again from its other weights (the checkpoint's raw weights instead of their EMA), for each format."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from device_actors.runtimes import RUNTIMES, graph_key
from device_actors.runtimes import onnx_graph
from device_actors.toy_model import toy_detector_onnx

onnx = pytest.importorskip("onnx")  # builds the variants; the board reads keys without it


def _key(model: bytes) -> str:
    return graph_key("onnxruntime", model)


def test_field_numbers_are_those_of_the_onnx_protobuf():
    fields = {m: {f.name: f.number for f in getattr(onnx, m).DESCRIPTOR.fields}
              for m in ("ModelProto", "GraphProto", "NodeProto", "TensorProto", "ValueInfoProto", "AttributeProto")}
    assert (fields["ModelProto"]["graph"], fields["ModelProto"]["opset_import"]) == (7, 8)
    assert [fields["GraphProto"][n] for n in ("node", "initializer", "input", "output")] == [1, 5, 11, 12]
    assert [fields["NodeProto"][n] for n in ("input", "output", "op_type", "attribute", "domain")] == [1, 2, 4, 5, 7]
    assert [fields["TensorProto"][n] for n in ("dims", "data_type", "name")] == [1, 2, 8]
    assert onnx_graph._TENSOR_DATA == {fields["TensorProto"][n] for n in (
        "float_data", "int32_data", "string_data", "int64_data", "raw_data", "double_data", "uint64_data")}
    assert [fields["AttributeProto"][n] for n in ("name", "t", "g", "tensors", "graphs")] == [1, 5, 6, 10, 11]
    dropped = {"model": ("producer_name", "producer_version", "domain", "model_version", "doc_string",
                         "metadata_props"), "graph": ("name", "doc_string", "value_info", "metadata_props"),
               "node": ("name", "doc_string", "metadata_props"), "tensor": ("name", "doc_string", "metadata_props"),
               "value": ("name", "doc_string", "metadata_props"), "attribute": ("doc_string",)}
    protos = {"model": "ModelProto", "graph": "GraphProto", "node": "NodeProto", "tensor": "TensorProto",
              "value": "ValueInfoProto", "attribute": "AttributeProto"}
    for part, names in dropped.items():
        assert onnx_graph._NAMES_AND_DOCS[part] == {fields[protos[part]][n] for n in names}, part


def test_an_onnx_model_with_other_weights_has_the_same_graph_key():
    one, other = toy_detector_onnx(96, width=8, seed=0), toy_detector_onnx(96, width=8, seed=1)
    assert one != other and _key(one) == _key(other)


@pytest.mark.parametrize("change", [dict(width=16), dict(depth=3), dict(img_size=64), dict(num_classes=3)])
def test_other_widths_depths_input_sizes_and_heads_have_other_graph_keys(change):
    assert _key(toy_detector_onnx(**{"img_size": 96, "width": 8, **change})) != _key(toy_detector_onnx(96, width=8))


def test_names_doc_strings_and_producer_do_not_enter_the_key_but_a_reshape_target_does():
    model = onnx.load_from_string(toy_detector_onnx(96, width=8))
    renamed = {name: f"renamed_{i}" for i, name in enumerate(
        [*(i.name for i in model.graph.initializer), *(o for n in model.graph.node for o in n.output)])}
    for node in model.graph.node:
        node.name, node.doc_string = node.name + "_x", "exported by a test"
        node.input[:] = [renamed.get(i, i) for i in node.input]
        node.output[:] = [renamed.get(o, o) for o in node.output]
    for init in model.graph.initializer:
        init.name = renamed[init.name]
    model.graph.output[0].name = renamed[model.graph.output[0].name]
    model.producer_name, model.graph.name = "someone else", "another name"
    assert _key(model.SerializeToString()) == _key(toy_detector_onnx(96, width=8))

    reshaped = onnx.load_from_string(toy_detector_onnx(96, width=8))
    target = next(i for i in reshaped.graph.initializer if i.name == "s2")
    shape = onnx.numpy_helper.to_array(target).copy()
    shape[1] = -1  # the same result, but another int64 constant: shapes are structure, not weights
    target.CopyFrom(onnx.numpy_helper.from_array(shape, "s2"))
    assert _key(reshaped.SerializeToString()) != _key(toy_detector_onnx(96, width=8))


def _quantized(model: bytes, tmp_path: Path, name: str, **settings) -> bytes:
    """The toy model quantized by onnxruntime's static quantizer (QDQ), calibrated on random images."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, quantize_static

    class Images(CalibrationDataReader):
        def __init__(self):
            rng = np.random.default_rng(0)
            self._batches = iter([{"images": rng.random((1, 3, 96, 96), dtype=np.float32)} for _ in range(4)])

        def get_next(self):
            return next(self._batches, None)

    source, out = tmp_path / f"{name}-fp32.onnx", tmp_path / f"{name}.onnx"
    source.write_bytes(model)
    quantize_static(str(source), str(out), Images(), quant_format=QuantFormat.QDQ, **settings)
    return out.read_bytes()


def test_quantization_layout_enters_the_key_but_scales_and_zero_points_do_not(tmp_path):
    from onnxruntime.quantization import QuantType

    one, other = toy_detector_onnx(96, width=8, seed=0), toy_detector_onnx(96, width=8, seed=1)
    per_channel = _quantized(one, tmp_path, "a", per_channel=True)
    per_channel_other = _quantized(other, tmp_path, "b", per_channel=True)
    per_tensor = _quantized(one, tmp_path, "c", per_channel=False)
    unsigned = _quantized(one, tmp_path, "d", per_channel=True, activation_type=QuantType.QUInt8)  # default: int8
    assert per_channel != per_channel_other and _key(per_channel) == _key(per_channel_other)
    assert len({_key(per_channel), _key(per_tensor), _key(unsigned), _key(one)}) == 4


def test_bytes_that_are_no_model_have_no_graph_key(caplog):
    for name in RUNTIMES:
        assert graph_key(name, b"\x08\x07 this is not a model") is None
    assert "is timed, not matched by graph" in caplog.text


# ---- the student's real exports, in every registered format ------------------------------------


@pytest.fixture(scope="module")
def other_weights_exports(student_exports, tmp_path_factory):
    """The same student exported again from its raw (not averaged) weights: every format's file has
    the same graph and other weights."""
    import torch

    from tests.exports import StudentExports
    from trainables.checkpoint import load_checkpoint

    checkpoint = load_checkpoint(Path(student_exports.checkpoint))
    checkpoint["model"] = checkpoint["raw_model"]
    path = tmp_path_factory.mktemp("raw-weights") / "raw.pt"
    torch.save(checkpoint, path)
    return StudentExports(path, student_exports.splits, tmp_path_factory.mktemp("raw-weights-exports"))


def _formats() -> list[str]:
    """The registered formats but those slow to build (QAT fine-tunes, int8-mixed searches)."""
    from trainables.export import FORMATS

    return [f.name for f in FORMATS.values() if not f.slow_build]


def _format_params() -> list:
    """Every format; one slow to build runs with the slow tests."""
    from trainables.export import FORMATS

    return [pytest.param(f.name, marks=pytest.mark.slow) if f.slow_build else f.name for f in FORMATS.values()]


@pytest.mark.parametrize("fmt", _format_params())
def test_each_format_exported_from_other_weights_keeps_its_graph_key(fmt, student_exports, other_weights_exports):
    one, other = student_exports.get(fmt), other_weights_exports.get(fmt)
    first = graph_key(one.runtime, one.read_bytes())
    if first is None:
        pytest.skip(f"runtime {one.runtime} cannot read graphs here")
    assert one.sha256 != other.sha256
    assert graph_key(other.runtime, other.read_bytes()) == first


def test_every_format_of_one_student_has_its_own_graph_key(student_exports):
    keys = {fmt: graph_key(student_exports.get(fmt).runtime, student_exports.get(fmt).read_bytes())
            for fmt in _formats()}
    known = {k for k in keys.values() if k is not None}
    assert len(known) == sum(k is not None for k in keys.values()), keys
