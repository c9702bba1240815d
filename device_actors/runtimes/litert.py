"""TFLite sessions through ai-edge-litert, or a vendor image's `tflite_runtime` (e.g. NXP eIQ with the
NPU delegate built in). tflite-runtime 2.14 from PyPI breaks under numpy 2, so LiteRT comes first."""
from __future__ import annotations

import importlib.util

import numpy as np

from device_actors.npu.delegated import delegation_of
from detection.outputs import METADATA_KEY
from device_actors.runtimes.base import RuntimeLoadError, RuntimeOptions, input_hw, output_layout, to_layout
from device_actors.runtimes.tflite_graph import tflite_graph_key, tflite_metadata

TFLITE_MAGIC = b"TFL3"  # flatbuffer file identifier at bytes 4..8 of every .tflite


def _interpreter_module():
    try:
        from ai_edge_litert import interpreter
        return interpreter
    except ImportError:
        pass
    try:
        from tflite_runtime import interpreter  # vendor board images
        return interpreter
    except ImportError:
        return None


class LiteRtSession:
    def __init__(self, model: bytes, options: RuntimeOptions):
        mod = _interpreter_module()
        delegates = []
        if options.delegate:
            try:
                delegates = [mod.load_delegate(options.delegate, dict(options.delegate_options))]
            except (ValueError, OSError) as e:
                raise RuntimeLoadError(f"cannot load TFLite delegate {options.delegate}: {e}") from e
        resolver = {} if options.xnnpack else {
            "experimental_op_resolver_type": mod.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES}
        try:
            self._it = mod.Interpreter(model_content=model, num_threads=options.threads,
                                       experimental_delegates=delegates or None, **resolver)
            # The given delegate has modified the graph by now; LiteRT's default XNNPACK takes what is left
            # at allocate_tensors. So the delegate's own take is counted here, XNNPACK's (without one) after.
            given = delegation_of(self._it) if delegates else None
            self._it.allocate_tensors()
        except (ValueError, RuntimeError) as e:
            raise RuntimeLoadError(f"TFLite cannot load this model: {e}") from e
        self.delegation = given or delegation_of(self._it)
        self._in = self._it.get_input_details()[0]
        self._outs = self._it.get_output_details()
        self._layout = output_layout(tflite_metadata(model, METADATA_KEY), [out["name"] for out in self._outs])
        self._input_shape = tuple(int(v) for v in self._in["shape"])
        self.input_hw = input_hw(self._input_shape)

    def run(self, image: np.ndarray) -> np.ndarray:
        x = to_layout(image.astype(np.float32, copy=False), self._input_shape)
        if self._in["dtype"] != np.float32:  # full-integer model: quantize the input
            scale, zero = self._in["quantization"]
            info = np.iinfo(self._in["dtype"])
            x = np.clip(np.round(x / scale + zero), info.min, info.max).astype(self._in["dtype"])
        self._it.set_tensor(self._in["index"], x)
        self._it.invoke()
        return self._layout.predictions({out["name"]: _dequantized(self._it.get_tensor(out["index"]), out)
                                         for out in self._outs})


def _dequantized(y: np.ndarray, details: dict) -> np.ndarray:
    """An integer output (uint8, int8) as the float values its quantization parameters say."""
    if details["dtype"] == np.float32:
        return y
    scale, zero = details["quantization"]
    return (y.astype(np.float32) - zero) * scale


class LiteRt:
    name = "tflite"
    suffix = ".tflite"

    def module(self) -> str | None:
        for name in ("ai_edge_litert", "tflite_runtime"):
            if importlib.util.find_spec(name):
                return f"{name}.interpreter"
        return None

    def available(self) -> bool:
        return _interpreter_module() is not None

    def version(self) -> str:
        for dist in ("ai-edge-litert", "tflite-runtime"):
            try:
                from importlib.metadata import version
                return f"{dist} {version(dist)}"
            except Exception:  # noqa: BLE001 - PackageNotFoundError and friends
                continue
        return "unknown"

    def recognises(self, model: bytes) -> bool:
        return model[4:8] == TFLITE_MAGIC

    def device(self, options: RuntimeOptions) -> str:
        return f"delegate {options.delegate}" if options.delegate else "CPU (LiteRT kernels)"

    def load(self, model: bytes, options: RuntimeOptions) -> LiteRtSession:
        if not self.available():
            raise RuntimeLoadError("no TFLite interpreter: pip install ai-edge-litert (or use the board image's tflite_runtime)")
        return LiteRtSession(model, options)

    def graph_key(self, model: bytes) -> str | None:
        return tflite_graph_key(model)
