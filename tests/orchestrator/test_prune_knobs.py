"""The pruning knobs in a sweep file: bounded, conditional on pruning, and part of what decides a student."""
from __future__ import annotations

import pytest

from orchestrator.config import parse_config
from orchestrator.errors import ConfigError
from orchestrator.students import deciding_knobs
from trainables.hyper import TrainKnobs


def sweep(**sections) -> dict:
    data = {"name": "t", "search": {"kd_method": {"choice": ["none"]}}, "fixed": {"epochs": 2},
            "searcher": {"algorithm": "tpe", "trials": 2}}
    for section, values in sections.items():
        data[section] = {**data.get(section, {}), **values}
    return data


def error_of(data: dict) -> str:
    with pytest.raises(ConfigError) as info:
        parse_config(data)
    return str(info.value)


def test_prune_ratio_out_of_range_names_the_key_and_its_bounds():
    message = error_of(sweep(fixed={"prune_ratio": 0.95}))
    assert "fixed.prune_ratio: must be" in message and "< 0.9" in message


def test_prune_method_without_pruning_is_a_config_error():
    message = error_of(sweep(fixed={"prune_method": "bn-scale"}))
    assert "fixed.prune_method: only used when prune_ratio is not 0.0" in message


def test_unknown_prune_method_lists_the_known_ones():
    message = error_of(sweep(fixed={"prune_ratio": 0.5, "prune_method": "taylor"}))
    assert "fixed.prune_method:" in message and "l1, group-norm, bn-scale" in message


def test_prune_method_is_reset_where_the_sampled_ratio_is_zero():
    cfg = parse_config(sweep(search={"prune_ratio": {"choice": [0, 0.5]}, "prune_method": {"choice": ["l1", "bn-scale"]}}))
    space = cfg.search
    assert space.complete({"kd_method": "none", "prune_ratio": 0.0, "prune_method": "bn-scale"})["prune_method"] == "l1"
    assert space.complete({"kd_method": "none", "prune_ratio": 0.5, "prune_method": "bn-scale"})["prune_method"] \
        == "bn-scale"


def test_pruning_knobs_decide_the_cached_student():
    assert deciding_knobs(TrainKnobs(prune_ratio=0.3)) != deciding_knobs(TrainKnobs())
    assert deciding_knobs(TrainKnobs(prune_ratio=0.3, prune_method="bn-scale")) \
        != deciding_knobs(TrainKnobs(prune_ratio=0.3))


def test_pruning_a_sweep_that_trains_nothing_is_a_config_error(tmp_path):
    init = tmp_path / "student.pt"
    init.write_bytes(b"")
    message = error_of(sweep(fixed={"epochs": 0, "prune_ratio": 0.3}, student={"init": str(init)}))
    assert "prune_ratio: fixed.epochs: 0 exports the checkpoint as it is" in message


def test_a_grid_tries_pruning_methods_only_where_it_prunes():
    cfg = parse_config({**sweep(search={"prune_ratio": {"grid": [0, 0.3]}, "prune_method": {"grid": ["l1", "bn-scale"]}}),
                        "searcher": {"algorithm": "grid"}})
    points = [(p["prune_ratio"], p["prune_method"]) for p in cfg.search.grid_points()]
    assert points == [(0.0, "l1"), (0.3, "l1"), (0.3, "bn-scale")]
