"""Where each operator of a model would run under a delegate's profile, and why not on its accelerator.

The operators are read in graph order with LiteRT's interpreter (`_get_ops_details`, before any
delegate touches the graph) and its tensor details (type, shape signature, quantization scales);
a tensor is a constant when no operator produces it and it is not a graph input. An ONNX model's
nodes are read with `onnx` where it is installed (the driver); the shipped profiles name TFLite
operators, so under them every ONNX node falls back.

Partitions: a delegate replaces each connected run of operators it takes with one node; here a
partition is a maximal run of consecutive delegated operators in graph order (the order the file
lists them, which is the interpreter's execution plan). Independent branches that a delegate could
merge count apart, so P can be higher than what an interpreter builds; the board's own count after
delegation (`device_actors.npu.delegated`) is the measured one.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np

from common.errors import UserError
from device_actors.npu.profiles import NpuProfile

QUANTIZED_TYPES = ("int8", "uint8", "int16")
TABLE_FILE = "npu-placement.txt"  # a trial's per-operator table (`Placement.table`), beside its artifact in MLflow
_BUILTIN_NAME = re.compile(r"^[A-Z][A-Z0-9_]*$")  # LiteRT's builtin names; a custom op keeps its own name


class ModelReadError(UserError, ValueError):
    """Bytes that are not a model this module can read."""


@dataclass(frozen=True)
class TensorInfo:
    index: int
    dtype: str  # numpy name: int8, float32, ...
    shape: tuple[int, ...]  # the shape signature: -1 where a dimension is only known at run time
    scales: int  # quantization scales: 0 none, 1 per tensor, C per channel
    constant: bool
    scale: float = 0.0  # the first scale (0: none)


@dataclass(frozen=True)
class GraphOp:
    index: int
    name: str  # CONV_2D, or a custom operator's name
    custom: bool
    inputs: tuple[TensorInfo, ...] = ()  # the inputs present, in slot order (an absent optional input, -1, is not)
    input_slots: tuple[int, ...] = ()  # the operator's input slot of each of `inputs`
    outputs: tuple[TensorInfo, ...] = ()


@dataclass(frozen=True)
class OpPlacement:
    index: int
    op: str
    runs_on: str
    reasons: tuple[str, ...] = ()  # why not on the accelerator; empty when it runs there

    @property
    def delegated(self) -> bool:
        return not self.reasons


@dataclass(frozen=True)
class Placement:
    """A model's operators under one profile: where each runs, and the counts the sweep logs."""

    profile: str
    accelerator: str
    ops: tuple[OpPlacement, ...] = field(default_factory=tuple)

    @property
    def delegated(self) -> int:
        return sum(p.delegated for p in self.ops)

    @property
    def fallback(self) -> int:
        return len(self.ops) - self.delegated

    @property
    def partitions(self) -> int:
        """Maximal runs of consecutive delegated operators in graph order."""
        return sum(p.delegated and (i == 0 or not self.ops[i - 1].delegated) for i, p in enumerate(self.ops))

    def summary(self) -> str:
        return (f"delegated {self.delegated} of {len(self.ops)} ops in {self.partitions} partitions; "
                f"{self.fallback} fall back")

    def metrics(self) -> dict[str, int]:
        """The trial's npu_* metrics (MLflow: npu/...)."""
        return {"npu_ops": len(self.ops), "npu_delegated_ops": self.delegated, "npu_partitions": self.partitions,
                "npu_fallback_ops": self.fallback}

    def table(self) -> str:
        """The per-operator table, as plain text (inspect prints it; a trial logs it as npu-placement.txt)."""
        width = max([len(p.op) for p in self.ops] + [2])
        lines = [f"# under profile {self.profile}", f"{'#':>4}  {'op':<{width}}  runs on  why not {self.accelerator}"]
        lines += [f"{p.index:>4}  {p.op:<{width}}  {p.runs_on:<7}  {'; '.join(p.reasons) or '-'}" for p in self.ops]
        return "\n".join(lines + [self.summary()]) + "\n"


def _builtin_names() -> frozenset[str] | None:
    try:
        from ai_edge_litert import schema_py_generated as schema
    except ImportError:  # a vendor image's tflite_runtime has no schema: names decide
        return None
    return frozenset(k for k in vars(schema.BuiltinOperator) if not k.startswith("_"))


