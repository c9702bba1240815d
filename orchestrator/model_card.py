"""A model card for a sweep's chosen artifact: what it is, how it was made, what it measured, where.

Written beside the copied file by `best` as JSON (for tools) and Markdown (for people). Every value
comes from the sweep's own records (the journal, sweep.json, MLflow's run id); nothing is re-measured.
"""
from __future__ import annotations

import json
from pathlib import Path

from orchestrator.pareto import kd_label, per_board_latencies
from orchestrator.results import TrialRecord
from orchestrator.trial_spec import TrialSpec

CARD_METRICS = ("map50_95", "map50", "precision", "recall", "board_map50_95", "float_map50_95", "latency_ms",
                "latency_p90_ms", "latency_cv", "fps", "size_mb")


def model_card(record: TrialRecord, state: dict, *, file: str, chosen_by: str, run_id: str | None) -> dict:
    m, config = record.metrics, state["config"]
    return {
        "sweep": state["name"], "trial": record.trial_id, "chosen_by": chosen_by,
        "artifact": {"file": file, "sha256": m.get("artifact_sha256"), "format": m.get("format"),
                     "runtime": record.knobs.get("runtime"), "img_size": record.knobs.get("img_size"),
                     "size_mb": m.get("size_mb")},
        "distillation": kd_label(record),
        "knobs": record.knobs,
        "metrics": {k: m[k] for k in (*CARD_METRICS, *per_board_latencies(m)) if m.get(k) is not None},
        "board": {"name": board_names(config)[0], "also_timed_on": board_names(config)[1:], "node": m.get("board_node"),
                  "emulated": bool(m.get("board_emulated")), "emulation": m.get("board_emulation"),
                  "threads": TrialSpec.of(record.knobs).board.board_threads},
        "data": config.get("data", {}),
        "commit": state.get("commit", "unknown (the sweep predates commit records)"),
        "mlflow": {"tracking_uri": state.get("tracking_uri"), "run_id": run_id},
    }


def board_names(config: dict) -> list[str]:
    """The boards of a stored sweep config (`names`; sweeps before several boards stored `name`)."""
    board = config.get("board", {})
    return list(board.get("names") or [board.get("name")])


def _markdown(card: dict) -> str:
    a, b, m = card["artifact"], card["board"], card["metrics"]
    where = f"{b['name']} (EMULATED: {b['emulation']})" if b["emulated"] else str(b["name"])
    lines = [f"# {a['file']}: trial {card['trial']} of sweep {card['sweep']}", "",
             f"Chosen as {card['chosen_by']}.", "",
             f"- format {a['format']}, runtime {a['runtime']}, input {a['img_size']} px, {a['size_mb']:.3f} MB",
             f"- sha256 `{a['sha256']}`",
             f"- distillation: {card['distillation']}",
             f"- board: {where}, node {b['node']}, {b['threads']} thread(s)",
             f"- code: commit {card['commit']}",
             f"- MLflow run {card['mlflow']['run_id'] or '(not recorded)'} in {card['mlflow']['tracking_uri']}", "",
             "| metric | value |", "| --- | --- |",
             *(f"| {k} | {v:.6g} |" if isinstance(v, float) else f"| {k} | {v} |" for k, v in m.items()), "",
             "## Knobs", "", "| knob | value |", "| --- | --- |",
             *(f"| {k} | {v} |" for k, v in sorted(card["knobs"].items())), "",
             "## Data", "", "```json", json.dumps(card["data"], indent=2, default=str), "```", ""]
    return "\n".join(lines)


def write_card(out_dir: Path, card: dict) -> list[Path]:
    paths = [Path(out_dir) / "model_card.json", Path(out_dir) / "MODEL_CARD.md"]
    paths[0].write_text(json.dumps(card, indent=2, default=str) + "\n")
    paths[1].write_text(_markdown(card))
    return paths
