"""What every inference runtime (`device_actors.runtimes.Runtime`) promises.

Subclass `RuntimeConformance` with a `runtime_name` fixture that gives a registered runtime's name.
`runtime_model`, the bytes of a detector it loads, defaults to the trained student's file in the
first format of that runtime (`student_exports`, tests/conftest.py); a runtime without
a format overrides it. Each test checks one promise: the registry finds it by name and suffix, the
module it names imports in a fresh Python when installed (what `check_runtimes` probes), it
recognises its own files, it names its device, a session turns an image into decoded predictions,
and bytes it cannot load are a `RuntimeLoadError`.
"""
from __future__ import annotations

import numpy as np
import pytest

from device_actors.runtimes import (RUNTIMES, RuntimeLoadError, RuntimeOptions, check_runtimes, get_runtime,
                                    runtime_for)
from device_actors.runtimes.probe import import_problem
from tests.exports import IMG_SIZE
from trainables.export import FORMATS

NOT_A_MODEL = bytes(range(64))


class RuntimeConformance:
    @pytest.fixture
    def runtime(self, runtime_name):
        return get_runtime(runtime_name)

    @pytest.fixture
    def runtime_model(self, runtime_name, student_exports) -> bytes:
        """A (1, 3, IMG_SIZE, IMG_SIZE) detector this runtime loads."""
        fmt = next((f for f in FORMATS.values() if f.runtime == runtime_name), None)
        if fmt is None:
            pytest.skip(f"no format is built for runtime {runtime_name}: give its class a `runtime_model` fixture")
        return student_exports.get(fmt.name).read_bytes()

    def test_it_is_registered_under_its_name_and_claims_its_suffix(self, runtime):
        assert RUNTIMES.get(runtime.name) is runtime
        assert runtime.suffix.startswith(".") and runtime_for(f"model{runtime.suffix}") is runtime

    def test_its_module_imports_in_a_fresh_python_when_installed(self, runtime):
        module = runtime.module()
        if module is None:
            assert not runtime.available()
            pytest.skip(f"{runtime.name} is not installed here")
        assert import_problem(module) is None
        assert runtime.available() and runtime.version()
        assert check_runtimes().versions[runtime.name] == runtime.version()

    def test_it_recognises_its_own_files_and_not_other_bytes(self, runtime, runtime_model):
        assert runtime.recognises(runtime_model)
        assert not runtime.recognises(NOT_A_MODEL)

    def test_it_names_the_device_that_runs_its_artifacts(self, runtime):
        for options in (RuntimeOptions(), RuntimeOptions(threads=2, delegate="/usr/lib/libvx_delegate.so")):
            label = runtime.device(options)
            assert isinstance(label, str) and label

    def test_a_session_turns_an_image_into_decoded_predictions_the_same_each_run(self, runtime, runtime_model):
        if not runtime.available():
            pytest.skip(f"{runtime.name} is not installed here")
        session = runtime.load(runtime_model, RuntimeOptions())
        assert session.input_hw == (IMG_SIZE, IMG_SIZE)
        image = np.random.default_rng(0).random((1, 3, IMG_SIZE, IMG_SIZE), dtype=np.float32)
        first, second = session.run(image), session.run(image)
        assert first.dtype == np.float32 and first.ndim == 3 and first.shape[0] == 1 and first.shape[2] > 5
        assert np.isfinite(first).all() and np.array_equal(first, second)
        assert np.all((first[..., 4:] >= 0) & (first[..., 4:] <= 1))  # objectness and class probabilities

    def test_bytes_it_cannot_load_are_a_runtime_load_error(self, runtime):
        if not runtime.available():
            pytest.skip(f"{runtime.name} is not installed here")
        with pytest.raises(RuntimeLoadError):
            runtime.load(NOT_A_MODEL, RuntimeOptions())
