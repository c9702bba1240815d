"""The trial knobs of a sweep file and the `search:` / `fixed:` sections that range over them.

No knob is declared here: the stages declare theirs (`trainables.hyper.TrainKnobs`,
`trainables.export.ExportKnobs`, `device_actors.runtimes.BoardKnobs`) and every registered KD
method its own, all without torch. This module collects them into one table per parse, checks
values against the declarations with key paths in every message, and turns the two sections into
a `search_spaces.SearchSpace` with the knobs' conditions (a KD factor matters only when distilling).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import logging

import yaml
from pydantic import Field, TypeAdapter

from common.knobs import Knob, Noun, declared_knobs
from device_actors.runtimes import BoardKnobs
from orchestrator import _schema as s
from orchestrator.errors import ConfigError
from search_spaces import ActiveWhen, Choice, Grid, IntRange, LogUniform, Param, SearchSpace, Uniform
from trainables.export.registry import (FORMAT_KNOBS, FORMATS, SHAPE_KNOBS, ArtifactShape, ExportError, ExportKnobs,
                                        format_for)
from trainables.hyper import DISTILLATION_KNOBS, PRUNING_KNOBS, SCRATCH, TrainKnobs, is_user_model
from trainables.kd.registry import KD_METHODS, distilling_methods, kd_method

log = logging.getLogger(__name__)

DISTRIBUTIONS = ("choice", "grid", "uniform", "loguniform", "int")
CALIBRATION_KNOBS = ("calib_method", "calib_images")  # read only by the formats that calibrate (static int8)
QUANTIZATION_KNOBS = {"qat_epochs": "qat", "max_map_drop": "int8-mixed"}  # read by one quantization only
FINITE = ("choice", "grid")
STEP = Annotated[int, Field(ge=1)]  # the step of an int distribution
_STEP = TypeAdapter(STEP)
# Knobs that had another name: a sweep file (or a sweep saved) with the old one still reads, with a warning.
RENAMED = {"threads": "board_threads"}


def knob_table() -> dict[str, Knob]:
    """Every trial knob in the order trials report them: train, the KD methods' own, export, board."""
    table: dict[str, Knob] = {}
    method_knobs = [k for m in KD_METHODS.values() for k in m.knobs]
    for knob in (*declared_knobs(TrainKnobs), *method_knobs, *declared_knobs(ExportKnobs),
                 *declared_knobs(BoardKnobs)):
        table.setdefault(knob.name, knob)
    return table


def knob_conditions() -> dict[str, ActiveWhen]:
    """Knobs that only some KD methods read; a define-by-run space does not sample them otherwise."""
    conditions = {k: ActiveWhen("kd_method", distilling_methods()) for k in DISTILLATION_KNOBS}
    calibrated = tuple(dict.fromkeys(f.quantization for f in FORMATS.values() if f.needs_calibration))
    conditions.update({k: ActiveWhen("quantization", calibrated) for k in CALIBRATION_KNOBS})
    for knob in FORMAT_KNOBS:  # read only by the formats that declare its values (int8: granularity, io)
        readers = tuple(dict.fromkeys(f.quantization for f in FORMATS.values() if f.accepted(knob)))
        conditions[knob] = ActiveWhen("quantization", readers)
    conditions["outputs"] = ActiveWhen("decode", (ArtifactShape.decode,))  # a host decode has raw outputs
    conditions.update({k: ActiveWhen("quantization", (q,)) for k, q in QUANTIZATION_KNOBS.items()})
    conditions.update({k: ActiveWhen("prune_ratio", (0.0,), unless=True) for k in PRUNING_KNOBS})
    for method in KD_METHODS.values():
        for knob in method.knobs:
            readers = tuple(m.name for m in KD_METHODS.values() if knob in m.knobs)
            conditions[knob.name] = ActiveWhen("kd_method", readers)
    return conditions


@dataclass(frozen=True)
class KnobContext:
    """What checks need besides a value: the knob table, where relative paths start, which teachers exist."""

    base_dir: Path
    teachers: tuple[str, ...]
    knobs: dict[str, Knob] = field(default_factory=knob_table)


def distributions(knob: Knob) -> tuple[str, ...]:
    """The `search:` distributions a knob's type allows."""
    if knob.allowed_values() is None and knob.kind is float:
        return ("choice", "grid", "uniform", "loguniform")
    if knob.allowed_values() is None and knob.kind is int:
        return ("choice", "grid", "int")
    return FINITE


