"""Every registered search algorithm becomes a Tune search algorithm; none is a silent fallback."""
from __future__ import annotations

import optuna
import pytest
from ray.tune.search import BasicVariantGenerator

from orchestrator._ray_internals import live_optuna_trial
from orchestrator.algorithms import ALGORITHMS
from orchestrator.config import parse_config
from orchestrator.errors import ConfigError
from orchestrator.searcher import ParetoOptunaSearch, make_searcher

SAMPLERS = {"tpe": optuna.samplers.TPESampler, "nsga2": optuna.samplers.NSGAIISampler,
            "gp": optuna.samplers.GPSampler}


def config(algorithm: str):
    return parse_config({"name": f"s-{algorithm}", "searcher": {"algorithm": algorithm, "trials": 4},
                         "search": {"quantization": {"grid": ["fp32", "int8"]}, "threads": {"grid": [1, 2]}}})


@pytest.mark.parametrize("algorithm", ALGORITHMS.names())
def test_every_registered_algorithm_constructs_its_tune_searcher(algorithm, tmp_path):
    cfg = config(algorithm)
    searcher, space, samples = make_searcher(cfg, tmp_path)
    entry = ALGORITHMS.get(algorithm)
    if entry.uses_optuna:
        assert isinstance(searcher, ParetoOptunaSearch) and space == {} and samples == 4
        assert type(searcher._sampler) is SAMPLERS[algorithm]  # the named sampler, never a fallback
    else:
        assert isinstance(searcher, BasicVariantGenerator) and set(space) == set(cfg.search.knobs)
        assert samples == (1 if entry.enumerates else 4)


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
    assert isinstance(trial, optuna.Trial) and set(trial.params) == {"quantization", "threads"}
    assert live_optuna_trial(searcher, "never-asked") is None
