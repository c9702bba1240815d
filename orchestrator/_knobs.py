"""The trial knobs: their types and allowed values, and the `search:` / `fixed:` sections that range
over them (turned into a `search_spaces.SearchSpace`).

The allowed names are kept here rather than imported from `trainables` so that validating a config
never imports torch; tests/orchestrator/test_config.py checks they equal trainables' and
device_actors' own lists.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from orchestrator import _schema as s
from orchestrator.errors import ConfigError
from search_spaces import ActiveWhen, Choice, Grid, IntRange, LogUniform, Param, SearchSpace, Uniform

KD_METHODS = ("none", "output", "feature", "cwd", "pkd")  # trainables.kd.KD_METHODS
MODEL_SIZES = ("n", "s", "m", "l", "x")  # trainables.models.yolo.SIZES
RUNTIMES = ("onnxruntime", "tflite")  # device_actors.runtimes.RUNTIMES
QUANTIZATIONS = ("fp32", "fp16", "dynamic", "int8")
_FORMAT_PREFIX = {"onnxruntime": "onnx", "tflite": "tflite"}
SCRATCH = "scratch"
MAX_STRIDE = 32  # img_size must be a multiple of the largest detection stride

DISTRIBUTIONS = ("choice", "grid", "uniform", "loguniform", "int")
FINITE = ("choice", "grid")


def export_format(runtime: str, quantization: str) -> str:
    """Export format name of a (runtime, quantization) pair: onnxruntime + int8 -> onnx-int8."""
    if runtime not in _FORMAT_PREFIX or quantization not in QUANTIZATIONS:
        raise ValueError(f"no export format for runtime {runtime!r} and quantization {quantization!r}; runtimes: "
                         f"{', '.join(RUNTIMES)}; quantizations: {', '.join(QUANTIZATIONS)}")
    prefix = _FORMAT_PREFIX[runtime]
    return prefix if quantization == "fp32" else f"{prefix}-{quantization}"


@dataclass(frozen=True)
class KnobContext:
    """What some knob checks need besides the value: where relative paths start, which teachers exist."""

    base_dir: Path
    teachers: tuple[str, ...]


Check = Callable[[object, str, KnobContext], object]  # (value, key path, context) -> checked value


@dataclass(frozen=True)
class Knob:
    name: str
    kind: type  # str, bool, int or float: the YAML type of every value
    allowed: str  # in words, for messages and the reference
    stage: str  # "train", "export" or "board": which step of a trial reads it
    check: Check
    default: object  # when neither searched nor fixed (student, student_init, teacher, seed: see config.py)
    multiple_of: int = 1  # int ranges: the step must keep values on this grid

    @property
    def distributions(self) -> tuple[str, ...]:
        if self.kind is float:
            return ("choice", "grid", "uniform", "loguniform")
        if self.kind is int:
            return ("choice", "grid", "int")
        return FINITE


def _size(value, path, ctx):
    return s.one_of(value, path, MODEL_SIZES, "a model size")


def _init(value, path, ctx):
    if value == SCRATCH:
        return value
    if not isinstance(value, str):
        raise ConfigError(f"{path}: must be 'scratch' or a checkpoint path, {s.got(value)}")
    return str(s.existing_path(value, path, ctx.base_dir, kind="file"))


def _bool(value, path, ctx):
    return s.boolean(value, path)


def _positive_int(value, path, ctx):
    return s.integer(value, path, minimum=1)


def _non_negative_int(value, path, ctx):
    return s.integer(value, path, minimum=0)


def _img_size(value, path, ctx):
    if isinstance(value, bool) or not isinstance(value, int) or value < MAX_STRIDE or value % MAX_STRIDE:
        raise ConfigError(f"{path}: must be a multiple of {MAX_STRIDE} that is >= {MAX_STRIDE} (the largest "
                          f"stride), {s.got(value)}")
    return value


def _kd_method(value, path, ctx):
    return s.one_of(value, path, KD_METHODS, "a KD method")


def _teacher(value, path, ctx):
    if not ctx.teachers:
        raise ConfigError(f"{path}: {value!r} is not a teacher: no teachers are defined; add a `teachers:` "
                          f"section, e.g. teachers: {{s: {{model: s, epochs: 30}}}}")
    return s.one_of(value, path, ctx.teachers, "a teacher (a key of teachers:)")


def _kd_factor(value, path, ctx):
    return s.number(value, path, above=0)


def _runtime(value, path, ctx):
    return s.one_of(value, path, RUNTIMES, "a runtime")


def _quantization(value, path, ctx):
    return s.one_of(value, path, QUANTIZATIONS, "a quantization")


KNOBS: dict[str, Knob] = {k.name: k for k in (
    Knob("student", str, f"model size: {', '.join(MODEL_SIZES)}", "train", _size, "n"),
    Knob("student_init", str, "'scratch' or a checkpoint path (must exist)", "train", _init, SCRATCH),
    Knob("freeze_backbone", bool, "true or false", "train", _bool, False),
    Knob("epochs", int, "integer >= 1", "train", _positive_int, 10),
    Knob("img_size", int, f"multiple of {MAX_STRIDE}, >= {MAX_STRIDE}", "train", _img_size, 128,
         multiple_of=MAX_STRIDE),
    Knob("kd_method", str, f"{', '.join(KD_METHODS)}", "train", _kd_method, "none"),
    Knob("teacher", str, "a key of teachers:", "train", _teacher, None),
    Knob("kd_factor", float, "number > 0", "train", _kd_factor, 1.0),
    Knob("kd_off_last_epochs", int, "integer >= 0, < epochs", "train", _non_negative_int, 0),
    Knob("fm_nms", bool, "true or false", "train", _bool, True),
    Knob("runtime", str, f"{', '.join(RUNTIMES)}", "export", _runtime, "onnxruntime"),
    Knob("quantization", str, f"{', '.join(QUANTIZATIONS)}", "export", _quantization, "fp32"),
    Knob("threads", int, "integer >= 1", "board", _positive_int, 1),
    Knob("seed", int, "integer >= 0", "train", _non_negative_int, 0),
)}

# Knobs that only matter for some KD methods; a define-by-run space does not sample them otherwise.
DISTILLING = tuple(m for m in KD_METHODS if m != "none")
CONDITIONS: dict[str, ActiveWhen] = {
    "teacher": ActiveWhen("kd_method", DISTILLING),
    "kd_factor": ActiveWhen("kd_method", DISTILLING),
    "kd_off_last_epochs": ActiveWhen("kd_method", DISTILLING),
    "fm_nms": ActiveWhen("kd_method", ("output",)),
}


def check_knob(knob: str, value: object, path: str, ctx: KnobContext) -> object:
    return KNOBS[knob].check(value, path, ctx)


def _unknown_knob(path: str) -> ConfigError:
    return ConfigError(f"{path}: unknown knob; allowed knobs: {', '.join(KNOBS)}")


def _values(knob: Knob, raw: object, path: str, ctx: KnobContext) -> tuple:
    if not isinstance(raw, list) or not raw:
        raise ConfigError(f"{path}: must be a non-empty list of {knob.name} values ({knob.allowed}), {s.got(raw)}")
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
    knob = KNOBS[knob_name]
    allowed = knob.distributions
    example = {float: "{loguniform: [0.1, 10]}", int: "{int: [5, 20]}"}.get(knob.kind, "{choice: [a, b]}")
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
        raise ConfigError(f"{where}: not allowed for {knob_name} ({knob.kind.__name__} values: {knob.allowed}); "
                          f"allowed: {', '.join(allowed)}")
    if kind in FINITE:
        values = _values(knob, raw[kind], where, ctx)
        return Grid(values) if kind == "grid" else Choice(values)
    low, high = _bounds(knob, raw[kind], where, ctx)
    if kind == "uniform":
        return Uniform(low, high)
    if kind == "loguniform":
        return LogUniform(low, high)
    step = s.integer(raw.get("step", knob.multiple_of), s.child(path, "step"), minimum=1)
    if step % knob.multiple_of:
        raise ConfigError(f"{s.child(path, 'step')}: must be a multiple of {knob.multiple_of} so that every "
                          f"{knob_name} is, got {step}")
    if (high - low) % step:
        raise ConfigError(f"{where}: high - low must be a multiple of the step {step}, got [{low}, {high}]")
    return IntRange(low, high, step)


def possible_values(space: SearchSpace, knob: str) -> tuple:
    """Every value a knob can take in the space (the bounds, for numeric ranges)."""
    if knob not in space.params:
        return (space.base_value(knob),)
    param = space.params[knob]
    if isinstance(param, Choice):
        return param.values
    return param.low, param.high


def parse_space(search_raw: object, fixed_raw: object, defaults: dict, ctx: KnobContext, *,
                grid: bool) -> SearchSpace:
    """The `search:` and `fixed:` sections as a SearchSpace over every knob.

    With `grid`, every searched knob must be finite and becomes a Grid; otherwise `grid:` entries
    are sampled like `choice:` (both are finite sets), so one file can switch searchers."""
    search_raw = s.allowed_keys(search_raw, "search", list(KNOBS))
    fixed_raw = s.allowed_keys(fixed_raw, "fixed", list(KNOBS))
    both = [k for k in KNOBS if k in search_raw and k in fixed_raw]
    if both:
        raise ConfigError(f"fixed.{both[0]}: also in search; a knob is either searched or fixed, not both")
    if not search_raw:
        raise ConfigError(f"search: nothing to search; give at least one knob a distribution "
                          f"(e.g. kd_method: {{choice: [none, output]}}); allowed knobs: {', '.join(KNOBS)}")
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
    space = SearchSpace(params=params, fixed=fixed, defaults=defaults, conditions=CONDITIONS)
    _check_consistency(space, ctx)
    return space


def _where(space: SearchSpace, knob: str) -> str:
    if knob in space.params:
        return f"search.{knob}"
    return f"fixed.{knob}" if knob in space.fixed else f"{knob} (default)"


def _check_consistency(space: SearchSpace, ctx: KnobContext) -> None:
    """Checks across knobs: conditional knobs can be active, KD has a teacher, KD stays on a while."""
    methods = possible_values(space, "kd_method")
    distills = [m for m in methods if m != "none"]
    for knob in space.params:
        cond = space.conditions.get(knob)
        if cond is not None and not any(space.is_active(knob, {cond.parent: m}) for m in methods):
            raise ConfigError(f"search.{knob}: only used when kd_method is one of {', '.join(cond.values)}, but "
                              f"kd_method is always {' or '.join(map(repr, methods))}; search kd_method "
                              f"or drop search.{knob}")
    if not distills:
        return
    if space.base_value("teacher") is None and "teacher" not in space.params:
        if not ctx.teachers:
            raise ConfigError(f"teachers: kd_method can be {distills[0]!r} but no teacher is defined; add e.g. "
                              f"teachers: {{s: {{model: s, epochs: 30}}}}")
        raise ConfigError(f"fixed.teacher: required when several teachers are defined ({', '.join(ctx.teachers)}) "
                          f"and kd_method can be {distills[0]!r}; set fixed.teacher or search.teacher to some of "
                          f"them")
    longest_off = max(possible_values(space, "kd_off_last_epochs"))
    shortest = min(possible_values(space, "epochs"))
    if longest_off >= shortest:
        raise ConfigError(f"{_where(space, 'kd_off_last_epochs')}: must be < epochs (else distillation is off for "
                          f"the whole run); kd_off_last_epochs can be {longest_off} while "
                          f"{_where(space, 'epochs')} can be {shortest}")

