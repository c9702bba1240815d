"""The search algorithms a sweep can name (`searcher.algorithm`), declared without Ray or Optuna.

An algorithm is a factory: `build(SearchSetup) -> TuneSearch`, the search algorithm, param space
and sample count that `tune.Tuner` takes. Optuna samplers are built lazily from the searcher's seed
and trial budget and run through the project's `ParetoOptunaSearch` (objectives, constraints,
SQLite study: `Algorithm.optuna`); random and grid search are Tune's own variant generator; any
other Ray Tune `Searcher` fits the same way. A new algorithm is one `register_algorithm` call.
"""
from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from common.registry import Registry, load
from orchestrator.errors import ConfigError

if TYPE_CHECKING:
    import optuna

    from search_spaces import SearchSpace


@dataclass(frozen=True)
class SearchSetup:
    """What a sweep gives its searcher: the space, the objectives and the budget."""

    name: str  # the sweep's name (an Optuna study's)
    sweep_dir: Path  # where a searcher keeps files of its own (Optuna's SQLite study)
    space: "SearchSpace"  # `.suggest` (define-by-run), `.tune_param_space()`, `.complete(config)`
    metrics: tuple[str, ...]  # the objectives, each reported by every trial
    modes: tuple[str, ...]  # "min" or "max", one per metric
    seed: int
    trials: int  # the trial budget (a grid's size for an enumerating algorithm)
    concurrency: int  # trials running at once
    constraints: Callable[[dict], dict[str, float]]  # a finished trial's result -> {name: value}, feasible when <= 0
    variants: Callable[[dict], list[dict]] | None = None  # a trained student's config -> its other exports to queue
    storage: str | None = None  # an Optuna study's database server (`searcher.storage`); None: SQLite in sweep_dir


class TuneSearch(NamedTuple):
    """What `tune.Tuner` takes from a searcher."""

    search_alg: Any  # a ray.tune.search.Searcher, or Tune's BasicVariantGenerator
    param_space: dict  # Tuner's param_space: {} for a searcher that holds the space itself
    num_samples: int


@dataclass(frozen=True)
class Algorithm:
    name: str
    summary: str
    build: str | Callable[[SearchSetup], TuneSearch]  # "module:function", imported when a sweep starts
    uses_optuna: bool = False  # its searcher keeps an Optuna study in the sweep directory (`Algorithm.optuna`)
    enumerates: bool = False  # a grid: every searched knob is finite and each combination runs once

    def make(self, setup: SearchSetup) -> TuneSearch:
        return load(self.build)(setup)

    @classmethod
    def optuna(cls, name: str, summary: str,
               sampler: Callable[[int, int], "optuna.samplers.BaseSampler"]) -> Algorithm:
        """An Optuna sampler, `sampler(seed, trials)`, run through ParetoOptunaSearch."""
        return cls(name, summary, functools.partial(_optuna_search, sampler), uses_optuna=True)


ALGORITHMS: Registry[Algorithm] = Registry("search algorithm", error=ConfigError)


def register_algorithm(algorithm: Algorithm) -> Algorithm:
    return ALGORITHMS.register(algorithm.name, algorithm)


def _optuna_search(sampler: Callable[[int, int], "optuna.samplers.BaseSampler"], setup: SearchSetup) -> TuneSearch:
    from orchestrator.searcher import optuna_search

    return optuna_search(setup, sampler(setup.seed, setup.trials))


def _startup(trials: int) -> int:
    """Random trials before a model-based sampler takes over: a third of the budget, 2 to 10."""
    return min(10, max(2, trials // 3))


def _tpe(seed: int, trials: int):
    import optuna

    return optuna.samplers.TPESampler(seed=seed, multivariate=True, n_startup_trials=_startup(trials))


def _nsga2(seed: int, trials: int):
    import optuna

    return optuna.samplers.NSGAIISampler(seed=seed, population_size=max(4, min(50, trials // 3)))


def _gp(seed: int, trials: int):
    import optuna

    return optuna.samplers.GPSampler(seed=seed, n_startup_trials=_startup(trials))


for _algorithm in (
    Algorithm.optuna("tpe", "Optuna's multivariate TPE (multi-objective)", _tpe),
    Algorithm.optuna("nsga2", "Optuna's NSGA-II genetic algorithm", _nsga2),
    Algorithm.optuna("gp", "Optuna's Gaussian-process sampler", _gp),
    Algorithm("random", "Ray Tune's random sampling", "orchestrator.searcher:random_search"),
    Algorithm("grid", "every combination of the finite search space, once", "orchestrator.searcher:grid_search",
              enumerates=True),
):
    register_algorithm(_algorithm)
