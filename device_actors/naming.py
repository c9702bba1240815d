"""How a board is known to the cluster: one name gives its resource, label and actor name.

`board join --name imx8mp` offers the custom resource `board_imx8mp: 1` and the node label
`edgesweep/board=imx8mp`; the driver pins the actor `board:imx8mp` (namespace `edgesweep`) to
them. A resource quantity of 1 means at most one latency actor can ever live on a board.
"""
from __future__ import annotations

import re

from common.errors import UserError

NAMESPACE = "edgesweep"
RESOURCE_PREFIX = "board_"
LABEL_KEY = "edgesweep/board"
_NAME = re.compile(r"[a-z0-9](?:[a-z0-9_-]{0,46}[a-z0-9])?")


class BoardNameError(UserError, ValueError):
    pass


def check_board_name(name: str) -> str:
    """Names become a Ray resource, a node label value and an actor name, so keep them plain."""
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise BoardNameError(f"board name {name!r} is not allowed: use 1-48 lowercase letters, digits, '-' or '_', "
                             f"starting and ending with a letter or digit (e.g. imx8mp)")
    return name


def board_resource(name: str) -> str:
    return RESOURCE_PREFIX + check_board_name(name)


def board_from_resource(resource: str) -> str | None:
    """'board_imx8mp' -> 'imx8mp'; None for any other resource."""
    if resource.startswith(RESOURCE_PREFIX) and _NAME.fullmatch(resource[len(RESOURCE_PREFIX):]):
        return resource[len(RESOURCE_PREFIX):]
    return None


def actor_name(name: str) -> str:
    return f"board:{check_board_name(name)}"


def emulated_actor_name(name: str) -> str:
    """The stand-in for a missing board lives under its own name, so a board joining later is
    never shadowed by it."""
    return f"emulated-board:{check_board_name(name)}"
