"""ONNX Runtime variants of a float32 ONNX model: static int8 QDQ, dynamic uint8, float16.

Static int8 is where the speed is for CNNs. Measured with onnxruntime 1.32 on this project's x86
machines (AVX-512 VNNI), QDQ Conv nodes are fused into QLinearConv only with uint8 activations:
with int8 activations every Conv stays a float Conv wrapped in Quantize/Dequantize pairs and the
model runs several times *slower* than float32. So activations default to uint8 and weights are
int8 per channel (ORT's U8S8 scheme); `activation_type="int8"` is kept for targets whose build
fuses S8S8. Two parts stay float32: the decode tail (cheap, and 8-bit grids would round pixel
coordinates and probabilities alike) and the stem conv with its SiLU (with 3 input channels the int8
QLinearConv measured slower than the float Conv: 126 vs 98 us at 128 px).

Dynamic quantization is the reference thesis's method (uint8 weights and activations), kept so its
table can be reproduced. It turns every Conv into ConvInteger, which ORT runs slower than float32.
"""
from __future__ import annotations

import contextlib
import io
import logging
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import onnx
from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                      quant_pre_process, quantize_dynamic, quantize_static)
from onnxruntime.quantization.calibrate import create_calibrator, save_tensors_data
from onnxruntime.transformers.float16 import convert_float_to_float16

from trainables.export.artifact import ExportError
from trainables.export.graph import DECODE_MODULE
from trainables.export.registry import ONNX_CALIB_METHODS as CALIB_METHODS

log = logging.getLogger(__name__)

# Entropy (KL) calibration searches clipping ranges over a histogram of this many bins. quantize_static
# cannot be given a bin count and uses 128, equal to the 128 quantized bins, which leaves the search a
# single candidate, the full min/max range; so entropy ranges are computed here and handed over as a
# calibration cache. 512 bins took 12 s for 64 images at 128 px; 2048 took 77 s for no better mAP.
ENTROPY_HISTOGRAM_BINS = 512
ENTROPY_QUANTIZED_BINS = 128
ACTIVATION_TYPES = ("uint8", "int8")
QUANT_FORMATS = {"QDQ": QuantFormat.QDQ, "QOperator": QuantFormat.QOperator}
DECODE_NODE_PREFIX = f"/{DECODE_MODULE}/"  # TorchScript export names nodes by module path
# The stem's activation as exported: SiLU (Sigmoid, Mul), ReLU, ReLU6 (Clip), Hardswish (one op, or
# HardSigmoid and Mul in older opsets).
STEM_ACTIVATION_OPS = ("Sigmoid", "Mul", "Relu", "Clip", "HardSwish", "HardSigmoid")


def _decode_nodes(model) -> list[str]:
    names = [node.name for node in model.graph.node if node.name.startswith(DECODE_NODE_PREFIX)]
    if not names:
        raise ExportError(f"no nodes named {DECODE_NODE_PREFIX}* in the ONNX model; was it made by "
                          f"trainables.export.export_onnx? (a user's model: float_tail=True)")
    return names


def _float_nodes(model, float_tail: bool, decode_in_graph: bool = True) -> list[str]:
    """What stays float besides the stem: our decode submodule (none where the host decodes), or
    with `float_tail` (a user's model, whose box arithmetic we did not name) everything after its last Convs."""
    if float_tail:
        return _after_last_convs(model)
    return _decode_nodes(model) if decode_in_graph else []


def _after_last_convs(model) -> list[str]:
    """Every node with no Conv downstream of it: a foreign detector's head reshapes, sigmoids and box
    arithmetic (YOLOv5's and YOLOv8's exports end so). ONNX lists nodes in topological order."""
    readers: dict[str, list] = {}
    for node in model.graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node)
    feeds_conv: dict[int, bool] = {}
    for node in reversed(model.graph.node):
        feeds_conv[id(node)] = any(r.op_type == "Conv" or feeds_conv.get(id(r), False)
                                   for out in node.output for r in readers.get(out, ()))
    tail = [node.name for node in model.graph.node if node.op_type != "Conv" and not feeds_conv[id(node)]]
    if not tail or not all(tail):
        raise ExportError("cannot tell the ONNX model's decode tail (no Conv, or unnamed nodes after the last one)")
    return tail


def _stem_nodes(model) -> list[str]:
    """The Conv that reads the model input plus the activation nodes reading that Conv's output."""
    input_name = model.graph.input[0].name
    stem = [node for node in model.graph.node if node.op_type == "Conv" and input_name in node.input]
    if len(stem) != 1:
        raise ExportError(f"expected one Conv reading the model input {input_name!r}, found {len(stem)}")
    activation = [node.name for node in model.graph.node
                  if stem[0].output[0] in node.input and node.op_type in STEM_ACTIVATION_OPS]
    return [stem[0].name, *activation]


class _ImageReader(CalibrationDataReader):
    """Feeds preprocessed (1, 3, S, S) images to ORT's calibrator, one per call."""

    def __init__(self, input_name: str, images: Sequence[np.ndarray]):
        self._feeds: Iterator[dict] = iter([{input_name: np.asarray(image, dtype=np.float32)} for image in images])

    def get_next(self) -> dict | None:
        return next(self._feeds, None)


def _preprocessed(fp32_model: Path, tmp: Path) -> Path:
    """ORT's recommended first step: shape inference and graph optimisation before quantizing."""
    out = tmp / "preprocessed.onnx"
    quant_pre_process(str(fp32_model), str(out))
    return out


