"""Config check of the QAT and int8-mixed knobs: each stops at exit 2 naming the key and what is allowed."""
from __future__ import annotations

import pytest

from orchestrator.config import parse_config
from tests.orchestrator.test_config import base_config, error_of


def _with(fixed: dict | None = None, search: dict | None = None) -> dict:
    data = base_config()
    data["fixed"].update(fixed or {})
    data["search"].update(search or {})
    return data


def test_max_map_drop_without_int8_mixed_names_the_key_and_the_quantization_it_needs():
    message = error_of(_with(fixed={"quantization": "int8", "max_map_drop": 0.005}))
    assert "fixed.max_map_drop" in message and "int8-mixed" in message


def test_qat_epochs_without_qat_names_the_key():
    message = error_of(_with(fixed={"qat_epochs": 2}))
    assert "fixed.qat_epochs" in message and "qat" in message


def test_max_map_drop_out_of_range_names_the_bound():
    message = error_of(_with(fixed={"quantization": "int8-mixed", "max_map_drop": 1.5}))
    assert "fixed.max_map_drop" in message and "1" in message


def test_int8_mixed_with_tflite_names_what_tflite_offers():
    message = error_of(_with(fixed={"quantization": "int8-mixed", "runtime": "tflite"}))
    assert "int8-mixed" in message and "qat" in message  # tflite's quantizations are listed


def test_qat_with_an_io_it_cannot_write_names_the_key_and_the_allowed_values():
    message = error_of(_with(fixed={"quantization": "qat", "runtime": "tflite", "int8_io": "nhwc-uint8"}))
    assert "fixed.int8_io" in message and "tflite-qat takes int8_io nchw" in message


def test_qat_in_a_quantization_only_sweep_needs_its_own_epochs():
    data = {**base_config(), "teachers": {}, "search": {"runtime": {"choice": ["onnxruntime", "tflite"]}},
            "fixed": {"quantization": "qat", "epochs": 0, "student_init": __file__}}
    message = error_of(data)
    assert "qat_epochs" in message


@pytest.mark.parametrize("fixed", [
    {"quantization": "qat", "qat_epochs": 2},
    {"quantization": "int8-mixed", "max_map_drop": 0.02, "int8_granularity": "per-tensor"}])
def test_qat_and_int8_mixed_parse_with_their_knobs(fixed):
    cfg = parse_config(_with(fixed=fixed))
    assert all(cfg.search.fixed[k] == v for k, v in fixed.items())
