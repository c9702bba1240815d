"""The NPU knobs (issue "The board's NPU", item 1), checked on the exported files themselves.

Each knob's artifact has what the knob says (one scale per weight tensor; boxes and scores apart;
an NHWC uint8 image in with no TRANSPOSE after it; a graph that ends at the head convs) and scores
within its format's `max_map_drop` of the float ONNX of the same student, read through its runtime
as `eval`, `detect` and the board read it. The trained student is the shared `student_exports`
fixture's; the default suite builds two files (one TFLite int8 carrying three knobs, one ONNX int8
carrying two), the rest are `slow`.
"""
from __future__ import annotations

import importlib.util
from types import SimpleNamespace

import numpy as np
import onnx
import pytest
import torch

from detection.outputs import METADATA_KEY, OutputLayout
from device_actors.accuracy import evaluate_artifact
from tests.exports import CALIB_IMAGES, IMG_SIZE
from tests.tolerance import assert_float32_close
from trainables.export import ExportGraph, export_formats, get_format
from trainables.export.registry import ArtifactShape
from trainables.models.yolo import ModelSpec, build_model

HAS_TFLITE_TOOLS = all(importlib.util.find_spec(m) for m in ("litert_torch", "ai_edge_quantizer"))
needs_tflite = pytest.mark.skipif(not HAS_TFLITE_TOOLS, reason="TFLite converters (the `tflite` extra) are not installed")
WEIGHT_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D")
ROWS = 3 * (16 * 16 + 8 * 8 + 4 * 4)  # anchors x cells at 128 px


def _export(student_exports, tmp_path_factory, fmt: str, shape: ArtifactShape):
    (artifact,) = export_formats(student_exports.checkpoint, [fmt], tmp_path_factory.mktemp(fmt), img_size=IMG_SIZE,
                                 calibration=student_exports.splits.train, calib_images=CALIB_IMAGES, shape=shape)
    return artifact


def _assert_within_bound(artifact, student_exports) -> None:
    """mAP within the format's bound of the float ONNX (the format conformance's reference)."""
    got = evaluate_artifact(artifact.read_bytes(), artifact.runtime, student_exports.splits.val).metrics.map50_95
    reference = student_exports.map50_95("onnx")
    bound = get_format(artifact.format).max_map_drop
    assert reference - got <= bound, f"{artifact.settings} loses {100 * (reference - got):.2f} points (bound {100 * bound})"


def _ops_and_tensors(model: bytes) -> SimpleNamespace:
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=model)
    return SimpleNamespace(ops=interpreter._get_ops_details(), tensors={t["index"]: t for t in interpreter.get_tensor_details()},
                           inputs=interpreter.get_input_details(), outputs=interpreter.get_output_details())


def _weight_scale_counts(graph: SimpleNamespace) -> list[int]:
    return [len(graph.tensors[op["inputs"][1]]["quantization_parameters"]["scales"])
            for op in graph.ops if op["op_name"] in WEIGHT_OPS]


@pytest.fixture(scope="module")
def npu_tflite(student_exports, tmp_path_factory):
    """TFLite int8 as the i.MX8M Plus NPU wants it: per-tensor, NHWC uint8 in and out, decode on the host."""
    if not HAS_TFLITE_TOOLS:
        pytest.skip("TFLite converters (the `tflite` extra) are not installed")
    shape = ArtifactShape(int8_granularity="per-tensor", int8_io="nhwc-uint8", decode="host")
    return _export(student_exports, tmp_path_factory, "tflite-int8", shape)


@pytest.fixture(scope="module")
def npu_onnx(student_exports, tmp_path_factory):
    """ONNX Runtime int8 with per-tensor weights and boxes and scores as two outputs."""
    return _export(student_exports, tmp_path_factory, "onnx-int8",
                   ArtifactShape(int8_granularity="per-tensor", outputs="split"))


def test_host_decode_of_the_head_convs_equals_the_graphs_decode():
    torch.manual_seed(0)
    model = build_model(ModelSpec("n", 3)).eval()
    images = torch.rand(1, 3, 96, 96)
    host = ExportGraph(model, 96, ArtifactShape(decode="host"))
    with torch.no_grad():
        expected = ExportGraph(model, 96)(images).numpy()
        maps = host(images)
    layout = host.output_layout()
    got = layout.predictions({name: m.numpy() for name, m in zip(layout.names, maps)})
    assert_float32_close(got, expected, ulps=256)


