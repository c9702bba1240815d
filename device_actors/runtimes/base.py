"""What every inference runtime offers: load model bytes, run one pre-processed image.

A session hides the artifact's quirks (NCHW or NHWC input, int8 or uint8 input/outputs with
quantization parameters, outputs split or left for the host to decode as the file's description
says: `detection.outputs`), so callers always pass a (1, 3, H, W) float32 image in [0, 1] and always
get decoded predictions (1, N, 5 + C) float32 back. That keeps accuracy evaluation and latency timing on the
same code path as deployment.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from common.errors import UserError
from common.knobs import knob
from detection.outputs import OutputLayout, OutputsError


class RuntimeLoadError(UserError, RuntimeError):
    """A runtime that is missing on this machine or cannot load an artifact."""


class GraphKeyError(ValueError):
    """Bytes whose graph cannot be read (not a model of the runtime's format, or a truncated one)."""


def graph_digest(description: object) -> str:
    """The sha256 of a graph's description (plain JSON values), as each runtime's `graph_key` returns it."""
    return hashlib.sha256(json.dumps(description, separators=(",", ":")).encode()).hexdigest()


@dataclass(frozen=True)
class BoardKnobs:
    """The board stage of one trial: its one knob (the rest of how a board runs an artifact is the
    sweep's `board:` section, the same for every trial)."""

    board_threads: int = knob(1, "inference threads on the board", minimum=1)


@dataclass(frozen=True)
class RuntimeOptions:
    """How the board runs an artifact: `threads` is the trial's `board_threads`, the rest the sweep's
    `board:` section."""

    threads: int = 1
    providers: tuple[str, ...] = ("CPUExecutionProvider",)  # onnxruntime execution providers, in order
    delegate: str | None = None  # TFLite external delegate library, e.g. /usr/lib/libvx_delegate.so
    delegate_options: dict[str, str] = field(default_factory=dict)
    xnnpack: bool = True  # TFLite's default CPU delegate; False runs the builtin kernels alone

    def key(self) -> tuple:
        """Hashable identity, part of the latency cache key (the XNNPACK default adds nothing, so keys
        cached before the option existed still match)."""
        key = (self.threads, self.providers, self.delegate, tuple(sorted(self.delegate_options.items())))
        return key if self.xnnpack else (*key, "no-xnnpack")


class Session(Protocol):
    input_hw: tuple[int, int]

    def run(self, image: np.ndarray) -> np.ndarray:
        """(1, 3, H, W) float32 in [0, 1] -> (1, N, 5 + C) float32 decoded predictions."""
        ...


class Runtime(Protocol):
    name: str
    suffix: str  # artifact file suffix this runtime loads

    def module(self) -> str | None:
        """The library `load` imports (the one installed), or None when none is."""
        ...

    def available(self) -> bool: ...
    def version(self) -> str: ...

    def recognises(self, model: bytes) -> bool:
        """Whether `model` looks like a file of this runtime (a magic number; no library import)."""
        ...

    def device(self, options: RuntimeOptions) -> str:
        """What runs its artifacts on a board with these options, e.g. "CPUExecutionProvider"."""
        ...

    def load(self, model: bytes, options: RuntimeOptions) -> Session: ...

    def graph_key(self, model: bytes) -> str | None:
        """A hash of the artifact's graph without its weight values: operators, attributes, tensor
        shapes and types, which tensors are quantized and how (per tensor or per channel), never the
        values of weights, scales or zero points. Two artifacts with the same key run equally fast on
        a dense runtime, so the board times one of them (`board.timing.reuse_graphs`). None where
        the runtime cannot tell (its parser is not installed); GraphKeyError for unreadable bytes.
        Optional: a runtime without it has every artifact timed."""
        ...


def to_layout(image: np.ndarray, input_shape: tuple[int, ...]) -> np.ndarray:
    """Transpose a (1, 3, H, W) image to NHWC when the artifact expects (1, H, W, 3)."""
    if len(input_shape) == 4 and input_shape[1] != 3 and input_shape[3] == 3:
        return np.ascontiguousarray(image.transpose(0, 2, 3, 1))
    return image


def input_hw(input_shape: tuple[int, ...]) -> tuple[int, int]:
    if input_shape[1] == 3:
        return int(input_shape[2]), int(input_shape[3])
    return int(input_shape[1]), int(input_shape[2])


def output_layout(description: str | None, output_names: list[str]) -> OutputLayout:
    """What the artifact's outputs hold, from its metadata text (None: one joined output), checked
    against the outputs it has."""
    try:
        layout = OutputLayout.from_json(description, default_names=output_names)
        layout.check(output_names)
    except OutputsError as e:
        raise RuntimeLoadError(f"this artifact's outputs do not match its description: {e}") from e
    return layout
