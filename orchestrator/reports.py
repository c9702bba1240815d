"""Result tables shared by commands."""
from __future__ import annotations

from typing import Mapping, Sequence

from rich.table import Table

from orchestrator.console import fmt, table

NOISY_CV = 0.05  # a latency whose run-to-run CV is above this is marked in the sweep's tables
NOISY_MARK = "~"
NOISY_LEGEND = (f"{NOISY_MARK} after a latency: its run-to-run CV is above {NOISY_CV:.0%}, a noisy number (something "
                f"else ran on the board?); the trial's latency.json has its spread and whether the board was quiet")


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


def latency_cell(metrics: Mapping, key: str, *, cv_key: str | None = "latency_cv") -> object:
    """A trial's latency `key` for a table, marked NOISY_MARK when `cv_key` (the CV of that same
    measurement; None where the trial does not record one) is above NOISY_CV."""
    value = metrics.get(key)
    cv = metrics.get(cv_key) if cv_key else None
    if value is None or cv is None or not float(cv) > NOISY_CV:
        return value
    return f"{fmt(value)} {NOISY_MARK}"


def any_noisy(records: Sequence, cv_key: str = "latency_cv") -> bool:
    """Whether any trial's latency is marked (the legend is printed only then)."""
    return any(r.metrics.get(cv_key) is not None and float(r.metrics[cv_key]) > NOISY_CV for r in records)
