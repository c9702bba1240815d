"""`best SWEEP --out DIR [--max-latency-ms X] [--min-map Y]`: take the chosen trial's artifact out of
a sweep, with a model card. The file is copied from the sweep directory and its sha256 checked
against the one the trial measured, so what leaves is exactly what was scored and timed."""
from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from common.errors import UserError


def add_parser(sub) -> None:
    p = sub.add_parser("best", help="copy a sweep's best artifact (under latency/accuracy limits) out, with a model card")
    p.add_argument("sweep", type=Path, help="the sweep directory (runs/sweeps/NAME) or its YAML file")
    p.add_argument("--out", type=Path, required=True, help="directory to copy the artifact and its model card into")
    p.add_argument("--max-latency-ms", type=float, default=None,
                   help="only trials at most this slow on the board (the first of board.names; the sweep's "
                        "per-board constraints hold too)")
    p.add_argument("--min-map", type=float, default=None,
                   help="accuracy floor (artifact mAP@.5:.95, 0-1); then the fastest trial above it is taken")
    p.set_defaults(run=run)


def _rule(args: argparse.Namespace) -> str:
    limits = []
    if args.max_latency_ms is not None:
        limits.append(f"latency <= {args.max_latency_ms:g} ms")
    if args.min_map is not None:
        limits.append(f"mAP@.5:.95 >= {args.min_map:g}")
    goal = "the fastest complete, feasible trial" if args.min_map is not None else "the most accurate complete, feasible trial"
    return goal + (f" with {' and '.join(limits)}" if limits else "")


def run(args: argparse.Namespace) -> int:
    from common.hashing import file_sha256
    from orchestrator.commands.sweep import sweep_dir_of, sync_mlflow
    from orchestrator.console import stdout
    from orchestrator.model_card import model_card, write_card
    from orchestrator.pareto import choose
    from orchestrator.results import load_records
    from orchestrator.sweep_state import read_state, stored_config

    sweep_dir = sweep_dir_of(args.sweep)
    state, cfg, records = read_state(sweep_dir), stored_config(sweep_dir), load_records(sweep_dir)
    chosen = choose(records, cfg.constraints, max_latency_ms=args.max_latency_ms, min_map=args.min_map)
    if chosen is None:
        done = [r for r in records if r.complete]
        seen = ", ".join(f"{r.trial_id} ({r.metrics['map50_95']:.4f} mAP, {r.metrics['latency_ms']:.2f} ms)" for r in done)
        raise UserError(f"{sweep_dir}: no trial is {_rule(args)}; its complete trials: {seen or 'none'}")
    if chosen.artifact is None:
        raise UserError(f"{sweep_dir}: trial {chosen.trial_id} names no artifact file (a sweep run before artifacts "
                        f"were kept in models/); export its checkpoint with `python -m orchestrator export`")
    source = sweep_dir / chosen.artifact
    if not source.exists():
        raise FileNotFoundError(f"{source}: the artifact of trial {chosen.trial_id} is missing from the sweep directory")
    expected = chosen.metrics.get("artifact_sha256")
    if file_sha256(source) != expected:
        raise UserError(f"{source}: its sha256 is not the {expected} that trial {chosen.trial_id} measured; the file "
                        f"changed after the sweep, so it is not copied")
    args.out.mkdir(parents=True, exist_ok=True)
    target = args.out / source.name
    shutil.copyfile(source, target)
    runs = sync_mlflow(sweep_dir, state, cfg, records, backfill=False)
    card = model_card(chosen, state, file=target.name, chosen_by=_rule(args), run_id=runs.get(chosen.trial_id))
    files = write_card(args.out, card)
    m = chosen.metrics
    stdout.print(f"trial {chosen.trial_id}: {m.get('format')}, mAP@.5:.95 {m['map50_95']:.4f}, "
                 f"{m['latency_ms']:.3f} ms{' (EMULATED board)' if m.get('board_emulated') else ''}, "
                 f"{m.get('size_mb', 0):.3f} MB\n  {target}  sha256 {expected}\n  {files[0]}\n  {files[1]}",
                 soft_wrap=True, markup=False)
    return 0