def _entropy_ranges(prepared: Path, calibration: Sequence[np.ndarray], input_name: str, tmp: Path) -> Path:
    """Per-tensor entropy ranges as an ORT calibration cache file."""
    calibrator = create_calibrator(prepared, [], augmented_model_path=str(tmp / "augmented.onnx"),
                                   calibrate_method=CalibrationMethod.Entropy, providers=["CPUExecutionProvider"],
                                   extra_options={"num_bins": ENTROPY_HISTOGRAM_BINS,
                                                  "num_quantized_bins": ENTROPY_QUANTIZED_BINS})
    with contextlib.redirect_stdout(io.StringIO()):  # the calibrator prints progress lines
        calibrator.collect_data(_ImageReader(input_name, calibration))
        ranges = calibrator.compute_data()
    cache = tmp / "entropy-ranges.json"
    save_tensors_data(ranges, cache)
    return cache


def quantize_onnx_static(fp32_model: Path, path: Path, calibration: Sequence[np.ndarray], *,
                         calib_method: str = "minmax", activation_type: str = "uint8",
                         per_channel: bool = True, float_tail: bool = False, quant_format: str = "QDQ",
                         reduce_range: bool = False, float_stem: bool = True, decode_in_graph: bool = True,
                         keep_float: Sequence[str] = ()) -> dict:
    """Static quantization calibrated on `calibration` images; stem and decode stay float, and the
    nodes named in `keep_float` (int8-mixed's choice, `trainables.export.mixed`).

    The defaults are what the sweep exports; the others are the variants `bench/int8_variants.py`
    measures: `quant_format` QOperator (QLinearConv written out instead of QDQ pairs), per-tensor
    weights, `reduce_range` (7-bit weights, for CPUs without VNNI) and a quantized stem."""
    if calib_method not in CALIB_METHODS:
        raise ExportError(f"unknown calib_method {calib_method!r}; known: {', '.join(CALIB_METHODS)}")
    if activation_type not in ACTIVATION_TYPES:
        raise ExportError(f"unknown activation_type {activation_type!r}; known: {', '.join(ACTIVATION_TYPES)}")
    if not calibration:
        raise ExportError("ONNX static quantization needs calibration images; got none")
    if quant_format not in QUANT_FORMATS:
        raise ExportError(f"unknown quant_format {quant_format!r}; known: {', '.join(QUANT_FORMATS)}")
    method = {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile,
              "entropy": CalibrationMethod.Entropy}[calib_method]
    activations = QuantType.QUInt8 if activation_type == "uint8" else QuantType.QInt8

    with tempfile.TemporaryDirectory(prefix="edgesweep-quant-") as tmp:
        prepared = _preprocessed(Path(fp32_model), Path(tmp))
        model = onnx.load(str(prepared))
        excluded = (_float_nodes(model, float_tail, decode_in_graph) + (_stem_nodes(model) if float_stem else [])
                    + list(keep_float))
        input_name = model.graph.input[0].name
        if method == CalibrationMethod.Entropy:
            reader, cache = None, _entropy_ranges(prepared, calibration, input_name, Path(tmp))
        else:
            reader, cache = _ImageReader(input_name, calibration), None
        quantize_static(str(prepared), str(path), reader, quant_format=QUANT_FORMATS[quant_format],
                        per_channel=per_channel, reduce_range=reduce_range,
                        activation_type=activations, weight_type=QuantType.QInt8, calibrate_method=method,
                        nodes_to_exclude=excluded, calibration_providers=["CPUExecutionProvider"],
                        calibration_cache_path=cache)
    log.info("quantized %s: static %s, %s activations, %d calibration images, %d nodes kept float",
             path, quant_format, activation_type, len(calibration), len(excluded))
    weights = f"int8 per-{'channel' if per_channel else 'tensor'}{', 7-bit range' if reduce_range else ''}"
    return {"quantizer": "onnxruntime quantize_static", "format": quant_format, "activations": activation_type,
            "weights": weights, "calib_method": calib_method, "calib_images": len(calibration),
            "float_ops": ", ".join(part for part, kept in (("stem conv", float_stem), ("decode tail", decode_in_graph))
                                   if kept) or "none"}


def quantize_onnx_dynamic(fp32_model: Path, path: Path) -> dict:
    """The thesis's dynamic quantization: uint8 per-channel weights, uint8 activations at run time."""
    with tempfile.TemporaryDirectory(prefix="edgesweep-quant-") as tmp:
        prepared = _preprocessed(Path(fp32_model), Path(tmp))
        quantize_dynamic(str(prepared), str(path), per_channel=True, weight_type=QuantType.QUInt8)
    return {"quantizer": "onnxruntime quantize_dynamic", "weights": "uint8 per-channel",
            "activations": "uint8, quantized at run time"}


def convert_onnx_fp16(fp32_model: Path, path: Path, *, float_tail: bool = False, decode_in_graph: bool = True) -> dict:
    """float16 weights and compute, float32 input/output; the decode stays float32."""
    model = onnx.load(str(fp32_model))
    half = convert_float_to_float16(model, keep_io_types=True,
                                    node_block_list=_float_nodes(model, float_tail, decode_in_graph))
    onnx.save(half, str(path), save_as_external_data=False)
    return {"converter": "onnxruntime.transformers.float16", "weights": "float16", "activations": "float16",
            "io": "float32", "float_ops": "decode tail" if decode_in_graph or float_tail else "none"}
