"""The graph key of an ONNX model, read from its protobuf bytes without the `onnx` package (the board
does not install it: `pip install '.[board]'` brings onnxruntime, which reads models in C++ only).

The key covers what a dense runtime's speed depends on: operators and their attributes, how they are
wired, the opsets, the IR version, every tensor's type and shape, and which tensors are quantized
and how (a QuantizeLinear's scale of shape () is per tensor, of shape (C,) per channel, its zero
point's dtype says int8 or uint8). It leaves out what only changes the numbers: the values of
weights, biases, scales and zero points, names (tensors are numbered in order of use), doc strings,
the producer and metadata. A constant keeps its values where they are structure rather than
numbers: int64 tensors (shapes, axes, pads and indices are int64 in ONNX) and the inputs listed in
`SHAPE_INPUTS` (Resize's float scales, Slice's indices, which may be int32). A model with subgraphs
(If, Loop) keeps every value: an outer constant may be read inside them. Unknown fields are kept.

Field numbers are those of onnx/onnx.proto (checked against onnx 1.23's descriptors in the tests).
"""
from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Iterator

from device_actors.runtimes.base import GraphKeyError, graph_digest

_VARINT, _FIXED64, _LENGTH, _FIXED32 = 0, 1, 2, 5
SHAPE_INPUTS = {"Resize": {1, 2, 3}, "Upsample": {1}, "Slice": {1, 2, 3, 4}}  # (op_type: input slots)
_KEPT_DTYPES = {7, 8, 9, 13}  # INT64, STRING, BOOL, UINT64: shapes, axes, indices, masks
_TENSOR_DATA = {4, 5, 6, 7, 9, 10, 11}  # float_data, int32_data, string_data, int64_data, raw_data, double, uint64
_NAMES_AND_DOCS = {"model": {2, 3, 4, 5, 6, 14}, "graph": {2, 10, 13, 16}, "node": {3, 6, 9}, "value": {1, 3, 4},
                   "tensor": {8, 12, 16}, "attribute": {13}}  # value_info (graph 13) is inferred, not declared