@needs_tflite
def test_per_tensor_tflite_int8_has_one_scale_per_weight_tensor(npu_tflite, student_exports):
    per_tensor = _weight_scale_counts(_ops_and_tensors(npu_tflite.read_bytes()))
    per_channel = _weight_scale_counts(_ops_and_tensors(student_exports.get("tflite-int8").read_bytes()))
    assert len(per_tensor) == len(per_channel) > 0
    assert set(per_tensor) == {1} and max(per_channel) > 1
    assert npu_tflite.settings["weights"] == "int8 per-tensor"


@needs_tflite
def test_nhwc_uint8_tflite_takes_the_camera_image_with_no_transpose_after_the_input(npu_tflite):
    graph = _ops_and_tensors(npu_tflite.read_bytes())
    (image,) = graph.inputs
    assert tuple(image["shape"]) == (1, IMG_SIZE, IMG_SIZE, 3) and image["dtype"] == np.uint8
    assert image["quantization"] == (pytest.approx(1 / 255), 0)  # the camera's bytes go in as they are
    readers = [op for op in graph.ops if image["index"] in op["inputs"]]
    assert [op["op_name"] for op in readers] == ["QUANTIZE"]  # uint8 -> int8, then straight into the stem conv
    after = [op["op_name"] for op in graph.ops if readers[0]["outputs"][0] in op["inputs"]]
    assert after == ["CONV_2D"]
    assert "TRANSPOSE" not in {op["op_name"] for op in graph.ops}
    assert {o["dtype"] for o in graph.outputs} == {np.uint8}


@needs_tflite
def test_host_decode_tflite_ends_at_the_head_convs_and_scores_within_its_bound(npu_tflite, student_exports):
    from device_actors.runtimes.tflite_graph import tflite_metadata

    model = npu_tflite.read_bytes()
    layout = OutputLayout.from_json(tflite_metadata(model, METADATA_KEY))
    classes = student_exports.splits.val.num_classes
    assert layout.layout == "raw" and layout.strides == (8, 16, 32)
    shapes = {o["name"]: tuple(o["shape"]) for o in _ops_and_tensors(model).outputs}
    assert shapes == {f"p{3 + i}": (1, IMG_SIZE // s, IMG_SIZE // s, 3 * (5 + classes)) for i, s in enumerate((8, 16, 32))}
    _assert_within_bound(npu_tflite, student_exports)


def test_per_tensor_onnx_int8_has_one_scale_per_weight_tensor(npu_onnx):
    model = onnx.load(str(npu_onnx.path))
    scales = [t for t in model.graph.initializer if t.name.endswith("_scale") and "weight" in t.name]
    assert scales and all(len(t.dims) == 0 for t in scales)
    assert npu_onnx.settings["weights"] == "int8 per-tensor"


def test_split_onnx_int8_has_two_outputs_and_scores_within_its_bound(npu_onnx, student_exports):
    model = onnx.load(str(npu_onnx.path))
    dims = {o.name: tuple(d.dim_value for d in o.type.tensor_type.shape.dim) for o in model.graph.output}
    assert dims == {"boxes": (1, ROWS, 4), "scores": (1, ROWS, 1 + student_exports.splits.val.num_classes)}
    assert OutputLayout.from_json({p.key: p.value for p in model.metadata_props}[METADATA_KEY]).layout == "split"
    _assert_within_bound(npu_onnx, student_exports)


@pytest.mark.slow  # ~30 s: one more TFLite conversion and quantization
@needs_tflite
def test_split_int8_tflite_gives_boxes_and_scores_a_scale_each(student_exports, tmp_path_factory):
    artifact = _export(student_exports, tmp_path_factory, "tflite-int8",
                       ArtifactShape(int8_io="nhwc-int8", outputs="split"))
    outputs = {o["name"]: o for o in _ops_and_tensors(artifact.read_bytes()).outputs}
    assert set(outputs) == {"boxes", "scores"} and {o["dtype"] for o in outputs.values()} == {np.int8}
    box_scale, score_scale = outputs["boxes"]["quantization"][0], outputs["scores"]["quantization"][0]
    assert score_scale <= 1 / 250 < box_scale  # a joined int8 output would give scores the box scale
    _assert_within_bound(artifact, student_exports)


@pytest.mark.slow  # ~20 s: an ONNX export, quantization and scoring
def test_host_decode_onnx_int8_scores_within_its_bound(student_exports, tmp_path_factory):
    artifact = _export(student_exports, tmp_path_factory, "onnx-int8", ArtifactShape(decode="host"))
    assert [o.name for o in onnx.load(str(artifact.path)).graph.output] == ["p3", "p4", "p5"]
    _assert_within_bound(artifact, student_exports)
