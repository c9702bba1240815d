"""PyTorch -> TFLite without TensorFlow: litert-torch converts, ai-edge-quantizer quantizes.

Both live in the optional `tflite` extra (litert-torch has x86_64 wheels only), so they are
imported here, on use, and a missing one is an ExportError that says how to install it.
Quantized variants start from the float .tflite:
- fp16: weights stored as float16 (ai-edge-quantizer's FLOAT_CASTING weight-only recipe; it has
  no ready-made fp16 recipe), computed in float32 unless the delegate runs fp16.
- dynamic: int8 per-channel weights, activations quantized on the fly (`dynamic_wi8_afp32`).
- int8: int8 weights and activations calibrated on training images (`static_wi8_ai8`), except
  the decode tail: a single int8 output tensor would share one scale between pixel coordinates
  (0..S) and probabilities (0..1) and round every score to a handful of levels. The model's input
  stays int8 (scale 1/255, exact for 8-bit images); its output is float32. Its `ArtifactShape` may
  ask otherwise: per-tensor weight scales; integer outputs (uint8 or int8, `tflite_io`), where the
  whole graph is int8 and split outputs give boxes and scores a scale each; no decode at all.
"""
from __future__ import annotations

import contextlib
import importlib.util
import io
import logging
import os
import re
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from trainables.export.artifact import ExportError
from trainables.export.graph import DECODE_MODULE, ExportGraph
from trainables.export.registry import ArtifactShape

log = logging.getLogger(__name__)

INSTALL_HINT = ("install the converters with `pip install -e '.[tflite]'` "
                "(litert-torch==0.10.0 and ai-edge-quantizer; x86_64 only)")
TFLITE_QUANT_MODES = ("fp16", "dynamic", "int8")
# Op scopes in a litert-torch model are module paths like ".../trainables.export.graph.GridDecode_decode/...".
DECODE_SCOPE_REGEX = rf"GridDecode_{DECODE_MODULE}"


def require_tflite_tools() -> None:
    """Fail fast, before any slow step, when the converter or the quantizer is not installed."""
    missing = [name for name in ("litert_torch", "ai_edge_quantizer") if importlib.util.find_spec(name) is None]
    if missing:
        raise ExportError(f"TFLite formats need the Python package(s) {', '.join(missing)}, which are not "
                          f"installed; {INSTALL_HINT}")


def _require(module: str):
    try:
        return __import__(module, fromlist=["_"])
    except ImportError as e:
        raise ExportError(f"TFLite export needs the Python package {module!r}, which is not importable "
                          f"({e}); {INSTALL_HINT}") from e


@contextlib.contextmanager
def _quiet_litert_torch() -> Iterator[None]:
    """litert-torch prints a progress line per conversion stage unless this variable says no."""
    name = "LITERT_TORCH_SHOW_PROGRESS"
    previous = os.environ.get(name)
    os.environ[name] = "n"
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = previous


class _DropQuantizerChatter(logging.Filter):
    """ai-edge-quantizer logs progress lines ("Serializing model...") on the root logger."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING or "ai_edge_quantizer" not in record.pathname


@contextlib.contextmanager
def _quiet_quantizer() -> Iterator[None]:
    """Silence the quantizer's tqdm bars (stderr) and root-logger chatter; warnings still pass."""
    chatter = _DropQuantizerChatter()
    root = logging.getLogger()
    root.addFilter(chatter)
    try:
        with contextlib.redirect_stderr(io.StringIO()):
            yield
    finally:
        root.removeFilter(chatter)


def convert_tflite(graph: ExportGraph, path: Path, *, quant_config=None) -> dict:
    """Float32 .tflite of `graph` with the NCHW input kept; returns the settings to record. With a
    litert-torch `quant_config`, `graph` is a PT2E-converted model and the file is int8 (`trainables.export.qat`)."""
    litert_torch = _require("litert_torch")
    _require("ai_edge_quantizer")  # fail before a slow conversion if quantizing will be impossible
    path = Path(path)
    with _quiet_litert_torch():
        try:
            converted = litert_torch.convert(graph.eval(), (graph.example_input(),), quant_config=quant_config)
        except Exception as e:  # noqa: BLE001 - the converter raises many unrelated types
            raise ExportError(f"litert-torch could not convert the model to TFLite: {e}") from e
        converted.export(str(path))
    return {"converter": "litert-torch", "precision": "float32" if quant_config is None else "int8"}


