"""ONNX Runtime sessions (CPU, or the execution providers a board's build has)."""
from __future__ import annotations

import importlib.util

import numpy as np

from detection.outputs import METADATA_KEY
from device_actors.runtimes.base import RuntimeLoadError, RuntimeOptions, input_hw, output_layout, to_layout
from device_actors.runtimes.onnx_graph import onnx_graph_key

ONNX_FIRST_BYTE = b"\x08"  # protobuf tag of ModelProto field 1 (ir_version), which every exporter writes first


class OrtSession:
    def __init__(self, model: bytes, options: RuntimeOptions):
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads = options.threads
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.log_severity_level = 3
        missing = [p for p in options.providers if p not in ort.get_available_providers()]
        if missing:
            raise RuntimeLoadError(f"onnxruntime on this machine lacks execution providers {missing}; "
                                f"available: {ort.get_available_providers()}")
        try:
            self._session = ort.InferenceSession(model, so, providers=list(options.providers))
        except Exception as e:  # noqa: BLE001 - onnxruntime raises several unrelated types
            raise RuntimeLoadError(f"onnxruntime cannot load this model: {e}") from e
        inp = self._session.get_inputs()[0]
        self._input_name = inp.name
        self._input_shape = tuple(inp.shape)
        self.input_hw = input_hw(self._input_shape)
        self._output_names = [o.name for o in self._session.get_outputs()]
        described = self._session.get_modelmeta().custom_metadata_map.get(METADATA_KEY)
        self._layout = output_layout(described, self._output_names)

    def run(self, image: np.ndarray) -> np.ndarray:
        x = to_layout(image.astype(np.float32, copy=False), self._input_shape)
        return self._layout.predictions(dict(zip(self._output_names, self._session.run(None, {self._input_name: x}))))


class OnnxRuntime:
    name = "onnxruntime"
    suffix = ".onnx"

    def module(self) -> str | None:
        return "onnxruntime" if importlib.util.find_spec("onnxruntime") else None

    def available(self) -> bool:
        try:
            import onnxruntime  # noqa: F401
        except ImportError:
            return False
        return True

    def version(self) -> str:
        import onnxruntime

        return onnxruntime.__version__

    def recognises(self, model: bytes) -> bool:
        """An ONNX ModelProto serialises its first field, ir_version (a varint), first: tag byte 0x08."""
        return model[:1] == ONNX_FIRST_BYTE

    def device(self, options: RuntimeOptions) -> str:
        return options.providers[0]  # the provider ONNX Runtime tries first

    def load(self, model: bytes, options: RuntimeOptions) -> OrtSession:
        if not self.available():
            raise RuntimeLoadError("onnxruntime is not installed: pip install onnxruntime")
        return OrtSession(model, options)

    def graph_key(self, model: bytes) -> str:
        return onnx_graph_key(model)