def _init(value, path, ctx):
    if value == SCRATCH:
        return value
    if not isinstance(value, str):
        raise ConfigError(f"{path}: must be 'scratch' or a checkpoint path, {s.got(value)}")
    return str(s.existing_path(value, path, ctx.base_dir, kind="file"))


def _teacher(value, path, ctx):
    if not ctx.teachers:
        raise ConfigError(f"{path}: {value!r} is not a teacher: no teachers are defined; add a `teachers:` "
                          f"section, e.g. teachers: {{s: {{model: s, epochs: 30}}}}")
    return s.one_of(value, path, ctx.teachers, "a teacher (a key of teachers:)")


# Knobs whose allowed values depend on the sweep file itself (its directory, its teachers).
_IN_CONTEXT: dict[str, Callable[[object, str, KnobContext], object]] = {"student_init": _init, "teacher": _teacher}


def value_type(knob: Knob) -> Any:
    """A knob's declaration as a type pydantic checks, as it checks the file's sections (its allowed
    values are read now: a registry may have grown since the last time)."""
    values = knob.allowed_values()
    if values is not None:
        return Annotated[Literal[values], Noun(knob.noun or f"a {knob.name}")]
    if knob.kind is str:
        return Annotated[str, Field(min_length=1)]
    bounds = {"ge": knob.minimum, "gt": knob.above, "le": knob.maximum, "lt": knob.below,
              "multiple_of": knob.multiple_of if knob.multiple_of > 1 else None}
    return Annotated[knob.kind, Field(allow_inf_nan=False, **{k: v for k, v in bounds.items() if v is not None})]


def _declared(knob: Knob, value: object, path: str) -> object:
    """A value checked against its knob's declaration."""
    kind = value_type(knob)
    return s.validate(kind, value, path=path, checker=TypeAdapter(kind))


def check_knob(name: str, value: object, path: str, ctx: KnobContext) -> object:
    """`value` for knob `name` as checked (paths made absolute), or a ConfigError naming `path`."""
    if name in _IN_CONTEXT:
        return _IN_CONTEXT[name](value, path, ctx)
    return _declared(ctx.knobs[name], value, path)


def check_flag(name: str, value: object, flag: str) -> object:
    """A CLI flag's value for trial knob `name`, checked as the sweep file's (a ConfigError names `flag`)."""
    return _declared(knob_table()[name], value, flag)


def parse_kd_params(method: str, pairs: Sequence[str]) -> dict[str, object]:
    """`train --kd-param KNOB=VALUE` pairs as the method's own knob values, read as YAML values
    (`fm_nms=false`, `cwd_tau=2`) and checked like the sweep file's."""
    own = {k.name: k for k in kd_method(method).knobs}
    values = {}
    for pair in pairs:
        name, sep, text = pair.partition("=")
        where = f"--kd-param {name}"
        if not sep:
            raise ConfigError(f"--kd-param {pair!r}: expected KNOB=VALUE, e.g. fm_nms=false")
        if name not in own:
            raise ConfigError(f"{where}: KD method {method!r} has no such knob; its knobs: {', '.join(own) or 'none'}")
        values[name] = _declared(own[name], yaml.safe_load(text), where)
    return values


def _values(knob: Knob, raw: object, path: str, ctx: KnobContext) -> tuple:
    if not isinstance(raw, list) or not raw:
        raise ConfigError(f"{path}: must be a non-empty list of {knob.name} values ({knob.allowed()}), {s.got(raw)}")
    values = tuple(check_knob(knob.name, v, s.child(path, i), ctx) for i, v in enumerate(raw))
    for i, v in enumerate(values):
        if v in values[:i]:
            raise ConfigError(f"{s.child(path, i)}: {raw[i]!r} is listed twice")
    return values


def _bounds(knob: Knob, raw: object, path: str, ctx: KnobContext) -> tuple:
    if not isinstance(raw, list) or len(raw) != 2:
        raise ConfigError(f"{path}: must be [low, high], {s.got(raw)}")
    low, high = (check_knob(knob.name, v, s.child(path, i), ctx) for i, v in enumerate(raw))
    if not low < high:
        raise ConfigError(f"{path}: needs low < high, got [{raw[0]!r}, {raw[1]!r}]")
    return low, high


