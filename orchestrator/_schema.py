"""Reading a sweep file: YAML in, pydantic's verdict out as one message that names the key path.

Sections are frozen dataclasses whose bounds and descriptions are `Annotated[..., Field(...)]`
(pydantic validates them through a `TypeAdapter`, strictly: "500" is not an integer). The first
error becomes `ConfigError("<path>: <problem>; allowed: ...")` in the words of the whole config,
which the knob grammar (`orchestrator._knobs`) shares through the helpers below. YAML is read with
a loader that refuses duplicate keys (PyYAML silently keeps the last one otherwise).
"""
from __future__ import annotations

import dataclasses
import difflib
import json
import re
import types
import typing
from collections.abc import Callable, Sequence
from functools import cache
from pathlib import Path
from typing import Annotated, Any, Literal

import annotated_types as at
import yaml
from pydantic import AfterValidator, Field, TypeAdapter, ValidationError
from pydantic.fields import FieldInfo

from common.knobs import Noun
from orchestrator.errors import ConfigError

_TYPE_NAMES = {bool: "a boolean", int: "an integer", float: "a number", str: "a string", list: "a list",
               dict: "a mapping", type(None): "null"}
FIELD_PATH = re.compile(r"^([A-Za-z_][\w.\[\]]*): ")  # a section's own rule names its key: "export.gpu: ..."


def child(path: str, key: str | int) -> str:
    """`data` + `val_subset` -> `data.val_subset`; `x.choice` + 2 -> `x.choice[2]`."""
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else key


def got(value: object) -> str:
    """How a wrong value is quoted: its repr, plus its YAML type where the repr hides it."""
    kind = _TYPE_NAMES.get(type(value), type(value).__name__)
    if isinstance(value, (bool, int, float)) or value is None:
        return f"got {value!r}" if not isinstance(value, bool) else f"got {str(value).lower()} ({kind})"
    return f"got {value!r} ({kind})"


# ---- declaring ---------------------------------------------------------------------------------


def registered(names: Callable[[], Sequence[str]], noun: str, doc: str) -> Any:
    """A string that must name an entry of a registry (read when validating, so late entries count);
    the JSON Schema lists the entries as its enum."""
    def check(value: str) -> str:
        if value not in names():
            raise ValueError(f"{value!r} is not {noun}; allowed: {', '.join(names())}")
        return value

    return Annotated[str, AfterValidator(check), Field(description=doc, json_schema_extra=lambda schema: schema.update(
        enum=list(names())))]


@cache
def adapter(cls: type) -> TypeAdapter:
    return TypeAdapter(cls)


def validate(cls: Any, data: object, *, hints: dict[str, dict[str, str]] | None = None, path: str = "",
             checker: TypeAdapter | None = None) -> Any:
    """`data` as a `cls` (a dataclass tree, or any type), validated strictly as JSON would be: YAML
    lists fill tuples, strings fill paths, and nothing else is coerced. The first error is a
    ConfigError; `path` is where `data` sits in the file."""
    try:
        text = json.dumps(data, default=str, allow_nan=True)
        return (checker or adapter(cls)).validate_json(text, strict=True)
    except ValidationError as e:
        raise ConfigError(explain(cls, _first(cls, e.errors()), hints or {}, path)) from None


def _first(root: Any, errors: list[dict]) -> dict:
    """The error to report: the first, unless it is one member of a union refusing the value's type;
    then the member that took the type and found something else wrong."""
    first, loc = errors[0], tuple(errors[0]["loc"])
    if not loc or _walk(root, loc)[2] != _walk(root, loc[:-1])[2]:  # its last key is not a union member
        return first
    members = [e for e in errors if tuple(e["loc"])[:len(loc) - 1] == loc[:-1]]
    return next((e for e in members if not e["type"].endswith("_type")), first)


# ---- walking the declared types along an error's location ----------------------------------------


@dataclasses.dataclass
class _Slot:
    """What a location holds: its bare type, the constraints and words declared on it."""

    kind: Any
    bounds: dict[str, float] = dataclasses.field(default_factory=dict)
    noun: str = ""
    doc: str = ""


def _absorb(slot: _Slot, meta: object) -> None:
    if isinstance(meta, FieldInfo):
        slot.doc = slot.doc or meta.description or ""
        for m in meta.metadata:
            _absorb(slot, m)
    elif isinstance(meta, Noun):
        slot.noun = str(meta)
    elif isinstance(meta, at.GroupedMetadata):
        for m in meta:
            _absorb(slot, m)
    elif isinstance(meta, at.MultipleOf):
        slot.bounds["multiple_of"] = meta.multiple_of
    else:
        for name in ("ge", "gt", "le", "lt"):
            if isinstance(meta, getattr(at, name.capitalize())):
                slot.bounds[name] = getattr(meta, name)


