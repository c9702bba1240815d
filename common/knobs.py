"""A trial knob as the stage that reads it declares it: name, YAML type, default, allowed values.

Each stage of a trial takes its knobs as one frozen dataclass whose field names are the knob names
(`trainables.hyper.TrainKnobs`, `trainables.export.ExportKnobs`, `device_actors.runtimes.BoardKnobs`);
a field becomes a knob by its default being `knob(...)`. That dataclass is the one place a knob's
default lives: the sweep schema, the CLI and the trainer all read it from there. Extension points
declare the knobs only they read (a KD method's temperature) as `Knob` values in their registry.

This module declares; `orchestrator._knobs` checks user values against the declarations.
"""
from __future__ import annotations

import types
import typing
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field, fields
from typing import Any, TypeVar

T = TypeVar("T")
_KNOB = "edgesweep.knob"
KINDS = (bool, int, float, str)


@dataclass(frozen=True)
class Knob:
    """One knob. `choices` may be a live collection (a Registry) or a function returning one, so a
    method registered later is allowed at once; numeric knobs may carry bounds instead."""

    name: str
    kind: type  # bool, int, float or str: the YAML type of every value
    default: object
    doc: str = ""
    noun: str = ""  # what one value is, for messages: "a KD method"
    choices: Collection | Callable[[], Collection] | None = None
    minimum: float | None = None
    above: float | None = None
    maximum: float | None = None
    below: float | None = None
    multiple_of: int = 1  # int knobs: values (and a range's step) stay on this grid
    nullable: bool = False  # None is a value (a teacher that is not set)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise TypeError(f"knob {self.name}: kind must be one of bool, int, float, str, got {self.kind!r}")

    def allowed_values(self) -> tuple | None:
        """The finite set of values, or None where bounds (or anything of the kind) apply."""
        if self.choices is None:
            return None
        values = self.choices() if callable(self.choices) else self.choices
        return tuple(values)

    def allowed(self) -> str:
        """In words, for messages and the reference."""
        values = self.allowed_values()
        if values is not None:
            return ", ".join(map(str, values))
        if self.kind is bool:
            return "true or false"
        kind = "integer" if self.kind is int else "number" if self.kind is float else "string"
        bounds = [f">= {self.minimum:g}" if self.minimum is not None else "",
                  f"> {self.above:g}" if self.above is not None else "",
                  f"<= {self.maximum:g}" if self.maximum is not None else "",
                  f"< {self.below:g}" if self.below is not None else ""]
        words = " and ".join(b for b in bounds if b)
        if self.multiple_of > 1:
            return f"multiple of {self.multiple_of}, {words}" if words else f"multiple of {self.multiple_of}"
        return f"{kind} {words}".strip()


class Noun(str):
    """What one value of a setting is, for messages ("a learning-rate schedule"): metadata in a
    field's `Annotated[...]`, read by the config's error messages and ignored by pydantic."""


def knob(default: object, doc: str, **declaration: Any) -> Any:
    """The default of a stage dataclass field that is a knob, e.g. `epochs: int = knob(10, "...", minimum=1)`."""
    return field(default=default, metadata={_KNOB: (doc, declaration)})


def _kind(annotation: object) -> tuple[type, bool]:
    """`int` -> (int, False); `str | None` -> (str, True)."""
    args = typing.get_args(annotation)
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        kinds = [a for a in args if a is not type(None)]
        return kinds[0], len(kinds) < len(args)
    return annotation, False


def declared_knobs(cls: type) -> tuple[Knob, ...]:
    """The knobs a stage dataclass declares, in field order (fields without `knob(...)` are not knobs)."""
    hints = typing.get_type_hints(cls)
    out = []
    for f in fields(cls):
        if _KNOB not in f.metadata:
            continue
        doc, declaration = f.metadata[_KNOB]
        kind, nullable = _kind(hints[f.name])
        out.append(Knob(f.name, kind, f.default, doc, nullable=nullable, **declaration))
    return tuple(out)


def pick(cls: type[T], values: Mapping[str, object], **extra: object) -> T:
    """The stage dataclass `cls` built from a trial's flat knob dict: the fields it names, by name."""
    names = {f.name for f in fields(cls)}
    return cls(**{k: v for k, v in values.items() if k in names}, **extra)
