"""The built-in search algorithms build their named Tune searcher, none a silent fallback; the Optuna
ones never train a configuration twice and survive a restore."""
from __future__ import annotations

import optuna
import pytest
from ray.tune.search import BasicVariantGenerator

from orchestrator._ray_internals import live_optuna_trial
from orchestrator.algorithms import ALGORITHMS
from orchestrator.config import parse_config
from orchestrator.errors import ConfigError
from orchestrator.searcher import (ParetoOptunaSearch, baseline_first, make_searcher, repeated_proposals,
                                   study_url)

SAMPLERS = {"tpe": optuna.samplers.TPESampler, "nsga2": optuna.samplers.NSGAIISampler,
            "gp": optuna.samplers.GPSampler}


def config(algorithm: str):
    return parse_config({"name": f"s-{algorithm}", "searcher": {"algorithm": algorithm, "trials": 4},
                         "search": {"quantization": {"grid": ["fp32", "int8"]}, "board_threads": {"grid": [1, 2]}}})


@pytest.mark.parametrize("algorithm", [*SAMPLERS, "random", "grid"])
def test_each_builtin_algorithm_builds_its_named_searcher_never_a_fallback(algorithm, tmp_path):
    """What every algorithm promises is tests/conformance/searchers.py's; here, which searcher each built-in is."""
    cfg = config(algorithm)
    searcher, space, samples = make_searcher(cfg, tmp_path)
    if algorithm in SAMPLERS:
        assert isinstance(searcher, ParetoOptunaSearch) and space == {} and samples == 4
        assert type(searcher._sampler) is SAMPLERS[algorithm]
    else:
        assert isinstance(searcher, BasicVariantGenerator) and set(space) == set(cfg.search.knobs)
        assert samples == (1 if algorithm == "grid" else 4)


def test_an_unknown_algorithm_is_a_config_error_listing_the_known_ones():
    with pytest.raises(ConfigError, match="'bayes' is not a search algorithm; allowed: tpe, nsga2, gp, random, grid"):
        config("bayes")
    with pytest.raises(ConfigError, match="unknown search algorithm 'bayes'; known algorithms: tpe"):
        ALGORITHMS.get("bayes")


def test_the_live_optuna_trial_of_a_suggested_tune_trial_is_reachable(tmp_path):
    """The one Ray-private attribute the driver reads (orchestrator/_ray_internals.py) still exists."""
    searcher, _, _ = make_searcher(config("tpe"), tmp_path)
    searcher.suggest("trial-1")
    trial = live_optuna_trial(searcher, "trial-1")
    assert isinstance(trial, optuna.Trial) and set(trial.params) == {"quantization", "board_threads"}
    assert live_optuna_trial(searcher, "never-asked") is None


def _two_config_searcher(tmp_path, algorithm: str = "tpe"):
    cfg = parse_config({"name": f"two-{algorithm}", "searcher": {"algorithm": algorithm, "trials": 4},
                        "search": {"quantization": {"choice": ["fp32", "int8"]}}})
    return cfg, make_searcher(cfg, tmp_path)[0]


def _finish(searcher, trial_id: str, map50_95: float) -> None:
    searcher.on_trial_complete(trial_id, {"trial_complete": True, "map50_95": map50_95, "latency_ms": 1.0})


@pytest.mark.parametrize("algorithm", ["tpe", "nsga2", "gp"])
def test_a_configuration_is_proposed_once_and_a_repeat_waits_for_the_running_one(algorithm, tmp_path):
    cfg, searcher = _two_config_searcher(tmp_path, algorithm)
    proposed, running = {}, []
    for n in range(12):  # two trainers: ask; when both are busy or the searcher says wait, finish them
        trial_id = f"t{n}"
        config = searcher.suggest(trial_id)
        if config == searcher.FINISHED:
            break
        if config is not None:
            assert config["quantization"] not in proposed.values(), "a configuration was proposed twice"
            proposed[trial_id] = config["quantization"]
            running.append(trial_id)
        if len(running) == 2 or config is None:
            for done in running:
                _finish(searcher, done, 0.3)
            running.clear()
    assert sorted(proposed.values()) == ["fp32", "int8"] and config == searcher.FINISHED
    study = optuna.load_study(study_name=cfg.name, storage=study_url(tmp_path))
    trained = [t for t in study.trials if "edgesweep_repeats" not in t.user_attrs]
    assert [t.state.name for t in trained] == ["COMPLETE", "COMPLETE"]
    assert {t.state.name for t in study.trials if t not in trained} <= {"PRUNED"}  # proposed, never run
    assert repeated_proposals(cfg, tmp_path) == (len(study.trials) - 2, 2)


