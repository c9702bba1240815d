"""Edits of a finished .tflite flatbuffer: integer outputs, a uint8 interface, names and the outputs' description.

ai-edge-quantizer keeps a full-int8 model's outputs float (a DEQUANTIZE per output) and its input
int8; a camera and an NPU want integers both ways, uint8 where the pixels are bytes. TensorFlow's own
converter does the same rewrite (`inference_input_type=tf.uint8`): a QUANTIZE op turns the uint8
tensor into the int8 one, which every TFLite kernel and the VX delegate run. The uint8 input is the
camera's bytes as they are (scale 1/255, zero point 0, rescaled to the calibrated int8 range by its
QUANTIZE); each uint8 output is its int8 tensor with the zero point shifted by 128. Output tensors are renamed to the roles `detection.outputs` reads them by, and that
description is stored as the metadata entry `detection.outputs.METADATA_KEY`.
"""
from __future__ import annotations

from pathlib import Path

from detection.outputs import METADATA_KEY, OutputLayout
from trainables.export.artifact import ExportError

UINT8_SHIFT = 128  # int8 value v is uint8 value v + 128 at the same scale
PIXEL_SCALE = 1 / 255  # the images are pixel bytes / 255 (`detection.letterbox.to_input`)


def _schema():
    from ai_edge_litert import schema_py_generated

    return schema_py_generated


def _opcode(model, builtin: int) -> int:
    """The index of `builtin` among the model's operator codes, added if missing."""
    schema = _schema()
    for i, code in enumerate(model.operatorCodes):
        if max(code.builtinCode, code.deprecatedBuiltinCode) == builtin:
            return i
    code = schema.OperatorCodeT()
    code.builtinCode, code.deprecatedBuiltinCode, code.version = builtin, min(builtin, 127), 1
    model.operatorCodes.append(code)
    return len(model.operatorCodes) - 1


def _inline_buffers(model, content: bytes) -> None:
    """Constants stored past the flatbuffer (by offset, as ai-edge-quantizer writes them) moved inline,
    since re-serialising writes the flatbuffer alone."""
    import numpy as np

    for buffer in model.buffers:
        if buffer.offset > 1:
            buffer.data = np.frombuffer(content[buffer.offset:buffer.offset + buffer.size], dtype=np.uint8)
            buffer.offset = buffer.size = 0


def _drop_output_dequantize(model, graph) -> None:
    """Outputs written by a DEQUANTIZE become that op's integer input."""
    dequantize = _opcode(model, _schema().BuiltinOperator.DEQUANTIZE)
    writers = {int(op.outputs[0]): op for op in graph.operators if op.opcodeIndex == dequantize}
    for slot, tensor in enumerate(list(graph.outputs)):
        op = writers.get(int(tensor))
        if op is None:
            continue
        graph.outputs[slot] = int(op.inputs[0])
        graph.operators.remove(op)
        _retarget_signatures(model, int(tensor), int(op.inputs[0]))


def _retarget_signatures(model, old: int, new: int) -> None:
    for signature in model.signatureDefs or []:
        for entry in (*(signature.inputs or []), *(signature.outputs or [])):
            if entry.tensorIndex == old:
                entry.tensorIndex = new


def _uint8_twin(graph, index: int, *, pixels: bool = False) -> int:
    """A new uint8 tensor with `index`'s shape and scale, zero point shifted by 128; with `pixels` at
    scale 1/255 and zero point 0 instead, so camera bytes go in as they are (QUANTIZE rescales them)."""
    import copy

    schema = _schema()
    source = graph.tensors[index]
    if source.type != schema.TensorType.INT8 or source.quantization is None:
        raise ExportError(f"cannot make tensor {source.name!r} uint8: it is not a quantized int8 tensor")
    twin = copy.deepcopy(source)
    twin.type = schema.TensorType.UINT8
    twin.buffer = 0
    twin.quantization.zeroPoint = [int(z) + UINT8_SHIFT for z in source.quantization.zeroPoint]
    if pixels:
        twin.quantization.scale, twin.quantization.zeroPoint = [PIXEL_SCALE], [0]
        twin.quantization.min = twin.quantization.max = None
    graph.tensors.append(twin)
    return len(graph.tensors) - 1


def _uint8_interface(model, graph) -> None:
    """uint8 input and outputs around the int8 graph, one QUANTIZE each."""
    schema = _schema()
    quantize = _opcode(model, schema.BuiltinOperator.QUANTIZE)

    def op(source: int, target: int):
        o = schema.OperatorT()
        o.opcodeIndex, o.inputs, o.outputs = quantize, [source], [target]
        return o

    for slot, tensor in enumerate(list(graph.inputs)):
        twin = _uint8_twin(graph, int(tensor), pixels=True)
        graph.operators.insert(0, op(twin, int(tensor)))
        graph.inputs[slot] = twin
        _retarget_signatures(model, int(tensor), twin)
    for slot, tensor in enumerate(list(graph.outputs)):
        twin = _uint8_twin(graph, int(tensor))
        graph.operators.append(op(int(tensor), twin))
        graph.outputs[slot] = twin
        _retarget_signatures(model, int(tensor), twin)


def _signature_outputs(model) -> list[int]:
    """Output tensors in the order the converter wrote them (signature names output_0, output_1, ...)."""
    (signature,) = model.signatureDefs
    ordered = sorted(signature.outputs, key=lambda e: int(e.name.decode().rsplit("_", 1)[-1]))
    return [int(e.tensorIndex) for e in ordered]


def _describe(model, graph, layout: OutputLayout) -> None:
    schema = _schema()
    outputs = _signature_outputs(model)
    if len(outputs) != len(layout.names):
        raise ExportError(f"the converted model has {len(outputs)} outputs; its layout names {len(layout.names)}")
    for index, name in zip(outputs, layout.names):
        graph.tensors[index].name = name.encode()
    buffer = schema.BufferT()
    buffer.data = list(layout.to_json().encode())
    model.buffers.append(buffer)
    entry = schema.MetadataT()
    entry.name, entry.buffer = METADATA_KEY.encode(), len(model.buffers) - 1
    model.metadata = [m for m in (model.metadata or []) if m.name != METADATA_KEY.encode()] + [entry]


def finish_tflite(path: Path, layout: OutputLayout, *, io_type: str | None = None) -> None:
    """Rewrite the .tflite at `path` in place: with `io_type` (uint8, int8) integer input and outputs,
    then output names and the outputs' description."""
    from ai_edge_litert.tools import flatbuffer_utils

    path = Path(path)
    content = path.read_bytes()
    model = _schema().ModelT.InitFromPackedBuf(content, 0)
    _inline_buffers(model, content)
    (graph,) = model.subgraphs
    graph.inputs, graph.outputs = [int(i) for i in graph.inputs], [int(i) for i in graph.outputs]
    if io_type is not None:
        _drop_output_dequantize(model, graph)
        if io_type == "uint8":
            _uint8_interface(model, graph)
    _describe(model, graph, layout)
    path.write_bytes(bytes(flatbuffer_utils.convert_object_to_bytearray(model)))
