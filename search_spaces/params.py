"""What one searched knob ranges over: a finite set (sampled or enumerated) or a numeric range.

Each type knows how Optuna samples it (`suggest`, called on a define-by-run trial) and whether a
value belongs to it (`contains`, used to check configs coming back from Tune or a checkpoint).
The Ray Tune counterparts are built in `space.py`, the only place that imports `ray.tune`.
Constructors raise ValueError on malformed ranges; the config layer checks user input first and
reports it with key paths, so these are a backstop for programmatic use.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Union

if TYPE_CHECKING:
    import optuna

Value = Union[str, int, float, bool, None]  # what Optuna's suggest_categorical accepts


def _typed(value: Value) -> tuple[type, Value]:
    """Identity that tells True from 1 and 1 from 1.0, which == and hash do not."""
    return type(value), value


def _check_values(kind: str, values: tuple) -> None:
    if not values:
        raise ValueError(f"{kind} needs at least one value")
    for value in values:
        if value is not None and not isinstance(value, (str, int, float, bool)):
            raise ValueError(f"{kind} values must be str, int, float, bool or None, got {value!r}")
    seen: set = set()
    for value in values:
        if _typed(value) in seen:
            raise ValueError(f"{kind} lists {value!r} twice")
        seen.add(_typed(value))


def _check_bounds(kind: str, low: float, high: float) -> None:
    for bound in (low, high):
        if isinstance(bound, bool) or not isinstance(bound, (int, float)) or not math.isfinite(bound):
            raise ValueError(f"{kind} bounds must be finite numbers, got [{low!r}, {high!r}]")
    if not low < high:
        raise ValueError(f"{kind} needs low < high, got [{low!r}, {high!r}]")


@dataclass(frozen=True)
class Choice:
    """One of a finite set of values, sampled (categorical for Optuna, `tune.choice` for Tune)."""

    values: tuple[Value, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "values", tuple(self.values))
        _check_values(type(self).__name__, self.values)

    def suggest(self, trial: "optuna.Trial", name: str) -> Value:
        return trial.suggest_categorical(name, self.values)

    def contains(self, value: object) -> bool:
        return any(_typed(value) == _typed(v) for v in self.values)

    def to_dict(self) -> dict:
        return {"choice": list(self.values)}


@dataclass(frozen=True)
class Grid(Choice):
    """Every value of a finite set, enumerated (`tune.grid_search`); a grid searcher's only type."""

    def to_dict(self) -> dict:
        return {"grid": list(self.values)}


@dataclass(frozen=True)
class Uniform:
    """A float drawn uniformly from [low, high]."""

    low: float
    high: float

    def __post_init__(self) -> None:
        _check_bounds("Uniform", self.low, self.high)

    def suggest(self, trial: "optuna.Trial", name: str) -> float:
        return trial.suggest_float(name, self.low, self.high)

    def contains(self, value: object) -> bool:
        return (isinstance(value, (int, float)) and not isinstance(value, bool)
                and self.low <= value <= self.high)

    def to_dict(self) -> dict:
        return {"uniform": [self.low, self.high]}


@dataclass(frozen=True)
class LogUniform(Uniform):
    """A float whose logarithm is uniform on [log low, log high]: for scale-like knobs (factors)."""

    def __post_init__(self) -> None:
        _check_bounds("LogUniform", self.low, self.high)
        if self.low <= 0:
            raise ValueError(f"LogUniform needs low > 0, got {self.low!r}")

    def suggest(self, trial: "optuna.Trial", name: str) -> float:
        return trial.suggest_float(name, self.low, self.high, log=True)

    def to_dict(self) -> dict:
        return {"loguniform": [self.low, self.high]}


@dataclass(frozen=True)
class IntRange:
    """An integer in low, low + step, ..., high (both ends inclusive)."""

    low: int
    high: int
    step: int = 1

    def __post_init__(self) -> None:
        for bound in (self.low, self.high, self.step):
            if isinstance(bound, bool) or not isinstance(bound, int):
                raise ValueError(f"IntRange needs integers, got low={self.low!r} high={self.high!r} "
                                 f"step={self.step!r}")
        _check_bounds("IntRange", self.low, self.high)
        if self.step < 1 or (self.high - self.low) % self.step:
            raise ValueError(f"IntRange needs a step >= 1 that divides high - low, got [{self.low}, {self.high}] "
                             f"step {self.step}")

    @property
    def values(self) -> tuple[int, ...]:
        return tuple(range(self.low, self.high + 1, self.step))

    def suggest(self, trial: "optuna.Trial", name: str) -> int:
        return trial.suggest_int(name, self.low, self.high, step=self.step)

    def contains(self, value: object) -> bool:
        return (isinstance(value, int) and not isinstance(value, bool) and self.low <= value <= self.high
                and (value - self.low) % self.step == 0)

    def to_dict(self) -> dict:
        return {"int": [self.low, self.high], **({"step": self.step} if self.step != 1 else {})}


Param = Union[Choice, Grid, Uniform, LogUniform, IntRange]
