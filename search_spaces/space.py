"""A sweep's search space: which knobs are searched, which are pinned, and which are conditional.

One declaration serves every searcher:

* Optuna samplers (TPE, NSGA-II, GP) through Ray Tune's `OptunaSearch(space=space.suggest)`:
  `suggest` is a define-by-run function that only calls `trial.suggest_*`, skips conditional knobs
  whose parent makes them meaningless (Optuna models such dynamic spaces natively, so a KD factor
  is never "learned" from trials that had no distillation), and returns the constant knobs.
* Tune's random and grid search through `tune_param_space`. A grid enumerates conditional knobs
  only where they are active, so `kd_method: none` is not repeated once per teacher and factor.

Whatever produced a trial's config, `complete` turns it into one flat dict holding every knob, with
inactive knobs reset to their fixed or default value, so downstream code sees plain values only.
This module performs no I/O; `ray.tune` is imported inside `tune_param_space` only.
"""
from __future__ import annotations

import itertools
import json
import math
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from search_spaces.params import Choice, Grid, IntRange, LogUniform, Param, Uniform, Value

if TYPE_CHECKING:
    import optuna

# Key of a grid branch in `tune_param_space`: Tune resolves a grid over dicts, and the grids nested
# inside each dict, so a parent's value carries only the child knobs active under it.
BRANCH_PREFIX = "_branch_"


@dataclass(frozen=True)
class ActiveWhen:
    """A conditional knob: it matters only while `parent` takes one of `values` (with `unless`: none of them,
    as a pruning method matters unless the pruning ratio is 0)."""

    parent: str
    values: tuple[Value, ...]
    unless: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "values", tuple(self.values))

    def holds(self, parent: object) -> bool:
        """Whether the knob is active while its parent has the value `parent`."""
        return any(type(parent) is type(v) and parent == v for v in self.values) != self.unless

    def describe(self, quote: str = "", *, one_of: str = "one of ") -> str:
        """In words, e.g. "kd_method is one of output, cwd", "prune_ratio is not 0.0"."""
        values = ", ".join(f"{quote}{v}{quote}" for v in self.values)
        return f"{quote}{self.parent}{quote} is {'not ' if self.unless else one_of}{values}"


def _plain(value: object) -> object:
    """numpy scalars (Tune samples some) as the Python value they hold."""
    item = getattr(value, "item", None)
    return item() if type(value).__module__ == "numpy" and callable(item) else value