def _interpreter(model: bytes):
    from device_actors.runtimes.litert import _interpreter_module

    mod = _interpreter_module()
    if mod is None:
        raise ModelReadError("no TFLite interpreter: pip install ai-edge-litert (or use the board image's "
                             "tflite_runtime)")
    try:
        return mod.Interpreter(model_content=model,
                               experimental_op_resolver_type=mod.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    except (ValueError, RuntimeError) as e:
        raise ModelReadError(f"LiteRT cannot read this model: {e}") from e


def tflite_ops(model: bytes) -> list[GraphOp]:
    """The TFLite model's operators in graph order, with their tensors."""
    it = _interpreter(model)
    details = it._get_ops_details()  # noqa: SLF001 - LiteRT's only per-operator view
    tensors = {t["index"]: t for t in it.get_tensor_details()}
    produced = {int(t) for op in details for t in op["outputs"]}
    graph_inputs = {int(t["index"]) for t in it.get_input_details()}
    builtins = _builtin_names()

    def info(index: int) -> TensorInfo:
        t = tensors[index]
        shape = t.get("shape_signature", t["shape"])
        scales = t["quantization_parameters"]["scales"]
        return TensorInfo(index=index, dtype=np.dtype(t["dtype"]).name, shape=tuple(int(d) for d in shape),
                          scales=len(scales), scale=float(scales[0]) if len(scales) else 0.0,
                          constant=index not in produced and index not in graph_inputs)

    ops = []
    for op in details:
        name = str(op["op_name"])
        custom = name not in builtins if builtins is not None else not _BUILTIN_NAME.match(name)
        slots = [(slot, int(t)) for slot, t in enumerate(op["inputs"]) if int(t) >= 0 and int(t) in tensors]
        ops.append(GraphOp(index=int(op["index"]), name=name, custom=custom,
                           inputs=tuple(info(t) for _, t in slots), input_slots=tuple(s for s, _ in slots),
                           outputs=tuple(info(int(t)) for t in op["outputs"] if int(t) in tensors)))
    return ops


def onnx_ops(model: bytes) -> list[GraphOp]:
    """An ONNX model's nodes in graph order (names only: `domain.OpType` outside the default domain)."""
    try:
        import onnx
    except ImportError as e:
        raise ModelReadError("reading ONNX graphs needs the onnx package (pip install onnx)") from e
    try:
        graph = onnx.load_model_from_string(model).graph
    except Exception as e:  # noqa: BLE001 - protobuf's DecodeError and friends
        raise ModelReadError(f"onnx cannot read this model: {e}") from e
    return [GraphOp(index=i, name=f"{n.domain}.{n.op_type}" if n.domain not in ("", "ai.onnx") else n.op_type,
                    custom=n.domain not in ("", "ai.onnx")) for i, n in enumerate(graph.node)]


def _reasons(op: GraphOp, profile: NpuProfile) -> list[str]:
    """Why `profile`'s delegate would leave `op` to the CPU (empty: it takes it)."""
    if op.custom:
        return [] if op.name in profile.custom_ops else [f"custom op {op.name}"]
    if op.name not in profile.ops:
        return [f"operator {op.name} unsupported"]
    out = []
    by_slot = dict(zip(op.input_slots, op.inputs))
    for slot in profile.constant_inputs.get(op.name, ()):
        if slot in by_slot and not by_slot[slot].constant:
            out.append(f"dynamic shape (input {slot} is computed at run time)")
    tensors = (*op.inputs, *op.outputs)
    if profile.static_shapes and any(-1 in t.shape for t in tensors):
        out.append("dynamic shape (a -1 dimension)")
    for dtype in sorted({t.dtype for t in tensors if not t.constant and t.dtype in profile.rejected_types}):
        out.append("int16 activations" if dtype == "int16" else f"{dtype} tensors")
    if profile.quantized_needs_params and any(t.dtype in QUANTIZED_TYPES and t.scales == 0 for t in tensors):
        out.append("int8 tensor without quantization parameters")
    out += _requantize_reasons(op, profile)
    if profile.weights == "per-tensor":
        channels = [t.scales for t in op.inputs if t.constant and t.scales > 1]
        if channels:
            out.append(f"per-channel quantized weights ({max(channels)} scales); the profile needs per-tensor")
    return out


def _requantize_reasons(op: GraphOp, profile: NpuProfile) -> list[str]:
    """Why a QUANTIZE from one 8-bit tensor to another stays off: between int8 and uint8 where the
    profile needs one type, or by a scale ratio (input / output) outside the profile's range."""
    if op.name != "QUANTIZE" or len(op.inputs) != 1 or len(op.outputs) != 1:
        return []
    x, y = op.inputs[0], op.outputs[0]
    if x.dtype not in ("int8", "uint8") or y.dtype not in ("int8", "uint8"):
        return []
    if x.dtype != y.dtype:
        return [f"requantization from {x.dtype} to {y.dtype}"] if profile.requantize_same_type else []
    low, high = profile.requantize_ratio or (0.0, float("inf"))
    ratio = x.scale / y.scale if x.scale and y.scale else None
    if ratio is None or low <= ratio <= high:
        return []
    return [f"requantization by {ratio:.3g}, outside {low:g}-{high:g}"]


def placement_of(ops: list[GraphOp], profile: NpuProfile, *, fmt: str) -> Placement:
    """Where each of `ops` (a `fmt` model's, in graph order) runs under `profile`."""
    placed = []
    for op in ops:
        reasons = ([f"the profile covers {', '.join(profile.formats)} models, not {fmt}"]
                   if fmt not in profile.formats else _reasons(op, profile))
        runs_on = profile.fallback if reasons else profile.accelerator
        placed.append(OpPlacement(index=op.index, op=op.name, runs_on=runs_on, reasons=tuple(reasons)))
    return Placement(profile=profile.name, accelerator=profile.accelerator, ops=tuple(placed))


READERS = {"tflite": ("tflite", tflite_ops), "onnxruntime": ("onnx", onnx_ops)}  # runtime -> (format, reader)


def model_placement(model: bytes, profile: NpuProfile) -> Placement:
    """Where each operator of `model` (TFLite or ONNX bytes, told apart by their magic) runs under `profile`."""
    from device_actors.runtimes import RUNTIMES

    for name, runtime in RUNTIMES.items():
        if name in READERS and runtime.recognises(model):
            fmt, read = READERS[name]
            return placement_of(read(model), profile, fmt=fmt)
    raise ModelReadError(f"not a TFLite or ONNX model ({len(model)} bytes)")
