"""What every search algorithm (`orchestrator.algorithms.Algorithm`) promises.

Subclass `SearcherConformance` with an `algorithm` fixture that gives a registered algorithm's name.
Each test builds the algorithm's searcher for a small finite space (2 x 2 knobs, 4 trials) as a
sweep would (`make_searcher`) and checks one promise: it is a Ray Tune search algorithm with the
sweep's budget (a grid's: one pass), every proposal is a configuration of the space, the same seed
proposes the same configurations, and it keeps an Optuna study in the sweep directory exactly when
it says it does (`uses_optuna`). A Tune `Searcher` is driven through `suggest`/`on_trial_complete`;
Tune's variant generator through the variants of its param space.
"""
from __future__ import annotations

from pathlib import Path

import pytest
from ray.tune.search import SearchAlgorithm, Searcher
from ray.tune.search.variant_generator import generate_variants

from orchestrator.algorithms import ALGORITHMS, TuneSearch
from orchestrator.config import parse_config
from orchestrator.searcher import STUDY_DB, make_searcher

TRIALS = 4  # the 2 x 2 space's size, so a grid fits it exactly


def space_config(algorithm: str):
    return parse_config({"name": f"conformance-{algorithm}", "searcher": {"algorithm": algorithm, "trials": TRIALS},
                         "search": {"quantization": {"choice": ["fp32", "int8"]}, "epochs": {"choice": [1, 2]}}})


def proposals(search: TuneSearch, metrics: list[str], count: int) -> list[dict]:
    """Up to `count` configurations the searcher proposes, each told a finished result before the next."""
    algorithm = search.search_alg
    if not isinstance(algorithm, Searcher):  # Tune's variant generator: its param space's variants
        variants = [config for _ in range(search.num_samples)
                    for _, config in generate_variants(search.param_space, random_state=0)]
        return variants[:count]
    if search.param_space:
        algorithm.set_search_properties(None, None, search.param_space)
    out: list[dict] = []
    for n in range(count):
        config = algorithm.suggest(f"t{n}")
        if config is None or config == Searcher.FINISHED:
            break
        out.append(config)
        algorithm.on_trial_complete(f"t{n}", {"trial_complete": True, **{m: 0.1 * (n + 1) for m in metrics}})
    return out


class SearcherConformance:
    @pytest.fixture
    def cfg(self, algorithm):
        return space_config(algorithm)

    def _propose(self, cfg, sweep_dir: Path) -> list[dict]:
        sweep_dir.mkdir(parents=True, exist_ok=True)
        return proposals(make_searcher(cfg, sweep_dir), [o.metric for o in cfg.objectives], TRIALS)

    def test_it_builds_a_tune_search_algorithm_with_the_sweeps_budget(self, algorithm, cfg, tmp_path):
        search = make_searcher(cfg, tmp_path)
        assert isinstance(search.search_alg, (Searcher, SearchAlgorithm))
        assert search.num_samples == (1 if ALGORITHMS.get(algorithm).enumerates else TRIALS)
        assert search.param_space == {} or set(search.param_space) == set(cfg.search.tune_param_space())

    def test_every_proposal_is_a_configuration_of_the_space(self, algorithm, cfg, tmp_path):
        proposed = self._propose(cfg, tmp_path)
        assert proposed, f"{algorithm} proposed nothing"
        complete = [cfg.search.complete(config) for config in proposed]  # raises for a value outside the space
        if ALGORITHMS.get(algorithm).enumerates:
            assert sorted(map(str, complete)) == sorted(map(str, cfg.search.grid_points()))

    def test_the_same_seed_proposes_the_same_configurations(self, cfg, tmp_path):
        assert self._propose(cfg, tmp_path / "a") == self._propose(cfg, tmp_path / "b")

    def test_it_keeps_an_optuna_study_in_the_sweep_directory_exactly_when_it_says_so(self, algorithm, cfg, tmp_path):
        self._propose(cfg, tmp_path)
        assert (tmp_path / STUDY_DB).exists() == ALGORITHMS.get(algorithm).uses_optuna
