"""What a delegate accepts, as a data file: one YAML per delegate under `device_actors/npu/profiles/`
(`vx`, `xnnpack`), or any YAML file a user writes in the same schema (`inspect --npu my-npu.yaml`,
`board.npu_profile: my-npu.yaml`), e.g. for an Ethos-U (Vela) or a Neutron NPU.

The schema, every key (unknown keys are refused; a bad file names the file and the key):

    name: vx                        # what reports call it
    description: ...                # one line: the board, the delegate
    accelerator: NPU                # where the ops it takes run (inspect's column)
    fallback: CPU                   # where the others run
    formats: [tflite]               # artifact formats whose operators it names (others: all fall back)
    sources: [...]                  # where each fact comes from: repository, file, commit
    ops: [CONV_2D, ...]             # builtin operators it takes, as LiteRT's interpreter names them
    custom_ops: []                  # custom operators it takes, by their custom name
    constant_inputs: {RESHAPE: [1]} # per operator, input slots that must be constants (else: a dynamic shape)
    weights: per-tensor             # per-tensor: an op with a constant of several scales (per-channel) falls
                                    # back; any: both layouts run
    rejected_types: [int16]         # tensor types (numpy names) that keep an op off, wherever they appear
                                    # on a non-constant input or output
    quantized_needs_params: true    # an int8/uint8 tensor without scale and zero point keeps its op off
    static_shapes: true             # a tensor with a dynamic (-1) dimension keeps its op off
    requantize_ratio: [0.0039, 128] # a QUANTIZE between two 8-bit tensors of one type runs only when its input
                                    # scale / output scale is in this range (absent: any)
    requantize_same_type: false     # true: a QUANTIZE between int8 and uint8 falls back
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import Field, TypeAdapter, ValidationError

from common.errors import UserError

PROFILE_DIR = Path(__file__).with_name("profiles")
DEFAULT_PROFILE = "vx"  # the reference board's NPU: the i.MX8M Plus through VeriSilicon's VX delegate
TENSOR_TYPES = ("bool", "int4", "int8", "uint8", "int16", "uint16", "int32", "uint32", "int64", "uint64", "float16",
                "float32", "float64", "complex64", "string")
OpName = Annotated[str, Field(min_length=1)]


class ProfileError(UserError, ValueError):
    """A profile that cannot be found or read: the message names the file (and key)."""


@dataclass(frozen=True)
class NpuProfile:
    """One delegate's rules (see the module docstring for the file's schema)."""

    __pydantic_config__ = {"extra": "forbid"}
    name: Annotated[str, Field(min_length=1)]
    description: str
    accelerator: Annotated[str, Field(min_length=1)]
    fallback: Annotated[str, Field(min_length=1)]
    formats: tuple[Literal["tflite", "onnx"], ...]
    sources: Annotated[tuple[str, ...], Field(min_length=1)]
    ops: Annotated[frozenset[OpName], Field(min_length=1)]
    custom_ops: frozenset[OpName] = frozenset()
    constant_inputs: dict[OpName, tuple[Annotated[int, Field(ge=0)], ...]] = field(default_factory=dict)
    weights: Literal["per-tensor", "any"] = "any"
    rejected_types: frozenset[Literal[TENSOR_TYPES]] = frozenset()  # type: ignore[valid-type]
    quantized_needs_params: bool = True
    static_shapes: bool = True
    requantize_ratio: tuple[Annotated[float, Field(gt=0)], Annotated[float, Field(gt=0)]] | None = None
    requantize_same_type: bool = False


_ADAPTER = TypeAdapter(NpuProfile)


def profile_names() -> tuple[str, ...]:
    """The profiles that ship with EdgeSweep (a file path names any other)."""
    return tuple(sorted(p.stem for p in PROFILE_DIR.glob("*.yaml")))


def _path_of(name_or_path: str) -> Path:
    if name_or_path.endswith((".yaml", ".yml")):
        return Path(name_or_path)
    path = PROFILE_DIR / f"{name_or_path}.yaml"
    if not path.is_file():
        raise ProfileError(f"unknown NPU profile {name_or_path!r}; known profiles: {', '.join(profile_names())} "
                           f"(or a path to a profile .yaml)")
    return path


def load_profile(name_or_path: str) -> NpuProfile:
    """A shipped profile by name (`vx`), or a profile file by its path (`*.yaml`)."""
    path = _path_of(name_or_path)
    try:
        raw = yaml.safe_load(path.read_text())
    except OSError as e:
        raise ProfileError(f"cannot read NPU profile {path}: {e.strerror or e}") from e
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise ProfileError(f"{path}{where}: not YAML: {getattr(e, 'problem', None) or e}") from e
    if not isinstance(raw, dict):
        raise ProfileError(f"{path}: a profile is a mapping of keys (name, accelerator, ops, ...), got "
                           f"{type(raw).__name__}")
    try:
        return _ADAPTER.validate_python(raw)
    except ValidationError as e:
        problems = "; ".join(f"key {'.'.join(str(p) for p in err['loc']) or '(top level)'}: {err['msg']}"
                             for err in e.errors())
        raise ProfileError(f"{path}: {problems}") from None
