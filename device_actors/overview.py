"""What `board status` shows: every board node, alive or not, its actor's queue and last results."""
from __future__ import annotations

import logging
from dataclasses import dataclass

import ray

from device_actors.actor import BoardStatus
from device_actors.client import STATUS_TIMEOUT_S, Board, BoardTimeout, BoardUnavailable, list_board_nodes
from device_actors.naming import NAMESPACE, actor_name

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BoardOverview:
    name: str
    node_id: str
    alive: bool
    address: str
    status: BoardStatus | None  # None when the node is dead or has no actor yet
    note: str = ""


def board_overviews(*, namespace: str = NAMESPACE, timeout_s: float = STATUS_TIMEOUT_S) -> list[BoardOverview]:
    """One entry per board name: its live node if it has one, else the last dead one."""
    by_name = {}
    for node in list_board_nodes():
        if node.alive or not by_name.get(node.name, node).alive:
            by_name[node.name] = node
    out = []
    for name, node in sorted(by_name.items()):
        if not node.alive:
            reason = f" ({node.death_reason})" if node.death_reason else ""
            out.append(BoardOverview(name, node.node_id, False, node.address, None,
                                     f"node is dead{reason}: restart `board join` (or its systemd unit) on the board"))
            continue
        try:
            board = Board(name, False, ray.get_actor(actor_name(name), namespace=namespace))
        except ValueError:
            out.append(BoardOverview(name, node.node_id, True, node.address, None,
                                     "no latency actor yet: a sweep or `board bench` creates it"))
            continue
        try:
            out.append(BoardOverview(name, node.node_id, True, node.address, board.status(timeout_s)))
        except (BoardTimeout, BoardUnavailable) as e:
            out.append(BoardOverview(name, node.node_id, True, node.address, None, str(e)))
    return out
