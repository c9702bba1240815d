"""What every artifact format (`trainables.export.registry.ArtifactFormat`) promises.

Subclass `FormatConformance` with a `format_name` fixture that gives a registered format's name;
each test checks one promise on the trained student's file in that format (`student_exports`,
tests/conftest.py): its runtime is registered and claims its suffix, its functions
import, its MLflow flavour exists, its file runs in its runtime to the same predictions' shape as
the float ONNX, and it loses at most its `max_map_drop` of mAP against that file.
"""
from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from common.knobs import declared_knobs
from common.registry import load
from detection.letterbox import letterbox, to_input
from device_actors.runtimes import RUNTIMES, RuntimeOptions, get_runtime, runtime_for
from tests.exports import CALIB_IMAGES, IMG_SIZE
from trainables.export import ExportKnobs, get_format

REFERENCE = "onnx"  # the float32 ONNX: every format's mAP loss is measured against it


def _calib_method_choices() -> tuple:
    return next(k for k in declared_knobs(ExportKnobs) if k.name == "calib_method").allowed_values()


class FormatConformance:
    @pytest.fixture
    def fmt(self, format_name):
        return get_format(format_name)

    def test_its_runtime_is_registered_and_claims_its_suffix(self, fmt):
        assert fmt.runtime in RUNTIMES, f"{fmt.name}: runtime {fmt.runtime!r} is not registered"
        assert fmt.suffix.startswith(".") and runtime_for(f"model{fmt.suffix}").name == fmt.runtime

    def test_its_builder_and_tool_check_import(self, fmt):
        assert callable(load(fmt.builder))
        assert fmt.requires is None or callable(load(fmt.requires))

    def test_its_mlflow_flavor_is_an_mlflow_module(self, fmt):
        assert fmt.mlflow_flavor is None or importlib.util.find_spec(f"mlflow.{fmt.mlflow_flavor}") is not None

    def test_its_calibration_methods_are_choices_of_the_calib_method_knob(self, fmt):
        assert set(fmt.calib_methods) <= set(_calib_method_choices())
        assert fmt.needs_calibration == bool(fmt.calib_methods)

    def test_its_map_bound_is_a_loss_in_map_units(self, fmt):
        assert 0 <= fmt.max_map_drop < 1

    def test_its_file_runs_in_its_runtime_to_predictions_shaped_like_the_float_onnx(self, fmt, student_exports):
        artifact = student_exports.get(fmt.name)
        data = artifact.read_bytes()
        runtime = get_runtime(fmt.runtime)
        assert artifact.runtime == fmt.runtime and artifact.path.name.endswith(fmt.suffix)
        assert runtime.recognises(data), f"{fmt.runtime} does not recognise a {fmt.name} file"
        image = to_input(letterbox(student_exports.splits.val.load_image(0), IMG_SIZE)[0])
        session = runtime.load(data, RuntimeOptions())
        assert session.input_hw == (IMG_SIZE, IMG_SIZE)
        predictions = session.run(image)
        reference = get_runtime(get_format(REFERENCE).runtime).load(student_exports.get(REFERENCE).read_bytes(),
                                                                    RuntimeOptions()).run(image)
        assert predictions.dtype == np.float32 and predictions.shape == reference.shape
        assert np.isfinite(predictions).all()

    def test_a_calibrated_format_records_its_calibration(self, fmt, student_exports):
        settings = student_exports.get(fmt.name).settings
        if fmt.needs_calibration:
            assert settings["calib_images"] == CALIB_IMAGES and settings["calib_method"] in fmt.calib_methods
        else:
            assert "calib_images" not in settings

    def test_its_map_loss_against_the_float_onnx_is_within_its_bound(self, fmt, student_exports):
        loss = student_exports.map50_95(REFERENCE) - student_exports.map50_95(fmt.name)
        assert loss <= fmt.max_map_drop, f"{fmt.name} loses {100 * loss:.2f} mAP points against {REFERENCE}"