def _slot(tp: Any) -> _Slot:
    slot = _Slot(tp)
    while True:
        if typing.get_origin(slot.kind) is Annotated:
            slot.kind, *meta = typing.get_args(slot.kind)
            for m in meta:
                _absorb(slot, m)
        elif _is_union(slot.kind) and len(members := _members(slot.kind)) == 1:
            slot.kind = members[0]
        else:
            return slot


def _is_union(tp: Any) -> bool:
    return isinstance(tp, types.UnionType) or typing.get_origin(tp) is typing.Union


def _members(tp: Any) -> list:
    return [a for a in typing.get_args(tp) if a is not type(None)]


def _fields(tp: Any) -> dict[str, Any]:
    """A dataclass's fields with their declared (Annotated) types, in order."""
    if not dataclasses.is_dataclass(tp):
        return {}
    hints = typing.get_type_hints(tp, include_extras=True)
    return {f.name: hints[f.name] for f in dataclasses.fields(tp)}


def _tag_of(tp: Any) -> str | None:
    return next((str(m.tag) for m in typing.get_args(tp)[1:] if type(m).__name__ == "Tag"), None) \
        if typing.get_origin(tp) is Annotated else None


def _walk(root: Any, loc: tuple, prefix: str = "") -> tuple[_Slot, list[_Slot], str]:
    """The slot at `loc`, the slots of its parents, and the key path a user reads there: pydantic's
    loc also names the union member it tried (a tag, or a type such as `float`), which the walk
    consumes without adding it to the path."""
    slot, parents, path = _slot(root), [], prefix
    for key in loc:
        parents.append(slot)
        kind = slot.kind
        if _is_union(kind):
            members = _members(kind)
            # pydantic names the member it tried by its tag, or by its type ("constrained-float", "dict[str,...]")
            tried = str(key).removeprefix("constrained-").split("[")[0]
            chosen = next((m for m in members if _tag_of(m) == key or _name(_slot(m).kind) == tried), None)
            if chosen is not None:
                slot = _slot(chosen)
                continue
            kind = _slot(members[0]).kind
        origin = typing.get_origin(kind)
        if origin is dict:
            slot = _slot(typing.get_args(kind)[0 if key == "[key]" else 1])
        elif origin in (list, tuple) and isinstance(key, int):
            slot = _slot(typing.get_args(kind)[0])
        elif key in _fields(kind):
            slot = _slot(_fields(kind)[key])
        else:
            slot = _Slot(Any)
        path = path if key == "[key]" else child(path, key)
    return slot, parents, path


def _name(tp: Any) -> str:
    return getattr(typing.get_origin(tp) or tp, "__name__", str(tp)).lower()


def _tag_field(union: _Slot) -> str:
    """The key whose value picks a member of a tagged union: the field every member pins to its tag."""
    member = _members(union.kind)[0]
    return next(name for name, tp in _fields(_slot(member).kind).items()
                if typing.get_args(_slot(tp).kind) == (_tag_of(member),))


# ---- phrasing ------------------------------------------------------------------------------------


def expected(slot: _Slot) -> str:
    """What a slot holds, in words: "an integer >= 1", "a number > 0 and <= 1", "true or false"."""
    kind = slot.kind
    if kind is bool:
        return "true or false"
    if "multiple_of" in slot.bounds:
        step = slot.bounds["multiple_of"]
        return f"a multiple of {step:g} that is >= {slot.bounds.get('ge', step):g}"
    if kind in (int, float):
        words = {"ge": ">=", "gt": ">", "le": "<=", "lt": "<"}
        bounds = " and ".join(f"{words[k]} {v:g}" for k, v in slot.bounds.items())
        return ("an integer" if kind is int else "a number") + (f" {bounds}" if bounds else "")
    if typing.get_origin(kind) in (list, tuple):
        return "a non-empty list of strings"
    if _fields(kind) or typing.get_origin(kind) is dict:
        keys = ", ".join(_fields(kind))
        return f"a mapping with keys {keys}" if keys else f"a mapping ({slot.doc or 'NAME -> value'})"
    return slot.noun or "a non-empty string"


