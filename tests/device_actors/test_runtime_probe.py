"""A runtime whose import crashes the interpreter is a named error, never a crash loop of the board's actor.

The crash is real: a module that kills its interpreter with SIGSEGV on import, as onnxruntime does
under qemu-user with the host's x86 /proc/cpuinfo.
"""
from __future__ import annotations

import pytest

from device_actors.actor import BoardLatencyActor
from device_actors.measure import sha256_hex
from device_actors.report import MeasureRequest
from device_actors.runtimes import RUNTIMES, RuntimeLoadError, check_runtimes, register_runtime
from device_actors.runtimes.probe import import_problem

CRASHES = "import os, signal\nos.kill(os.getpid(), signal.SIGSEGV)\n"


class CrashingRuntime:
    """A runtime whose library segfaults when imported (only `module` is ever used: the probe stops it)."""

    name, suffix = "crashrt", ".crash"

    def module(self) -> str:
        return "edgesweep_crashy"

    def available(self) -> bool:
        raise AssertionError("never imported in-process")

    def version(self) -> str:
        raise AssertionError("never imported in-process")

    def recognises(self, model: bytes) -> bool:
        return model[:4] == b"CRSH"

    def device(self, options) -> str:
        return "CPU"

    def load(self, model, options):
        raise AssertionError("never imported in-process")


@pytest.fixture
def crashing_runtime(tmp_path, monkeypatch):
    (tmp_path / "edgesweep_crashy.py").write_text(CRASHES)
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))  # the probe's child finds it; this process never imports it
    import_problem.cache_clear()
    register_runtime(CrashingRuntime())
    yield
    RUNTIMES.unregister("crashrt")
    import_problem.cache_clear()


def test_the_probe_names_a_crashing_import_and_a_missing_module(crashing_runtime):
    assert import_problem("edgesweep_crashy") == "importing edgesweep_crashy in a fresh Python died with SIGSEGV"
    assert "No module named 'no_such_runtime_lib'" in import_problem("no_such_runtime_lib")
    assert import_problem("json") is None


def test_a_board_with_a_crashing_runtime_stays_up_and_refuses_its_artifacts_by_name(crashing_runtime, tmp_path,
                                                                                   toy_onnx):
    check = check_runtimes()
    assert "crashrt" in check.problems and "onnxruntime" in check.versions
    actor = BoardLatencyActor("crashboard", emulated=True, cache_dir=str(tmp_path / "cache"))  # no crash here
    with pytest.raises(RuntimeLoadError, match="runtime 'crashrt' cannot run on board 'crashboard': importing "
                                               "edgesweep_crashy in a fresh Python died with SIGSEGV"):
        actor.measure(MeasureRequest(sha256_hex(toy_onnx), "crashrt"), toy_onnx)
    assert actor.status().emulated and "crashrt" not in actor.status().runtime_versions
