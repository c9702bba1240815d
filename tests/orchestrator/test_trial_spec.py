"""A trial is typed once: each stage gets its own section, and the facts derived from the knobs
(the teacher, a user's own model, the label) are computed in one place."""
from __future__ import annotations

import logging

import pytest

from device_actors.runtimes import BoardKnobs
from orchestrator.config import parse_config
from orchestrator.errors import ConfigError
from orchestrator.trial_spec import TrialSpec, teacher_key
from trainables.export.registry import ExportKnobs
from trainables.hyper import TrainKnobs


def sweep(**fixed) -> dict:
    return {"name": "t", "teachers": {"s": {"model": "s", "epochs": 3}},
            "search": {"kd_method": {"choice": ["none", "cwd"]}, "quantization": {"choice": ["fp32", "int8"]}},
            "fixed": {"epochs": 4, "img_size": 96, **fixed}, "searcher": {"algorithm": "tpe", "trials": 4}}


def test_each_stage_gets_its_own_typed_section_and_the_knobs_stay_plain_for_the_journal():
    cfg = parse_config(sweep(board_threads=3))
    trial = TrialSpec.of(cfg.search.complete({"kd_method": "cwd", "quantization": "int8"}))
    assert isinstance(trial.train, TrainKnobs) and isinstance(trial.export, ExportKnobs)
    assert isinstance(trial.board, BoardKnobs) and trial.board.board_threads == 3
    assert (trial.train.kd_method, trial.train.epochs, trial.train.kd_params) == ("cwd", 4, {"cwd_tau": 1.0})
    assert (trial.export.quantization, trial.export.img_size, trial.format) == ("int8", 96, "onnx-int8")
    assert trial.knobs["board_threads"] == 3 and set(trial.knobs) == set(cfg.search.knobs)


def test_derived_facts_are_computed_once_on_the_trial():
    cfg = parse_config(sweep())
    distilled = TrialSpec.of(cfg.search.complete({"kd_method": "cwd", "quantization": "fp32"}))
    baseline = TrialSpec.of(cfg.search.complete({"kd_method": "none", "quantization": "fp32"}))
    assert distilled.teacher_key == teacher_key("s", 96) == "s@96" and baseline.teacher_key is None
    assert distilled.label == "cwd x1 · onnx · 96px" and baseline.label == "no KD · onnx · 96px"
    assert distilled.kd_name(teacher=True) == "cwd/s x1" and not distilled.user_model


def test_a_users_onnx_model_is_known_by_the_trial(tmp_path):
    model = tmp_path / "det.onnx"
    model.write_bytes(b"onnx")
    raw = {"name": "q", "student": {"init": str(model)}, "search": {"quantization": {"choice": ["fp32", "int8"]}},
           "fixed": {"epochs": 0, "img_size": 128}, "searcher": {"algorithm": "grid"}}
    trial = TrialSpec.of(parse_config(raw).search.complete({"quantization": "int8"}))
    assert trial.user_model and trial.train.student_init == str(model)


def test_the_old_threads_knob_is_read_as_board_threads_with_a_warning(caplog):
    with caplog.at_level(logging.WARNING):
        cfg = parse_config(sweep(threads=2))
    assert cfg.search.fixed["board_threads"] == 2 and "threads" not in cfg.search.fixed
    assert "fixed.threads is now called board_threads" in caplog.text
    # a trial Tune saved before the rename still completes, and a journal record still reads
    assert cfg.search.complete({"kd_method": "none", "quantization": "fp32", "threads": 2})["board_threads"] == 2
    assert TrialSpec.of({**cfg.search.complete({"kd_method": "none", "quantization": "fp32"}),
                         "threads": 4}).board.board_threads == 4
    with pytest.raises(ConfigError, match="fixed.threads: renamed board_threads, which is there too"):
        parse_config(sweep(threads=2, board_threads=2))
