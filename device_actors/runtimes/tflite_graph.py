"""The graph key of a TFLite model, read with the flatbuffer schema that ai-edge-litert ships
(`ai_edge_litert.schema_py_generated`; a board with only a vendor's `tflite_runtime` has no schema,
so its TFLite artifacts are each timed).

The key covers operators (builtin code, custom code, version, options), how they are wired, every
tensor's type, shape and shape signature, whether it is a constant, and its quantization layout:
how many scales and zero points (one: per tensor; C: per channel), the quantized dimension, the
details type. It leaves out buffer contents, the scale and zero-point values, names, buffer
numbering, metadata and signatures. A constant keeps its values where they are structure rather
than numbers: 32- and 64-bit integers (RESHAPE's shape, PAD's paddings, RESIZE's size) other than
a convolution's or fully connected layer's bias (`BIAS_INPUTS`, int32 in an int8 model).
"""
from __future__ import annotations

import hashlib
from collections import defaultdict

import numpy as np

from device_actors.runtimes.base import GraphKeyError, graph_digest

# builtin code -> the input slot that holds the bias: CONV_2D, DEPTHWISE_CONV_2D, FULLY_CONNECTED, TRANSPOSE_CONV
BIAS_INPUTS = {3: 2, 4: 2, 9: 2, 67: 3}
_KEPT_TYPES = {2, 4, 5, 6, 12, 15}  # INT32, INT64, STRING, BOOL, UINT64, UINT32


def _schema():
    try:
        from ai_edge_litert import schema_py_generated
    except ImportError:
        return None
    return schema_py_generated


def _plain(value):
    """An options object (the schema's `...OptionsT`) as plain values."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return {k: _plain(v) for k, v in sorted(vars(value).items())}


def _list(value) -> list:
    return [] if value is None else [int(v) for v in value]


def _size(value) -> int:
    return 0 if value is None else len(value)


def _quantization(q) -> list | None:
    if q is None:
        return None
    return [_size(q.min), _size(q.max), _size(q.scale), _size(q.zeroPoint), q.detailsType, _plain(q.details),
            q.quantizedDimension]


def _is_constant(buffer) -> bool:
    return buffer is not None and ((buffer.data is not None and len(buffer.data) > 0) or buffer.offset > 1)


def _contents(buffer, model: bytes) -> bytes:
    """A constant's bytes: inline, or past the flatbuffer (offset and size, in models over 2 GB)."""
    if buffer.data is not None and len(buffer.data):
        return np.asarray(buffer.data, dtype=np.uint8).tobytes()
    return model[buffer.offset:buffer.offset + buffer.size]


def tflite_graph_key(model: bytes) -> str | None:
    """The sha256 of the model's graph with weight values left out (see the module's docstring);
    None without the schema."""
    schema = _schema()
    if schema is None:
        return None
    try:
        m = schema.ModelT.InitFromPackedBuf(model, 0)
    except Exception as e:  # noqa: BLE001 - flatbuffers raises struct and index errors on bad bytes
        raise GraphKeyError(f"not a TFLite flatbuffer: {e}") from e
    codes = [[max(c.deprecatedBuiltinCode, c.builtinCode), _plain(c.customCode), c.version]
             for c in m.operatorCodes or []]
    buffers = m.buffers or []
    subgraphs = []
    for graph in m.subgraphs or []:
        operators = graph.operators or []
        biases = defaultdict(bool)
        for op in operators:
            slot = BIAS_INPUTS.get(codes[op.opcodeIndex][0])
            if slot is not None and op.inputs is not None and len(op.inputs) > slot:
                biases[int(op.inputs[slot])] = True
        tensors = []
        for i, t in enumerate(graph.tensors or []):
            buffer = buffers[t.buffer] if 0 < t.buffer < len(buffers) else None
            constant = _is_constant(buffer)
            kept = constant and t.type in _KEPT_TYPES and not biases[i]
            tensors.append([_list(t.shape), _list(t.shapeSignature), t.type, t.isVariable, t.hasRank,
                            _quantization(t.quantization), _plain(t.sparsity), _plain(t.variantTensors),
                            t.externalBuffer, constant,
                            hashlib.sha256(_contents(buffer, model)).hexdigest() if kept else None])
        subgraphs.append({
            "tensors": tensors, "inputs": _list(graph.inputs), "outputs": _list(graph.outputs),
            "operators": [[op.opcodeIndex, _list(op.inputs), _list(op.outputs), op.builtinOptionsType,
                           _plain(op.builtinOptions), _plain(op.customOptions), op.customOptionsFormat,
                           _plain(op.mutatingVariableInputs), _list(op.intermediates), op.largeCustomOptionsSize,
                           op.builtinOptions2Type, _plain(op.builtinOptions2)] for op in operators]})
    return graph_digest({"format": "tflite", "version": m.version, "codes": codes, "subgraphs": subgraphs})


def tflite_metadata(model: bytes, name: str) -> str | None:
    """The text of the model's metadata entry `name`, or None where it has none (or no schema is installed)."""
    schema = _schema()
    if schema is None:
        return None
    m = schema.Model.GetRootAs(model, 0)
    for i in range(m.MetadataLength()):
        entry = m.Metadata(i)
        if entry.Name() is not None and entry.Name().decode() == name:
            return m.Buffers(entry.Buffer()).DataAsNumpy().tobytes().decode()
    return None