def parse_param(knob_name: str, raw: object, path: str, ctx: KnobContext) -> Param:
    """One `search:` entry, e.g. {loguniform: [0.1, 10]}, checked against the knob's type and range."""
    knob = ctx.knobs[knob_name]
    allowed = distributions(knob)
    example = {"loguniform": "{loguniform: [0.1, 10]}", "int": "{int: [5, 20]}"}.get(allowed[-1], "{choice: [a, b]}")
    if not isinstance(raw, dict) or not raw:
        raise ConfigError(f"{path}: must be a mapping with one of {', '.join(allowed)} (e.g. {example}), "
                          f"{s.got(raw)}")
    kinds = [k for k in raw if k in DISTRIBUTIONS]
    extra = [k for k in raw if k not in DISTRIBUTIONS and not (k == "step" and kinds == ["int"])]
    if extra:
        k = extra[0]
        hint = "step is only allowed with int" if k == "step" else "unknown key"
        raise ConfigError(f"{s.child(path, str(k))}: {hint}; allowed keys: {', '.join(allowed)}"
                          f"{', step' if 'int' in allowed else ''}")
    if len(kinds) != 1:
        raise ConfigError(f"{path}: give exactly one of {', '.join(allowed)}, got {', '.join(kinds)}")
    kind = kinds[0]
    where = s.child(path, kind)
    if kind not in allowed:
        raise ConfigError(f"{where}: not allowed for {knob_name} ({knob.kind.__name__} values: {knob.allowed()}); "
                          f"allowed: {', '.join(allowed)}")
    if kind in FINITE:
        values = _values(knob, raw[kind], where, ctx)
        return Grid(values) if kind == "grid" else Choice(values)
    low, high = _bounds(knob, raw[kind], where, ctx)
    if kind == "uniform":
        return Uniform(low, high)
    if kind == "loguniform":
        return LogUniform(low, high)
    step = s.validate(STEP, raw.get("step", knob.multiple_of), path=s.child(path, "step"), checker=_STEP)
    if step % knob.multiple_of:
        raise ConfigError(f"{s.child(path, 'step')}: must be a multiple of {knob.multiple_of} so that every "
                          f"{knob_name} is, got {step}")
    if (high - low) % step:
        raise ConfigError(f"{where}: high - low must be a multiple of the step {step}, got [{low}, {high}]")
    return IntRange(low, high, step)


def parse_space(search_raw: object, fixed_raw: object, defaults: dict, ctx: KnobContext, *,
                grid: bool) -> SearchSpace:
    """The `search:` and `fixed:` sections as a SearchSpace over every knob.

    With `grid`, every searched knob must be finite and becomes a Grid; otherwise `grid:` entries
    are sampled like `choice:` (both are finite sets), so one file can switch searchers."""
    names = list(ctx.knobs)
    search_raw = s.allowed_keys(_renamed(search_raw, "search"), "search", names)
    fixed_raw = s.allowed_keys(_renamed(fixed_raw, "fixed"), "fixed", names)
    both = [k for k in names if k in search_raw and k in fixed_raw]
    if both:
        raise ConfigError(f"fixed.{both[0]}: also in search; a knob is either searched or fixed, not both")
    if not search_raw:
        raise ConfigError(f"search: nothing to search; give at least one knob a distribution "
                          f"(e.g. kd_method: {{choice: [none, output]}}); allowed knobs: {', '.join(names)}")
    params: dict[str, Param] = {}
    for knob, raw in search_raw.items():
        param = parse_param(knob, raw, s.child("search", knob), ctx)
        if grid and not isinstance(param, Choice):
            kind = next(iter(raw))
            raise ConfigError(f"search.{knob}.{kind}: the grid searcher enumerates finite sets only; "
                              f"allowed: grid, choice (or pick searcher.algorithm tpe, nsga2, gp or random)")
        if isinstance(param, Choice):
            param = Grid(param.values) if grid else Choice(param.values)
        params[knob] = param
    fixed = {k: check_knob(k, v, s.child("fixed", k), ctx) for k, v in fixed_raw.items()}
    space = SearchSpace(params=params, fixed=fixed, defaults=defaults, conditions=knob_conditions(),
                        renamed=tuple(RENAMED.items()))
    _check_consistency(space, ctx)
    return space


def _renamed(section: object, path: str) -> object:
    """A section with every old knob name replaced by its new one (a warning names both)."""
    if not isinstance(section, dict) or not set(section) & set(RENAMED):
        return section
    out = {}
    for key, value in section.items():
        new = RENAMED.get(key, key)
        if new != key:
            if new in section:
                raise ConfigError(f"{path}.{key}: renamed {new}, which is there too; keep {path}.{new} only")
            log.warning("%s.%s is now called %s: read as %s.%s (rename it in the file)", path, key, new, path, new)
        out[new] = value
    return out