@dataclass(frozen=True)
class SearchSpace:
    """Searched knobs (`params`), pinned knobs (`fixed`) and every knob's fallback (`defaults`).

    `defaults` names every knob, in the order trials report them; a knob that is neither searched
    nor fixed takes its default, and so does a conditional knob while it is inactive.
    """

    params: dict[str, Param]
    fixed: dict[str, object] = field(default_factory=dict)
    defaults: dict[str, object] = field(default_factory=dict)
    conditions: dict[str, ActiveWhen] = field(default_factory=dict)
    # old knob name -> new one: configs sampled before a rename (a resumed sweep's trials) still complete
    renamed: tuple[tuple[str, str], ...] = ()  # a class default: a space pickled before the field had none

    def __post_init__(self) -> None:
        if not self.params:
            raise ValueError("a search space needs at least one searched knob")
        knobs = set(self.defaults)
        for group, names in (("params", self.params), ("fixed", self.fixed), ("conditions", self.conditions)):
            unknown = sorted(set(names) - knobs)
            if unknown:
                raise ValueError(f"{group} name knobs without a default: {', '.join(unknown)}")
        both = sorted(set(self.params) & set(self.fixed))
        if both:
            raise ValueError(f"knobs both searched and fixed: {', '.join(both)}")
        for child, cond in self.conditions.items():
            if cond.parent not in knobs or cond.parent == child:
                raise ValueError(f"condition of {child!r} names an unknown parent {cond.parent!r}")
            if cond.parent in self.conditions:
                raise ValueError(f"condition of {child!r}: its parent {cond.parent!r} is conditional itself; "
                                 f"only one level of conditions is supported")

    # ---- structure -------------------------------------------------------------------------

    @property
    def knobs(self) -> tuple[str, ...]:
        return tuple(self.defaults)

    def base_value(self, knob: str) -> object:
        """The value of a knob that is not sampled: fixed if pinned, else its default."""
        return self.fixed[knob] if knob in self.fixed else self.defaults[knob]

    def possible_values(self, knob: str) -> tuple:
        """Every value a knob can take in this space (the bounds, for numeric ranges)."""
        if knob not in self.params:
            return (self.base_value(knob),)
        param = self.params[knob]
        if isinstance(param, Choice):
            return param.values
        return param.low, param.high

    def is_active(self, knob: str, values: Mapping[str, object]) -> bool:
        """Whether `knob` matters given the parent values in `values` (unconditional: always)."""
        cond = self.conditions.get(knob)
        if cond is None:
            return True
        parent = values[cond.parent] if cond.parent in values else self.base_value(cond.parent)
        return cond.holds(parent)

    def _children(self, parent: str) -> list[str]:
        return [k for k in self.knobs if k in self.params and k in self.conditions
                and self.conditions[k].parent == parent]

    # ---- Optuna (define-by-run) ----------------------------------------------------------------

    def suggest(self, trial: "optuna.Trial") -> dict | None:
        """Define-by-run space for `OptunaSearch(space=...)`: samples the active knobs through
        `trial.suggest_*` and returns every other knob as a constant (None when there is none).

        Ray 2.60 merges the values it captured from `suggest_*` with the returned constants into the
        trial config, which is then already complete.
        """
        sampled: dict[str, object] = {}
        for knob in self._sampling_order():
            if self.is_active(knob, sampled):
                sampled[knob] = self.params[knob].suggest(trial, knob)
        constants = {k: v for k, v in self.complete(sampled).items() if k not in sampled}
        return constants or None

    def _sampling_order(self) -> list[str]:
        """Parents before the knobs that depend on them."""
        searched = [k for k in self.knobs if k in self.params]
        return [k for k in searched if k not in self.conditions] + [k for k in searched if k in self.conditions]

    # ---- completing a trial's config ------------------------------------------------------------

    def complete(self, sampled: Mapping[str, object]) -> dict:
        """Every knob, in order: sampled values where active, fixed or default values elsewhere.

        Accepts what any searcher produced: Optuna's flat params, Tune random samples (inactive
        knobs are sampled there too and get reset here) and Tune grid configs (with branch keys).
        Raises ValueError for unknown knobs, missing active knobs and values outside the space.
        """
        flat: dict[str, object] = {}
        for key, value in sampled.items():
            if key.startswith(BRANCH_PREFIX) and isinstance(value, Mapping):
                flat.update(value)
            else:
                flat[key] = value
        flat = {dict(self.renamed).get(k, k): v for k, v in flat.items()}
        unknown = sorted(set(flat) - set(self.knobs))
        if unknown:
            raise ValueError(f"not knobs of this space: {', '.join(unknown)}; knobs: {', '.join(self.knobs)}")
        flat = {k: _plain(v) for k, v in flat.items()}
        values: dict[str, object] = {}
        for knob in self.knobs:  # unconditional knobs first: they decide which conditional ones are active
            if knob not in self.conditions:
                values[knob] = self._value(knob, flat, active=True)
        for knob in self.knobs:
            if knob in self.conditions:
                values[knob] = self._value(knob, flat, active=self.is_active(knob, values))
        return {k: values[k] for k in self.knobs}

    def _value(self, knob: str, flat: Mapping[str, object], *, active: bool) -> object:
        if knob not in self.params:
            base = self.base_value(knob)
            if knob in flat and not (type(flat[knob]) is type(base) and flat[knob] == base):
                raise ValueError(f"{knob} is not searched (its value is {base!r}), got {flat[knob]!r}")
            return base
        if not active:
            return self.defaults[knob]
        if knob not in flat:
            raise ValueError(f"the sampled config lacks the searched knob {knob}")
        value = flat[knob]
        if isinstance(self.params[knob], (Uniform, LogUniform)) and isinstance(value, int) \
                and not isinstance(value, bool):
            value = float(value)
        if not self.params[knob].contains(value):
            raise ValueError(f"{knob}={value!r} is outside its search space {self.params[knob].to_dict()}")
        return value

    # ---- Ray Tune random and grid search --------------------------------------------------------

    def tune_param_space(self) -> dict:
        """`param_space` for `tune.Tuner`: Choice -> tune.choice, Uniform -> tune.uniform,
        LogUniform -> tune.loguniform, IntRange -> tune.randint (tune.choice with a step),
        Grid -> tune.grid_search; constant knobs as plain values.

        A Grid parent of searched conditional knobs becomes one grid over dicts under
        `BRANCH_PREFIX + parent`, each holding the parent's value and the grids of the knobs active
        under it. Pass the resolved config through `complete` to get the flat knob dict.
        """
        from ray import tune  # noqa: PLC0415 - the rest of this package must not need Ray

        def domain(param: Param) -> object:
            if isinstance(param, Grid):
                return tune.grid_search(list(param.values))
            if isinstance(param, Choice):
                return tune.choice(list(param.values))
            if isinstance(param, LogUniform):
                return tune.loguniform(param.low, param.high)
            if isinstance(param, Uniform):
                return tune.uniform(param.low, param.high)
            if isinstance(param, IntRange):
                return tune.randint(param.low, param.high + 1) if param.step == 1 else tune.choice(list(param.values))
            raise TypeError(f"unknown parameter type {type(param).__name__}")

        branched = {p for p in {c.parent for c in self.conditions.values()}
                    if isinstance(self.params.get(p), Grid) and self._children(p)}
        space: dict[str, object] = {}
        for knob in self.knobs:
            cond = self.conditions.get(knob)
            if knob in branched:
                branches = []
                for value in self.params[knob].values:
                    active = [c for c in self._children(knob) if self.is_active(c, {knob: value})]
                    branches.append({knob: value, **{c: domain(self.params[c]) for c in active}})
                space[BRANCH_PREFIX + knob] = tune.grid_search(branches)
            elif cond is not None and cond.parent in branched and knob in self.params:
                continue  # lives inside its parent's branches
            elif knob in self.params and (cond is None or cond.parent in self.params or self.is_active(knob, {})):
                space[knob] = domain(self.params[knob])
            else:
                space[knob] = self.base_value(knob)  # constant, or searched but never active
        return space

    # ---- grids ------------------------------------------------------------------------------

    def grid_size(self) -> int | None:
        """Number of distinct trials of an exhaustive grid, or None when a knob is not a Grid.

        Conditional knobs multiply only the branches where they are active."""
        if not all(isinstance(p, Grid) for p in self.params.values()):
            return None
        size = 1
        parents = {self.conditions[c].parent for c in self.params if c in self.conditions}
        for knob in self.knobs:
            if knob in self.params and knob not in self.conditions and knob not in parents:
                size *= len(self.params[knob].values)
        for parent in parents:
            options = self.params[parent].values if parent in self.params else (self.base_value(parent),)
            size *= sum(math.prod(len(self.params[c].values) for c in self._children(parent)
                                  if self.is_active(c, {parent: v})) for v in options)
        return size

    def grid_points(self) -> Iterator[dict]:
        """The complete knob dict of every grid trial, each exactly once (see `grid_size`)."""
        if self.grid_size() is None:
            raise ValueError("grid_points needs every searched knob to be a Grid")
        top = [k for k in self._sampling_order() if k not in self.conditions]
        for combo in itertools.product(*(self.params[k].values for k in top)):
            base = dict(zip(top, combo))
            active = [k for k in self._sampling_order() if k in self.conditions and self.is_active(k, base)]
            for sub in itertools.product(*(self.params[k].values for k in active)):
                yield self.complete({**base, **dict(zip(active, sub))})

    def sampled(self, config: Mapping[str, object]) -> dict:
        """The searched knobs of a complete config that are active in it: what a searcher sampled."""
        return {k: config[k] for k in self._sampling_order() if k in config and self.is_active(k, config)}

    def variants(self, config: Mapping[str, object], knobs: Iterable[str]) -> list[dict]:
        """The other points of the space that differ from `config` only in `knobs` (each searched
        with a finite set of values), as sampled knobs: e.g. every other export of one student."""
        varied = [k for k in self._sampling_order() if k in set(knobs) and hasattr(self.params[k], "values")]
        base = {k: v for k, v in self.sampled(config).items() if k not in varied}
        seen, out = {json.dumps(self.sampled(config), sort_keys=True, default=str)}, []
        for combo in itertools.product(*(self.params[k].values for k in varied)):
            point = {**base, **dict(zip(varied, combo))}
            point = {k: v for k, v in point.items() if self.is_active(k, point)}
            key = json.dumps(point, sort_keys=True, default=str)
            if key not in seen:
                seen.add(key)
                out.append(point)
        return out

    def to_dict(self) -> dict:
        """The `search:` and `fixed:` sections as plain values."""
        return {"search": {k: p.to_dict() for k, p in self.params.items()}, "fixed": dict(self.fixed)}
