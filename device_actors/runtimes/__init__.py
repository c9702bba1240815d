"""Inference runtimes by name. Each imports its library only when used, so a board with only one
of them installed works. A new runtime is one module with a `Runtime` and one `register_runtime`."""
from __future__ import annotations

import logging
from dataclasses import dataclass, field

from common.registry import Registry
from device_actors.runtimes.base import (BoardKnobs, GraphKeyError, Runtime, RuntimeLoadError, RuntimeOptions,
                                         Session)
from device_actors.runtimes.litert import LiteRt
from device_actors.runtimes.ort import OnnxRuntime
from device_actors.runtimes.probe import import_problem

log = logging.getLogger(__name__)

RUNTIMES: Registry[Runtime] = Registry("runtime", error=RuntimeLoadError)

__all__ = ["BoardKnobs", "RUNTIMES", "Runtime", "RuntimeCheck", "RuntimeLoadError", "RuntimeOptions", "Session", "check_runtimes",
           "get_runtime", "graph_key", "register_runtime", "runtime_for"]


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


def graph_key(name: str, model: bytes) -> str | None:
    """The artifact's graph key under runtime `name` (`Runtime.graph_key`), or None where it cannot be
    had: the runtime has no `graph_key`, its parser is not installed, or the bytes do not parse (the
    artifact is then timed as it is, and a load error, if any, comes from timing it)."""
    runtime = get_runtime(name)
    key_of = getattr(runtime, "graph_key", None)  # optional member: runtimes registered before it existed
    if key_of is None:
        return None
    try:
        return key_of(model)
    except GraphKeyError as e:
        log.warning("cannot read the graph of this %s artifact (%s); it is timed, not matched by graph", name, e)
        return None


@dataclass(frozen=True)
class RuntimeCheck:
    """The runtimes of this machine: the usable ones with their versions, the broken ones with why."""

    versions: dict[str, str] = field(default_factory=dict)
    problems: dict[str, str] = field(default_factory=dict)

    def require(self, name: str, where: str) -> str:
        """The version of runtime `name`, or a RuntimeLoadError saying why it cannot run `where`."""
        if name in self.problems:
            raise RuntimeLoadError(f"runtime {name!r} cannot run on {where}: {self.problems[name]}")
        if name not in self.versions:
            get_runtime(name)  # an unknown name lists the known ones
            raise RuntimeLoadError(f"runtime {name!r} is not installed on {where}; install it there "
                                   f"(pip install '.[board]') or ask for another runtime")
        return self.versions[name]


def check_runtimes() -> RuntimeCheck:
    """Probe every installed runtime's import in a child process (once per process), then read
    the versions of those that import."""
    check = RuntimeCheck()
    for name, runtime in RUNTIMES.items():
        module = runtime.module()
        if module is None:
            continue
        problem = import_problem(module)
        if problem is None:
            check.versions[name] = runtime.version()
        else:
            check.problems[name] = problem
    return check


register_runtime(OnnxRuntime())
register_runtime(LiteRt())
