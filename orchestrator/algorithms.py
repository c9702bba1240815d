"""The search algorithms a sweep can name (`searcher.algorithm`), declared without Ray or Optuna.

An Optuna algorithm is its sampler, built lazily from the searcher's seed and trial budget and run
through Ray Tune's `OptunaSearch`; the others are Tune's own variant generator, sampling (random)
or enumerating (grid). `orchestrator.searcher` turns an entry into Tune's search algorithm. A new
Optuna sampler is one `register_algorithm` call with a function that builds it.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from common.registry import Registry
from orchestrator.errors import ConfigError

if TYPE_CHECKING:
    import optuna


@dataclass(frozen=True)
class Algorithm:
    name: str
    summary: str
    sampler: Callable[[int, int], "optuna.samplers.BaseSampler"] | None = None  # (seed, trials) -> sampler
    enumerates: bool = False  # a grid: every searched knob is finite and each combination runs once

    @property
    def uses_optuna(self) -> bool:
        return self.sampler is not None


ALGORITHMS: Registry[Algorithm] = Registry("search algorithm", error=ConfigError)


def register_algorithm(algorithm: Algorithm) -> Algorithm:
    return ALGORITHMS.register(algorithm.name, algorithm)


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
    Algorithm("tpe", "Optuna's multivariate TPE (multi-objective)", _tpe),
    Algorithm("nsga2", "Optuna's NSGA-II genetic algorithm", _nsga2),
    Algorithm("gp", "Optuna's Gaussian-process sampler", _gp),
    Algorithm("random", "Ray Tune's random sampling"),
    Algorithm("grid", "every combination of the finite search space, once", enumerates=True),
):
    register_algorithm(_algorithm)