def _varint(buf: memoryview, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(buf):
            raise GraphKeyError("truncated ONNX protobuf (a varint runs past the end)")
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7


def _fields(buf: memoryview) -> Iterator[tuple[int, int | memoryview]]:
    """(field number, value) of each field of one protobuf message: an int for a varint, the bytes
    (a zero-copy view) otherwise."""
    pos = 0
    while pos < len(buf):
        tag, pos = _varint(buf, pos)
        wire = tag & 7
        if wire == _VARINT:
            value, pos = _varint(buf, pos)
        else:
            if wire == _LENGTH:
                size, pos = _varint(buf, pos)
            elif wire in (_FIXED64, _FIXED32):
                size = 8 if wire == _FIXED64 else 4
            else:
                raise GraphKeyError(f"not an ONNX protobuf: wire type {wire} at byte {pos}")
            if pos + size > len(buf):
                raise GraphKeyError("truncated ONNX protobuf (a field runs past the end)")
            value, pos = buf[pos:pos + size], pos + size
        yield tag >> 3, value


def _text(value) -> str:
    return bytes(value).decode("utf-8", "replace")


def _plain(value) -> int | str:
    """A field's value in the key: an int, or the bytes (hashed when long)."""
    if isinstance(value, int):
        return value
    data = bytes(value)
    return data.hex() if len(data) <= 64 else "sha256:" + hashlib.sha256(data).hexdigest()


def _ints(value) -> list[int]:
    """A repeated int64 field entry: packed (bytes of varints) or one varint."""
    if isinstance(value, int):
        return [value]
    out, pos = [], 0
    while pos < len(value):
        v, pos = _varint(value, pos)
        out.append(v)
    return out


def _tensor(buf: memoryview) -> tuple[str, dict, str]:
    """(name, layout: dims, dtype and storage fields, digest of the values) of a TensorProto."""
    name, dims, dtype, other, values = "", [], 0, [], hashlib.sha256()
    for number, value in _fields(buf):
        if number == 8:
            name = _text(value)
        elif number == 1:
            dims += _ints(value)
        elif number == 2:
            dtype = value
        elif number in _TENSOR_DATA:
            values.update(f"{number}:".encode() + (str(value).encode() if isinstance(value, int) else bytes(value)))
        elif number not in _NAMES_AND_DOCS["tensor"]:
            other.append([number, _plain(value)])  # segment, external data, data location: kept
    return name, {"dims": dims, "dtype": dtype, "other": other}, values.hexdigest()


class _Graph:
    """One GraphProto's parts, before names are numbered and constant values decided."""

    def __init__(self, buf: memoryview):
        self.inputs, self.outputs, self.nodes, self.other = [], [], [], []
        self.constants: dict[str, tuple[dict, str]] = {}  # initializers and Constant nodes' values
        self.subgraphs = False
        for number, value in _fields(buf):
            if number == 1:
                self.nodes.append(self._node(value))
            elif number == 5:
                name, layout, values = _tensor(value)
                self.constants[name] = (layout, values)
            elif number in (11, 12):
                (self.inputs if number == 11 else self.outputs).append(self._value_info(value))
            elif number not in _NAMES_AND_DOCS["graph"]:
                self.other.append([number, _plain(value)])  # sparse initializers, quantization annotations

    @staticmethod
    def _value_info(buf: memoryview) -> tuple[str, list]:
        name, rest = "", []
        for number, value in _fields(buf):
            if number == 1:
                name = _text(value)
            elif number not in _NAMES_AND_DOCS["value"]:
                rest.append([number, _plain(value)])  # the type: element type and shape
        return name, rest

    def _node(self, buf: memoryview) -> dict:
        node = {"op": "", "domain": "", "in": [], "out": [], "attrs": [], "other": []}
        attributes = []
        for number, value in _fields(buf):
            if number in (1, 2):
                node["in" if number == 1 else "out"].append(_text(value))
            elif number == 4:
                node["op"] = _text(value)
            elif number == 7:
                node["domain"] = _text(value)
            elif number == 5:
                attributes.append(value)
            elif number not in _NAMES_AND_DOCS["node"]:
                node["other"].append([number, _plain(value)])
        constant = node["op"] == "Constant" and node["domain"] in ("", "ai.onnx")
        for buf in attributes:
            node["attrs"].append(self._attribute(buf, node["out"][0] if constant and node["out"] else None))
        node["attrs"].sort(key=lambda a: a[0])
        return node

    def _attribute(self, buf: memoryview, constant_output: str | None) -> list:
        name, rest = "", []
        for number, value in _fields(buf):
            if number == 1:
                name = _text(value)
            elif number in (5, 10):  # t, tensors
                _, layout, values = _tensor(value)
                if constant_output is not None and number == 5:
                    self.constants[constant_output] = (layout, values)  # decided like an initializer
                    rest.append([number, "constant"])
                else:
                    rest.append([number, layout, values])
            elif number not in _NAMES_AND_DOCS["attribute"]:
                self.subgraphs |= number in (6, 11)  # g, graphs: kept whole, values and all
                rest.append([number, _plain(value)])
        return [name, rest]

    def describe(self) -> dict:
        """Names numbered in order of use; each constant with its values' digest only where kept."""
        order: dict[str, int] = {"": -1}  # "" is an omitted optional input
        consumers: dict[str, set] = defaultdict(set)
        for name, _ in self.inputs:
            order.setdefault(name, len(order))
        for node in self.nodes:
            for slot, name in enumerate(node["in"]):
                order.setdefault(name, len(order))
                consumers[name].add((node["op"], slot))
            for name in node["out"]:
                order.setdefault(name, len(order))
        for name, _ in self.outputs:
            order.setdefault(name, len(order))
        for name in sorted(self.constants):  # unused constants last
            order.setdefault(name, len(order))

        def kept(name: str, dtype: int) -> bool:
            return self.subgraphs or dtype in _KEPT_DTYPES or any(
                slot in SHAPE_INPUTS.get(op, ()) for op, slot in consumers[name])

        constants = sorted([order[name], layout, values if kept(name, layout["dtype"]) else None]
                           for name, (layout, values) in self.constants.items())
        return {"inputs": [[order[n], t] for n, t in self.inputs], "outputs": [[order[n], t] for n, t in self.outputs],
                "constants": constants, "other": self.other,
                "nodes": [[n["op"], n["domain"], [order[i] for i in n["in"]], [order[o] for o in n["out"]], n["attrs"],
                           n["other"]] for n in self.nodes]}


def onnx_graph_key(model: bytes) -> str:
    """The sha256 of the model's graph with weight values left out (see the module's docstring)."""
    opsets, graph, other = [], None, []
    for number, value in _fields(memoryview(model)):
        if number == 8:
            opsets.append(sorted(([1, _text(v)] if n == 1 else [n, _plain(v)]) for n, v in _fields(value)))
        elif number == 7:
            graph = _Graph(value)
        elif number not in _NAMES_AND_DOCS["model"]:
            other.append([number, _plain(value)])  # ir_version, functions, training info, configuration
    if graph is None:
        raise GraphKeyError("not an ONNX model: no graph")
    return graph_digest({"format": "onnx", "opsets": sorted(opsets), "other": other, "graph": graph.describe()})