def explain(root: Any, error: dict, hints: dict[str, dict[str, str]], prefix: str = "") -> str:
    """One pydantic error as the config's message: "<path>: <problem>" (`prefix`: where `root` sits)."""
    loc, kind, value = tuple(error["loc"]), error["type"], error.get("input")
    slot, parents, path = _walk(root, loc, prefix)
    where = path or "the config"
    if loc and loc[-1] == "[key]":  # a mapping's key, e.g. a teacher's name
        mapping = _walk(root, loc[:-2])[0]
        return f"{path} (the name): must be {_slot(typing.get_args(mapping.kind)[0]).noun}, {got(value)}"
    if kind in ("extra_forbidden", "unexpected_keyword_argument"):
        parent = _walk(root, loc[:-1], prefix)[2]
        union = parents[-2] if len(parents) > 1 and _is_union(parents[-2].kind) else None
        others = [t for m in _members(union.kind) if str(loc[-1]) in _fields(_slot(m).kind)
                  and (t := _tag_of(m))] if union else []
        if others:
            return f"{child(parent, loc[-1])}: only with {child(parent, _tag_field(union))}: {' or '.join(others)}"
        return unknown_key(str(loc[-1]), parent, list(_fields(parents[-1].kind)), hints.get(parent, {}))
    if kind == "missing":
        return f"{where}: required ({slot.doc or expected(slot)})"
    if kind == "value_error":
        message = str(error["msg"]).removeprefix("Value error, ")
        named = FIELD_PATH.match(message)
        return f"{child(path, named.group(1))}: {message[named.end():]}" if named else f"{where}: {message}"
    if kind == "union_tag_invalid" or kind == "union_tag_not_found":
        key = _tag_field(slot)
        tags, given = error["ctx"].get("expected_tags", ""), error["ctx"].get("tag")
        if not isinstance(value, dict):
            return f"{where}: must be a mapping with keys {key}, ..., {got(value)}"
        return f"{child(path, key)}: {given!r} is not {slot.noun or 'allowed'}; allowed: {tags.replace(chr(39), '')}"
    if kind == "literal_error" or typing.get_origin(slot.kind) is Literal:
        allowed = ", ".join(map(str, typing.get_args(slot.kind)))
        quoted = repr(value) if isinstance(value, str) else got(value).removeprefix("got ")
        return f"{where}: {quoted} is not {slot.noun or 'allowed'}; allowed: {allowed}"
    if kind == "string_pattern_mismatch":
        return f"{where}: must be {slot.noun or 'a name'}, {got(value)}"
    return f"{where}: must be {expected(slot)}, {got(value)}"


def unknown_key(key: str, path: str, allowed: Sequence[str], hints: dict[str, str]) -> str:
    where = child(path, key)
    hint = hints.get(key)
    close = difflib.get_close_matches(key, allowed, n=1)
    extra = f" ({hint})" if hint else (f" (did you mean {close[0]!r}?)" if close else "")
    return f"{where}: unknown key{extra}; allowed keys: {', '.join(allowed)}"


# ---- checks the knob grammar shares ----------------------------------------------------------------


def allowed_keys(mapping: object, path: str, allowed: Sequence[str]) -> dict:
    """`mapping` as a dict after checking it has only `allowed` keys (a missing section is `{}`)."""
    if mapping is None:
        return {}
    if not isinstance(mapping, dict):
        raise ConfigError(f"{path or 'the config'}: must be a mapping with keys {', '.join(allowed)}, {got(mapping)}")
    for key in mapping:
        if key not in allowed:
            raise ConfigError(unknown_key(str(key), path, allowed, {}))
    return mapping


def one_of(value: object, path: str, allowed: Sequence[str], what: str) -> str:
    """`value` if it is one of `allowed`; `what` names the kind ("a KD method") in the message."""
    if not isinstance(value, str) or value not in allowed:
        quoted = repr(value) if isinstance(value, str) else got(value).removeprefix("got ")
        raise ConfigError(f"{path}: {quoted} is not {what}; allowed: {', '.join(allowed)}")
    return value


def existing_path(value: object, path: str, base_dir: Path, *, kind: str) -> Path:
    """An absolute path to an existing file (`kind="file"`) or directory (`"dir"`); relative
    paths are taken relative to `base_dir` (the config file's directory)."""
    what = "directory" if kind == "dir" else "file"
    if not isinstance(value, (str, Path)) or not str(value):
        raise ConfigError(f"{path}: must be a path to an existing {what}, {got(value)}")
    resolved = (base_dir / Path(value).expanduser()).resolve()
    if not (resolved.is_dir() if kind == "dir" else resolved.is_file()):
        found = " (it is a directory)" if resolved.is_dir() else " (it is a file)" if resolved.exists() else ""
        raise ConfigError(f"{path}: {what} not found: {resolved}{found}")
    return resolved


# ---- YAML --------------------------------------------------------------------------------------


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key written twice in one mapping."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: dict[object, yaml.Node] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if isinstance(key, (str, int, float, bool)) and key in seen:
                first = seen[key].start_mark
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r} (first at line {first.line + 1})", key_node.start_mark)
            seen[key] = key_node
        return super().construct_mapping(node, deep=deep)


def read_yaml(path: Path) -> object:
    """The parsed file; unreadable or malformed files raise ConfigError `<file>:<line>:<col>: ...`."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: cannot read the config file: {e}") from None
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        problem = " ".join(p for p in (e.context, e.problem) if p)
        raise ConfigError(f"{where}: malformed YAML: {problem}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: malformed YAML: {e}") from None
    except RecursionError:
        raise ConfigError(f"{path}: malformed YAML: nested too deeply to be a sweep file") from None
