"""The one place the board side reaches into Ray's private modules, so a Ray upgrade breaks one file.

Checked against Ray 2.60.0 (tests/device_actors/test_board_cluster.py and test_actor_start.py fail
when these are gone). `board join` runs this module in a child process (`python -m
device_actors._ray_internals HOST:PORT`), so the cluster token reaches Ray's C++ token loader
through the child's environment only; it prints the head's cluster metadata (Ray and Python
versions) as one JSON line. Ray has no public call that reads them before a node has joined.
"""
from __future__ import annotations

import json
import sys


def cluster_metadata(address: str) -> dict:
    """The head's cluster metadata as Ray itself compares it when a node joins."""
    from ray._common.usage.usage_lib import get_cluster_metadata  # private in Ray 2.60
    from ray._raylet import GcsClient  # private in Ray 2.60

    return get_cluster_metadata(GcsClient(address=address))


if __name__ == "__main__":
    print(json.dumps(cluster_metadata(sys.argv[1])))


def actor_restarts(actor) -> tuple[int, str]:
    """(how often Ray restarted `actor`, its recorded death cause or ""), from the GCS actor table.

    Ray 2.60 offers this only through the state API, which needs the dashboard this project keeps
    off; `ray._private.state.actors` reads the same table from the GCS directly."""
    from ray._private import state  # private in Ray 2.60

    info = state.actors(actor._actor_id.hex())  # noqa: SLF001 - the handle's id has no public accessor
    return int(info.get("NumRestarts", 0)), str(info.get("DeathCause") or "").strip()