def test_a_restored_searcher_remembers_what_was_trained(tmp_path):
    """Tune saves the searcher with the sweep; after --resume a trained configuration is not proposed again."""
    cfg, searcher = _two_config_searcher(tmp_path)
    first = searcher.suggest("a")["quantization"]
    _finish(searcher, "a", 0.3)
    searcher.save(str(tmp_path / "searcher.pkl"))
    _, restored = _two_config_searcher(tmp_path)
    restored.restore(str(tmp_path / "searcher.pkl"))
    second = restored.suggest("b")
    assert second is not None and second["quantization"] != first


def test_the_baseline_is_the_first_proposal_when_kd_methods_are_searched(tmp_path):
    """The front always holds the reference, and the first trial trains while the teachers do."""
    cfg = parse_config({"name": "kd", "searcher": {"algorithm": "tpe", "trials": 4},
                        "teachers": {"t": {"model": "s", "epochs": 1}}, "fixed": {"teacher": "t"},
                        "search": {"kd_method": {"choice": ["output", "feature", "none"]},
                                   "kd_factor": {"loguniform": [0.25, 4.0]}}})
    searcher, _, _ = make_searcher(cfg, tmp_path)
    first, second = searcher.suggest("a"), searcher.suggest("b")
    assert first["kd_method"] == "none"
    assert second is not None and second != first
    no_baseline = parse_config({"name": "q", "searcher": {"algorithm": "tpe", "trials": 4},
                                "search": {"quantization": {"choice": ["fp32", "int8"]}}})
    assert baseline_first(no_baseline.search) is None  # nothing to put first: the sampler starts


def _variant_searcher(tmp_path, **searcher):
    cfg = parse_config({"name": "variants", "searcher": {"algorithm": "tpe", "trials": 20, **searcher},
                        "teachers": {"t": {"model": "s"}}, "fixed": {"teacher": "t"},
                        "search": {"kd_method": {"choice": ["none", "output"]},
                                   "kd_factor": {"choice": [0.5, 2.0]},
                                   "quantization": {"choice": ["fp32", "fp16", "int8"]},
                                   "calib_method": {"choice": ["minmax", "entropy"]},
                                   "board_threads": {"choice": [1, 2]}}})
    return cfg, make_searcher(cfg, tmp_path)[0]


def test_a_newly_trained_students_other_exports_are_proposed_next(tmp_path):
    cfg, searcher = _variant_searcher(tmp_path)
    first = searcher.suggest("t0")
    searcher.on_trial_complete("t0", {"trial_complete": True, "map50_95": 0.3, "latency_ms": 1.0,
                                      "student_trained": True})
    trained = {k: first[k] for k in ("kd_method", "kd_factor", "epochs", "seed") if k in first}
    # fp32 and fp16 at 1 and 2 threads, int8 with either calibration at either: 8 exports, one of them run
    variants = [searcher.suggest(f"t{n}") for n in range(1, 8)]
    assert all({k: v[k] for k in trained} == trained for v in variants)
    exports = {(v["quantization"], v["calib_method"] if v["quantization"] == "int8" else None, v["board_threads"])
               for v in [first, *variants]}
    assert len(exports) == 8
    study = optuna.load_study(study_name=cfg.name, storage=study_url(tmp_path))
    assert sum(t.user_attrs.get("edgesweep_variant_of") == "t0" for t in study.trials) == 7


def test_a_reused_student_or_the_switch_off_queues_nothing(tmp_path):
    for switch, trained, name in ((True, False, "reused"), (False, True, "off")):
        (tmp_path / name).mkdir()
        cfg, searcher = _variant_searcher(tmp_path / name, export_variants=switch)
        searcher.suggest("t0")
        searcher.on_trial_complete("t0", {"trial_complete": True, "map50_95": 0.3, "latency_ms": 1.0,
                                          "student_trained": trained})
        for n in range(1, 4):
            searcher.suggest(f"t{n}")
        study = optuna.load_study(study_name=cfg.name, storage=study_url(tmp_path / name))
        assert not [t for t in study.trials if "edgesweep_variant_of" in t.user_attrs]
