"""MLflow search filters on values the user controls (a sweep directory's path may hold a quote).

MLflow's filter grammar has no escape inside a quoted string: a value is taken between single or
double quotes as it stands. So a value is quoted with the quote it lacks; one that holds both kinds
is matched with LIKE, each quote a one-character wildcard, and `tag_matches` keeps the exact hits.
"""
from __future__ import annotations

__all__ = ["tag_filter", "tag_matches"]


def tag_filter(key: str, value: str) -> str:
    """A filter clause on tag `key` that every run whose tag equals `value` passes (see `tag_matches`)."""
    for quote in ("'", '"'):
        if quote not in value:
            return f"tags.`{key}` = {quote}{value}{quote}"
    return f"tags.`{key}` LIKE '{value.replace(chr(39), '_').replace(chr(34), '_')}'"


def tag_matches(runs: list, key: str, value: str) -> list:
    """The runs whose tag `key` is exactly `value` (LIKE in `tag_filter` may let near misses through)."""
    return [run for run in runs if run.data.tags.get(key) == value]
