"""A registry per extension point: name -> entry, declared where the thing lives.

KD methods, artifact formats, runtimes and search algorithms each keep one `Registry`. Entries are
light declarations (a lazily imported class or function path where the real thing needs torch), so
a registry can be read by the config check without importing torch or Ray. An unknown name is an
error that lists the known ones; there is never a fallback.
"""
from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from common.errors import UserError

T = TypeVar("T")


class UnknownName(UserError, KeyError):
    """A name that no entry of a registry carries."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class Registry(Generic[T]):
    """Ordered name -> entry; `kind` names the extension point in messages ("KD method")."""

    def __init__(self, kind: str, *, error: type[Exception] = UnknownName):
        self.kind = kind
        self._plural = kind.split()[-1] + "s"  # "unknown KD method 'x'; known methods: ..."
        self._error = error
        self._entries: dict[str, T] = {}

    def register(self, name: str, entry: T, *, replace: bool = False) -> T:
        """Add `entry` under `name`; a second entry of the same name is refused unless `replace`."""
        if not replace and name in self._entries:
            raise ValueError(f"{self.kind} {name!r} is registered twice")
        self._entries[name] = entry
        return entry

    def unregister(self, name: str) -> None:
        self._entries.pop(name, None)

    def get(self, name: str) -> T:
        if name not in self._entries:
            raise self._error(f"unknown {self.kind} {name!r}; known {self._plural}: {', '.join(self._entries)}")
        return self._entries[name]

    def names(self) -> tuple[str, ...]:
        return tuple(self._entries)

    def items(self) -> list[tuple[str, T]]:
        return list(self._entries.items())

    def values(self) -> list[T]:
        return list(self._entries.values())

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._entries))

    def __len__(self) -> int:
        return len(self._entries)


def load(target: str | Callable) -> Callable:
    """A registered target: the object itself, or "package.module:attribute" imported now."""
    if not isinstance(target, str):
        return target
    module, _, attribute = target.partition(":")
    return getattr(importlib.import_module(module), attribute)
