"""Result tables shared by commands."""
from __future__ import annotations

from typing import Sequence

from rich.table import Table

from orchestrator.console import table


def history_table(history: Sequence, *, title: str) -> Table:
    """Per-epoch training losses and val metrics of a `TrainResult.history`."""
    loss_keys = sorted({k for h in history for k in h.losses})
    rows = []
    for h in history:
        m = h.metrics
        rows.append([h.epoch, *(h.losses.get(k, float("nan")) for k in loss_keys),
                     m.get("map50_95", ""), m.get("map50", ""), m.get("precision", ""), m.get("recall", ""),
                     h.images_per_second, h.seconds])
    return table(title, ["epoch", *loss_keys, "mAP@.5:.95", "mAP@.5", "P", "R", "img/s", "s"], rows)
