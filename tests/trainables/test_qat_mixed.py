"""QAT and accuracy-aware mixed precision on the trained student (`student_exports`, tests/conftest.py):
the QAT files are int8 with the scales QAT learned and score within their bound of the float ONNX;
int8-mixed meets a bound plain int8 misses by keeping convolutions float, and says which.

Both build in minutes on a 2-core CPU (QAT fine-tunes, int8-mixed scores several candidates), so
they are slow tests; the config errors of their knobs are in tests/orchestrator/test_qat_mixed_config.py.
"""
from __future__ import annotations

import importlib.util
from collections import Counter

import numpy as np
import onnx
import pytest

from tests.exports import CALIB_IMAGES, IMG_SIZE, QAT_EPOCHS
from trainables.export import export_formats, get_format

HAS_QAT_TOOLS = all(importlib.util.find_spec(m) for m in ("litert_torch", "torchao"))
pytestmark = [pytest.mark.slow, pytest.mark.skipif(not HAS_QAT_TOOLS, reason="QAT needs litert-torch and torchao")]


def _map_loss(student_exports, name: str) -> float:
    return student_exports.map50_95("onnx") - student_exports.map50_95(name)


def test_qat_tflite_is_int8_with_its_convolutions_on_int8_tensors_and_within_its_bound(student_exports):
    from ai_edge_litert.interpreter import Interpreter

    artifact = student_exports.get("tflite-qat")
    interpreter = Interpreter(model_content=artifact.read_bytes())
    dtypes = {t["index"]: t["dtype"] for t in interpreter.get_tensor_details()}
    convs = [op for op in interpreter._get_ops_details() if op["op_name"] == "CONV_2D"]
    assert convs and all(dtypes[op["inputs"][0]] == np.int8 and dtypes[op["inputs"][1]] == np.int8 for op in convs)
    activations = Counter(dtypes[op["inputs"][0]] for op in interpreter._get_ops_details()
                          if op["op_name"] in ("LOGISTIC", "MUL"))
    assert activations[np.int8] > activations[np.float32]  # SiLU runs int8; the decode tail stays float
    assert artifact.settings["qat_epochs"] == QAT_EPOCHS and "QAT" in artifact.settings["quantizer"]
    assert _map_loss(student_exports, "tflite-qat") <= get_format("tflite-qat").max_map_drop


def test_qat_onnx_is_qdq_with_learned_scales_and_within_its_bound(student_exports):
    model = onnx.load_from_string(student_exports.get("onnx-qat").read_bytes())
    ops = Counter(node.op_type for node in model.graph.node)
    assert ops["QuantizeLinear"] >= ops["Conv"] > 0 and ops["DequantizeLinear"] >= ops["Conv"]
    assert _map_loss(student_exports, "onnx-qat") <= get_format("onnx-qat").max_map_drop


def test_int8_mixed_meets_a_bound_plain_int8_misses_by_keeping_named_convs_float(student_exports, tmp_path):
    from trainables.export.mixed import FLOAT_LAYERS_KEY

    bound = 0.0  # no loss at all on the training images: plain int8 of this student loses some
    (artifact,) = export_formats(student_exports.checkpoint, ["onnx-int8-mixed"], tmp_path, img_size=IMG_SIZE,
                                 calibration=student_exports.splits.train, calib_images=CALIB_IMAGES,
                                 max_map_drop=bound, accuracy=student_exports.train_accuracy)
    search = artifact.settings["mixed_search"]
    assert search[0]["float_layers"] == 0 and search[0]["map_drop"] > bound  # plain int8 misses it
    assert artifact.settings["map_drop_control"] <= bound  # the artifact meets it ...
    float_layers = artifact.settings["float_layers"]
    assert float_layers  # ... with convolutions kept float, named in its settings and in the file
    model = onnx.load_from_string(artifact.read_bytes())
    assert {p.key: p.value for p in model.metadata_props}[FLOAT_LAYERS_KEY].split(",") == float_layers
    dequantized = {out for n in model.graph.node if n.op_type == "DequantizeLinear" for out in n.output}
    weights = {n.name: n.input[1] for n in model.graph.node if n.op_type == "Conv"}
    assert all(weights[name] not in dequantized for name in float_layers)  # float weights, no int8 behind them
    assert any(w in dequantized for w in weights.values())  # the others are int8
