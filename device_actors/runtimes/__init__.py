"""Inference runtimes by name. Each imports its library only when used, so a board with only one
of them installed works."""
from __future__ import annotations

from device_actors.runtimes.base import Runtime, RuntimeLoadError, RuntimeOptions, Session
from device_actors.runtimes.litert import LiteRt
from device_actors.runtimes.ort import OnnxRuntime

RUNTIMES: dict[str, Runtime] = {"onnxruntime": OnnxRuntime(), "tflite": LiteRt()}

__all__ = ["RUNTIMES", "Runtime", "RuntimeLoadError", "RuntimeOptions", "Session", "get_runtime", "runtime_for"]


def get_runtime(name: str) -> Runtime:
    if name not in RUNTIMES:
        raise RuntimeLoadError(f"unknown runtime {name!r}; known runtimes: {', '.join(RUNTIMES)}")
    return RUNTIMES[name]


def runtime_for(filename: str) -> Runtime:
    """The runtime that loads an artifact, by its file suffix (.onnx, .tflite)."""
    for rt in RUNTIMES.values():
        if filename.endswith(rt.suffix):
            return rt
    raise RuntimeLoadError(f"no runtime for {filename!r}; known suffixes: "
                        f"{', '.join(rt.suffix for rt in RUNTIMES.values())}")