def _float_tail_regex(float_model: Path) -> str:
    """Scopes to keep in float: the decode ops and the op that writes the model output.

    The last concatenation is scoped by the output tensor's name, not by the decode module, and
    quantizing it alone would still hand out an int8 output.
    """
    from ai_edge_litert.interpreter import Interpreter

    outputs = [detail["name"] for detail in Interpreter(model_path=str(float_model)).get_output_details()]
    return "|".join([DECODE_SCOPE_REGEX, *(f"^{re.escape(name)}" for name in outputs)])


def _static_int8_recipe(shape: ArtifactShape) -> list[dict]:
    """ai-edge-quantizer's static int8 recipe with the weight granularity `shape` asks for."""
    from ai_edge_quantizer import qtyping, recipe

    granularity = qtyping.QuantGranularity.CHANNELWISE if shape.per_channel else qtyping.QuantGranularity.TENSORWISE
    entries = recipe.static_wi8_ai8()
    for entry in entries:
        entry["op_config"]["weight_tensor_config"]["granularity"] = granularity.value
    return entries


def _recipe(mode: str, float_model: Path, shape: ArtifactShape):
    from ai_edge_quantizer import qtyping, recipe, recipe_manager
    from ai_edge_quantizer.algorithm_manager import AlgorithmName

    if mode == "dynamic":
        return recipe.dynamic_wi8_afp32()
    manager = recipe_manager.RecipeManager()
    if mode == "fp16":
        manager.add_weight_only_config(regex=".*", operation_name=qtyping.TFLOperationName.ALL_SUPPORTED,
                                       num_bits=16, algorithm_key=AlgorithmName.FLOAT_CASTING)
    else:
        manager.load_quantization_recipe(_static_int8_recipe(shape))
        if _float_tail(shape):
            manager.add_quantization_config(regex=_float_tail_regex(float_model),
                                            operation_name=qtyping.TFLOperationName.ALL_SUPPORTED,
                                            algorithm_key=AlgorithmName.NO_QUANTIZE)
    return manager.get_quantization_recipe()


def _float_tail(shape: ArtifactShape) -> bool:
    """The decode stays float where there is one and the outputs are float."""
    return shape.decode == "graph" and shape.io_type is None


def quantize_tflite(float_model: Path, path: Path, *, mode: str, calibration: Sequence[np.ndarray] = (),
                    shape: ArtifactShape = ArtifactShape()) -> dict:
    """Quantize a float .tflite into `path`; `calibration` (1, 3, S, S) images are needed for int8.
    `shape` is read by int8: weight granularity, and with integer io the whole graph is int8."""
    if mode not in TFLITE_QUANT_MODES:
        raise ExportError(f"unknown TFLite quantization mode {mode!r}; known: {', '.join(TFLITE_QUANT_MODES)}")
    quantizer_module = _require("ai_edge_quantizer.quantizer")
    quantizer = quantizer_module.Quantizer(str(float_model))
    quantizer.load_quantization_recipe(_recipe(mode, Path(float_model), shape))
    calibration_result = None
    if mode == "int8":
        if not calibration:
            raise ExportError("TFLite int8 quantization needs calibration images; got none")
        from ai_edge_litert.interpreter import Interpreter

        signatures = Interpreter(model_path=str(float_model)).get_signature_list()
        (signature, io_names), = signatures.items()
        (input_name,) = io_names["inputs"]
        layout = (0, 2, 3, 1) if shape.nhwc else (0, 1, 2, 3)
        samples = [{input_name: np.ascontiguousarray(np.asarray(image, dtype=np.float32).transpose(layout))}
                   for image in calibration]
        with _quiet_quantizer():
            calibration_result = quantizer.calibrate({signature: samples}, num_threads=1)
    with _quiet_quantizer():
        result = quantizer.quantize(calibration_result, enable_progress_bar=False, enable_progress_report=False)
    Path(path).write_bytes(result.quantized_model)
    settings = {"quantizer": "ai-edge-quantizer", "mode": mode}
    if mode == "fp16":
        settings.update(weights="float16", activations="float32")
    elif mode == "dynamic":
        settings.update(weights="int8 per-channel", activations="float32, quantized at run time")
    else:
        settings.update(weights=f"int8 {shape.int8_granularity}", activations="int8", calib_method="minmax",
                        calib_images=len(calibration), float_ops="decode tail" if _float_tail(shape) else "none",
                        output=shape.io_type or "float32")
    return settings
