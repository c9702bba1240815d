"""Errors raised by the orchestrator itself."""
from __future__ import annotations

from common.errors import UserError


class ConfigError(UserError, ValueError):
    """A bad configuration value; the message names the key path and what is allowed."""
