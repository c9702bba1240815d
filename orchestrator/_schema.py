"""Reading a config tree with key paths: every check names where it looked and what it allows.

Helpers take the raw value and its key path (`data.val_subset`, `search.kd_method.choice[2]`) and
return the checked value or raise `ConfigError("<path>: <problem>; allowed: ...")`. YAML is read
with a loader that refuses duplicate keys (PyYAML silently keeps the last one otherwise).
"""
from __future__ import annotations

import difflib
import math
import re
from collections.abc import Sequence
from pathlib import Path

import yaml

from orchestrator.errors import ConfigError

_TYPE_NAMES = {bool: "a boolean", int: "an integer", float: "a number", str: "a string", list: "a list",
               dict: "a mapping", type(None): "null"}


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


def allowed_keys(mapping: object, path: str, allowed: Sequence[str], *, hints: dict[str, str] | None = None) -> dict:
    """`mapping` as a dict after checking it has only `allowed` keys (a missing section is `{}`)."""
    if mapping is None:
        return {}
    if not isinstance(mapping, dict):
        raise ConfigError(f"{path or 'the config'}: must be a mapping with keys {', '.join(allowed)}, {got(mapping)}")
    for key in mapping:
        where = child(path, str(key))
        if not isinstance(key, str):
            raise ConfigError(f"{where}: keys must be strings, got {key!r}; allowed keys: {', '.join(allowed)}")
        if key not in allowed:
            hint = (hints or {}).get(key)
            close = difflib.get_close_matches(key, allowed, n=1)
            extra = f" ({hint})" if hint else (f" (did you mean {close[0]!r}?)" if close else "")
            raise ConfigError(f"{where}: unknown key{extra}; allowed keys: {', '.join(allowed)}")
    return mapping


def required(mapping: dict, path: str, key: str, what: str) -> object:
    if key not in mapping or mapping[key] is None:
        raise ConfigError(f"{child(path, key)}: required ({what})")
    return mapping[key]


def integer(value: object, path: str, *, minimum: int | None = None) -> int:
    what = "an integer" + (f" >= {minimum}" if minimum is not None else "")
    if isinstance(value, bool) or not isinstance(value, int) or (minimum is not None and value < minimum):
        raise ConfigError(f"{path}: must be {what}, {got(value)}")
    return value


def number(value: object, path: str, *, minimum: float | None = None, above: float | None = None,
           maximum: float | None = None, below: float | None = None) -> float:
    """A finite float; integers are accepted (YAML writes 1, not 1.0)."""
    bounds = [f">= {minimum:g}" if minimum is not None else "", f"> {above:g}" if above is not None else "",
              f"<= {maximum:g}" if maximum is not None else "", f"< {below:g}" if below is not None else ""]
    what = " and ".join(b for b in bounds if b)
    what = f"a number {what}" if what else "a number"
    ok = not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)
    if ok:
        ok = ((minimum is None or value >= minimum) and (above is None or value > above)
              and (maximum is None or value <= maximum) and (below is None or value < below))
    if not ok:
        raise ConfigError(f"{path}: must be {what}, {got(value)}")
    return float(value)


def boolean(value: object, path: str) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{path}: must be true or false, {got(value)}")
    return value


def one_of(value: object, path: str, allowed: Sequence[str], what: str) -> str:
    """`value` if it is one of `allowed`; `what` names the kind ("a KD method") in the message."""
    if not isinstance(value, str) or value not in allowed:
        quoted = repr(value) if isinstance(value, str) else got(value).removeprefix("got ")
        raise ConfigError(f"{path}: {quoted} is not {what}; allowed: {', '.join(allowed)}")
    return value


def name(value: object, path: str, pattern: str, allowed: str) -> str:
    if not isinstance(value, str) or not re.fullmatch(pattern, value):
        raise ConfigError(f"{path}: must be {allowed}, {got(value)}")
    return value


def string_list(value: object, path: str) -> list[str]:
    if not isinstance(value, list) or not value:
        raise ConfigError(f"{path}: must be a non-empty list of strings, {got(value)}")
    for i, item in enumerate(value):
        if not isinstance(item, str) or not item:
            raise ConfigError(f"{child(path, i)}: must be a non-empty string, {got(item)}")
    return value


def existing_path(value: object, path: str, base_dir: Path, *, kind: str) -> Path:
    """An absolute path to an existing file (`kind="file"`) or directory (`"dir"`); relative
    paths are taken relative to `base_dir` (the config file's directory)."""
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{path}: must be a path to an existing {'directory' if kind == 'dir' else 'file'}, "
                          f"{got(value)}")
    resolved = (base_dir / Path(value).expanduser()).resolve()
    exists = resolved.is_dir() if kind == "dir" else resolved.is_file()
    if not exists:
        found = " (it is a directory)" if resolved.is_dir() else " (it is a file)" if resolved.exists() else ""
        what = "directory" if kind == "dir" else "file"
        raise ConfigError(f"{path}: {what} not found: {resolved}{found}")
    return resolved


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
