"""Credentials out of everything a sweep stores or prints.

A URI may carry a password (`postgresql://user:secret@host/db`, `https://user:token@mlflow/`). Such
a URI is used as given, in this process and from the environment, but wherever it is written down
(sweep.json, MLflow's config artifact, Tune's saved state, the printed UI command, warnings) it
appears as `user:***@host`. A resume gets the real one back from the user: the same URI on the
command line, or in the variable MLflow and EdgeSweep read it from (`MLFLOW_TRACKING_URI`).
"""
from __future__ import annotations

import logging
import re

HIDDEN = "***"
# scheme://userinfo@ : the userinfo may hold a password (user:password) or be a token on its own
_USERINFO = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.\-]*://)(?P<user>[^:/@\s]*)(?::(?P<secret>[^/@\s]*))?@")


def redact(text: str) -> str:
    """`text` with the password (or a lone token) of every URI in it replaced by ***."""
    def hide(m: re.Match) -> str:
        if m.group("secret") is None:  # https://TOKEN@host: the user part is the secret
            return f"{m.group('scheme')}{HIDDEN}@"
        return f"{m.group('scheme')}{m.group('user')}:{HIDDEN}@"
    return _USERINFO.sub(hide, text)


def has_secret(text: str) -> bool:
    return redact(text) != text


def was_redacted(text: str) -> bool:
    """Whether `text` holds a URI whose password `redact` hid."""
    return f":{HIDDEN}@" in text or f"//{HIDDEN}@" in text


def redact_tree(value: object) -> object:
    """A copy of nested dicts, lists and strings with every string `redact`ed."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {k: redact_tree(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact_tree(v) for v in value]
    return value


class RedactingFilter(logging.Filter):
    """A log handler's filter that hides passwords in URIs in every message it passes, whichever library
    logged it (MLflow, SQLAlchemy and requests name the URL they failed on)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if has_secret(message):
            record.msg, record.args = redact(message), ()
        return True