def where(space: SearchSpace, knob: str) -> str:
    """The key path a knob's values come from: search.X, fixed.X or its default."""
    if knob in space.params:
        return f"search.{knob}"
    return f"fixed.{knob}" if knob in space.fixed else f"{knob} (default)"


def _check_user_model_shape(space: SearchSpace) -> None:
    """A user's .onnx detector is exported as it is: its decode in its graph, one output, NCHW input."""
    if not any(is_user_model(v) for v in space.possible_values("student_init")):
        return
    for knob in ("decode", "outputs", "int8_io"):
        others = [v for v in space.possible_values(knob) if v != space.defaults[knob]]
        if others:
            raise ConfigError(f"{where(space, knob)}: an .onnx student_init is exported as it is, so {knob} can only be "
                              f"{space.defaults[knob]!r} (the space has {others[0]!r})")


def _check_qat_length(space: SearchSpace) -> None:
    """qat_epochs 0 means the trial's epochs, which a quantization-only sweep (epochs 0) does not have."""
    if ("qat" in space.possible_values("quantization") and 0 in space.possible_values("qat_epochs")
            and 0 in space.possible_values("epochs")):
        raise ConfigError(f"{where(space, 'qat_epochs')}: 0 (as many as the trial's epochs) but "
                          f"{where(space, 'epochs')} can be 0 while quantization can be 'qat'; set qat_epochs >= 1")


def _check_consistency(space: SearchSpace, ctx: KnobContext) -> None:
    """Checks across knobs: conditional knobs can be active, KD has a teacher, KD stays on a while,
    every runtime the space can pick has a format for every quantization it can pick."""
    methods = space.possible_values("kd_method")
    # an NPU knob fixed to other than its default where it is never read: per-tensor with fp32 only
    npu_fixed = [k for k in space.fixed if k in SHAPE_KNOBS and space.fixed[k] != space.defaults[k]]
    npu_fixed += [k for k in space.fixed if k in QUANTIZATION_KNOBS]  # fixed at all: only valid with their quantization
    pruning_fixed = [k for k in space.fixed if k in PRUNING_KNOBS]  # a pruning method without pruning
    for knob in (*space.params, *npu_fixed, *pruning_fixed):
        cond = space.conditions.get(knob)
        parents = space.possible_values(cond.parent) if cond is not None else ()
        if cond is not None and not any(space.is_active(knob, {cond.parent: v}) for v in parents):
            raise ConfigError(f"{where(space, knob)}: only used when {cond.describe()}, "
                              f"but {cond.parent} is always {' or '.join(map(repr, parents))}; "
                              f"search {cond.parent} or drop {where(space, knob)}")
    for runtime in space.possible_values("runtime"):
        for quantization in space.possible_values("quantization"):
            try:
                fmt = format_for(runtime, quantization)
            except ExportError as e:
                raise ConfigError(f"{where(space, 'quantization')}: {e} (the runtime can be {runtime!r} while the "
                                  f"quantization can be {quantization!r})") from None
            for knob in FORMAT_KNOBS:
                accepted = fmt.accepted(knob)
                refused = [v for v in space.possible_values(knob) if v not in accepted]
                if accepted and refused:
                    raise ConfigError(f"{where(space, knob)}: {fmt.name} takes {knob} {', '.join(accepted)} only, but "
                                      f"{knob} can be {refused[0]!r} while runtime can be {runtime}; search {knob} "
                                      f"with a runtime whose {quantization} format takes it")
    _check_user_model_shape(space)
    _check_qat_length(space)
    distills = [m for m in methods if m in distilling_methods()]
    if not distills:
        return
    if space.base_value("teacher") is None and "teacher" not in space.params:
        if not ctx.teachers:
            raise ConfigError(f"teachers: kd_method can be {distills[0]!r} but no teacher is defined; add e.g. "
                              f"teachers: {{s: {{model: s, epochs: 30}}}}")
        raise ConfigError(f"fixed.teacher: required when several teachers are defined ({', '.join(ctx.teachers)}) "
                          f"and kd_method can be {distills[0]!r}; set fixed.teacher or search.teacher to some of "
                          f"them")
    longest_off = max(space.possible_values("kd_off_last_epochs"))
    shortest = min(space.possible_values("epochs"))
    if longest_off >= shortest:
        raise ConfigError(f"{where(space, 'kd_off_last_epochs')}: must be < epochs (else distillation is off for "
                          f"the whole run); kd_off_last_epochs can be {longest_off} while "
                          f"{where(space, 'epochs')} can be {shortest}")
