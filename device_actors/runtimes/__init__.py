"""Inference runtimes by name. Each imports its library only when used, so a board with only one
of them installed works. A new runtime is one module with a `Runtime` and one `register_runtime`."""
from __future__ import annotations

from common.registry import Registry
from device_actors.runtimes.base import Runtime, RuntimeLoadError, RuntimeOptions, Session
from device_actors.runtimes.litert import LiteRt
from device_actors.runtimes.ort import OnnxRuntime

RUNTIMES: Registry[Runtime] = Registry("runtime", error=RuntimeLoadError)

__all__ = ["RUNTIMES", "Runtime", "RuntimeLoadError", "RuntimeOptions", "Session", "get_runtime", "register_runtime",
           "runtime_for"]


def register_runtime(runtime: Runtime) -> Runtime:
    return RUNTIMES.register(runtime.name, runtime)


def get_runtime(name: str) -> Runtime:
    return RUNTIMES.get(name)


def runtime_for(filename: str) -> Runtime:
    """The runtime that loads an artifact, by its file suffix (.onnx, .tflite)."""
    for rt in RUNTIMES.values():
        if filename.endswith(rt.suffix):
            return rt
    raise RuntimeLoadError(f"no runtime for {filename!r}; known suffixes: "
                           f"{', '.join(rt.suffix for rt in RUNTIMES.values())}")


register_runtime(OnnxRuntime())
register_runtime(LiteRt())
