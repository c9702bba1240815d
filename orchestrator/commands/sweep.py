"""`sweep kd.yaml [--resume [--retry-failed]]`: run a sweep; `report SWEEP`: show a sweep's Pareto front again.

Exit status of `sweep`: 0 every trial ended complete, 1 some trial failed (`report` lists them with
the retry command), 2 an error to fix (config, data, a locked sweep), 130 stopped by SIGINT,
SIGTERM or SIGHUP in any phase (docs/robustness.md#signals-and-exit-codes).
"""
from __future__ import annotations

import argparse
import logging
import shlex
from pathlib import Path

from orchestrator.interrupts import INTERRUPTED  # signals only: light to import

log = logging.getLogger(__name__)


def add_parser(sub) -> None:
    p = sub.add_parser("sweep", help="run a KD + quantization sweep described by a YAML file")
    p.add_argument("config", type=Path, help="the sweep file, e.g. examples/kd.yaml (with --resume, also its "
                                             "directory, runs/sweeps/NAME, wherever it was moved)")
    p.add_argument("--resume", action="store_true", help="finish an interrupted sweep without redoing finished trials")
    p.add_argument("--tracking-uri", default=None, help="MLflow tracking URI (default: mlflow.tracking_uri, "
                                                        "else $MLFLOW_TRACKING_URI, else sqlite in the sweep directory)")
    p.add_argument("--address", default=None, help="Ray cluster address (default: RAY_ADDRESS, else a local Ray)")
    p.add_argument("--retry-failed", action="store_true",
                   help="with --resume: run the failed trials again, from their last checkpoint (a trained student "
                        "is not trained again)")
    p.set_defaults(run=run)
    r = sub.add_parser("report", help="print a sweep's Pareto front and where to look at it")
    r.add_argument("sweep", type=Path, help="the sweep directory (runs/sweeps/NAME) or its YAML file")
    r.set_defaults(run=run_report)


def run(args: argparse.Namespace) -> int:
    from orchestrator.interrupts import StopSignals

    stop = StopSignals()
    with stop:  # from the config check to the report: SIGINT, SIGTERM and SIGHUP end the sweep with 130
        return _run(args, stop)


def _run(args: argparse.Namespace, stop) -> int:
    from orchestrator.console import console
    from orchestrator.sweep import Sweep

    cfg = None
    try:
        cfg = sweep_config_of(args.config, resume=args.resume)
        console.print(f"sweep [bold]{cfg.name}[/]: {cfg.searcher.trials} trials, {cfg.searcher.algorithm} searcher, "
                      f"state in {cfg.sweep_dir}")
        sweep = Sweep(cfg, resume=args.resume, tracking_uri=args.tracking_uri, address=args.address,
                      retry_failed=args.retry_failed, stop=stop)
        try:
            teachers = sweep.prepare_teachers()
        except KeyboardInterrupt:
            sweep.abort()
            sweep.lock.release()
            raise
        if teachers:
            console.print(f"teachers {', '.join(teachers)}: training (or loading from the cache) alongside the first "
                          f"trials; the trials that distil from them wait for them")
        result = sweep.run(show_progress=True)
    except KeyboardInterrupt:
        return _stopped(args, cfg, stop.received or "SIGINT")
    if result.interrupted:
        return _stopped(args, cfg, result.interrupted)
    print_report(result.sweep_dir, runs=result.runs)  # MLflow as the sweep's end read it: no second wait
    if result.failed:
        console.print(f"[red]{len(result.failed)} trial(s) failed[/]; their errors are in MLflow and in "
                      f"{result.sweep_dir / 'trials.jsonl'}. Run them again with:\n  "
                      f"{carry_on_command(args, resume=True, retry_failed=True)}", soft_wrap=True)
        return 1
    return 0


def carry_on_command(args: argparse.Namespace, *, resume: bool, retry_failed: bool = False) -> str:
    """The `sweep` command that carries on from where this one stopped (same config and cluster)."""
    words = ["python", "-m", "orchestrator", "sweep", str(args.config), *(["--resume"] if resume else []),
             *(["--retry-failed"] if retry_failed else []), *(["--address", args.address] if args.address else [])]
    return shlex.join(words)


def _stopped(args: argparse.Namespace, cfg, signal_name: str) -> int:
    """Say what a stop signal left and the command that carries on; returns the exit status."""
    from orchestrator._ray_internals import tune_state_saved
    from orchestrator.console import console
    from orchestrator.results import load_records
    from orchestrator.sweep import TUNE_DIR

    if cfg is None:
        console.print(f"[yellow]interrupted ({signal_name})[/] while reading {args.config}: nothing was started")
        return INTERRUPTED
    if tune_state_saved(cfg.sweep_dir / TUNE_DIR):
        done = sum(r.ended for r in load_records(cfg.sweep_dir))
        console.print(f"[yellow]interrupted ({signal_name})[/]: {done} of {cfg.searcher.trials} trials ended; the "
                      f"sweep's state is saved in {cfg.sweep_dir}. Resume with:\n  "
                      f"{carry_on_command(args, resume=True, retry_failed=args.retry_failed)}", soft_wrap=True)
    else:
        console.print(f"[yellow]interrupted ({signal_name})[/] before the sweep saved any trial state. Start it "
                      f"again with:\n  {carry_on_command(args, resume=False)}", soft_wrap=True)
    return INTERRUPTED


def sweep_config_of(path: Path, *, resume: bool):
    """The config `sweep` runs: the YAML's, or with --resume and a sweep directory the one it was started
    with (the sweep resumes where the directory is now)."""
    from orchestrator.config import load_config
    from orchestrator.errors import ConfigError
    from orchestrator.sweep_state import stored_config

    if not path.is_dir():
        return load_config(path)
    if not resume:
        raise ConfigError(f"{path} is a directory: give the sweep's YAML file, or add --resume to finish the sweep "
                          f"that directory holds")
    return stored_config(path)


def sweep_dir_of(path: Path) -> Path:
    if path.is_file():
        from orchestrator.config import load_config

        return load_config(path).sweep_dir
    from orchestrator.sweep_state import read_state

    read_state(path)  # a directory without sweep.json is refused with what to give instead
    return path


def sync_mlflow(sweep_dir: Path, state: dict, cfg, records, *, backfill: bool) -> dict[str, str]:
    """Trial id -> MLflow run id; with `backfill` (and no driver running the sweep) first write the
    journal records MLflow missed and register the front's models. Empty while MLflow is down."""
    from orchestrator.pareto import front
    from orchestrator.sweep_state import SweepLock, SweepLocked, resume_tracking_uri
    from orchestrator.tracking.store import SweepTracking

    lock = None
    try:
        tracking = SweepTracking(resume_tracking_uri(sweep_dir, None, None), state["experiment_id"])
        if backfill:
            try:
                lock = SweepLock.acquire(sweep_dir)
            except SweepLocked:
                pass  # its driver writes MLflow itself
        if lock is not None:
            objectives = [(o.metric, o.mode) for o in cfg.objectives]
            tracking.backfill(state["parent_run_id"], records, sweep_dir)
            tracking.close_parent(state["parent_run_id"], records, cfg.searcher.trials)
            on_front, runs = front(records, objectives, cfg.constraints), tracking.trial_runs(state["parent_run_id"])
            tracking.register_front(cfg.name, on_front, objectives, runs)
            tracking.mark_front(runs, on_front)
        return tracking.trial_runs(state["parent_run_id"])
    except Exception as e:  # noqa: BLE001 - the report comes from the journal; MLflow can wait
        log.warning("MLflow at %s is not writable (%s); the report below comes from the journal, and the next "
                    "report writes MLflow what it lacks", state["tracking_uri"], e)
        return {}
    finally:
        if lock is not None:
            lock.release()


def print_report(sweep_dir: Path, *, backfill: bool = True, runs: dict[str, str] | None = None) -> None:
    """The Pareto table (knobs that vary, mAP, latency, size), the report files and the MLflow UI command."""
    from orchestrator.console import stdout, table
    from orchestrator.pareto import kd_against_baseline, kd_label, knob_columns
    from orchestrator.reports import NOISY_LEGEND, any_noisy, latency_cell
    from orchestrator.results import load_records
    from orchestrator.searcher import dashboard_command, repeated_proposals
    from orchestrator.students import students_trained
    from orchestrator.sweep import write_report
    from orchestrator.sweep_state import read_state, stored_config
    from orchestrator.thesis_tables import quantization_table
    from orchestrator.tracking.deadline import END_BUDGET_S, MlflowDeadline
    from orchestrator.tracking.ui import ui_hint

    state = read_state(sweep_dir)
    cfg = stored_config(sweep_dir)
    records = load_records(sweep_dir)
    if runs is None:  # at most END_BUDGET_S for MLflow: a hung tracking server cannot hold `report` either
        runs = MlflowDeadline(END_BUDGET_S).call(
            lambda: sync_mlflow(sweep_dir, state, cfg, records, backfill=backfill), "syncing the sweep's runs", {})
    on_front, files = write_report(cfg, records, runs)
    shown = [k for k in knob_columns() if len({str(r.knobs.get(k)) for r in records}) > 1] or ["kd_method"]
    on_board = any(r.metrics.get("board_map50_95") is not None for r in records)
    emulated = " (EMULATED)" if any(r.metrics.get("board_emulated") for r in records) else ""
    boards = list(cfg.board.latency_keys)  # several boards: one latency column each, else latency_ms
    # operators that fall back to the CPU under board.npu_profile (a sweep from before it has none)
    npu = [f"{Path(cfg.board.npu_profile or 'NPU').stem} fallback ops"] if any(
        r.metrics.get("npu_fallback_ops") is not None for r in records) else []
    header = ["trial", *shown, "format", "mAP@.5:.95", *(["board mAP@.5:.95"] if on_board else []), "mAP@.5",
              *([f"{k.partition('@')[2]} ms{emulated}" for k in boards] or [f"latency ms{emulated}"]), "size MB", *npu]
    body = [[r.trial_id, *(r.knobs.get(k) for k in shown), r.metrics.get("format"), r.metrics.get("map50_95"),
             *([r.metrics.get("board_map50_95")] if on_board else []), r.metrics.get("map50"),
             *(latency_cell(r.metrics, k, cv_key="latency_cv" if i == 0 else None)  # the first board's CV only
               for i, k in enumerate(boards or ["latency_ms"])), r.metrics.get("size_mb"),
             *([r.metrics.get("npu_fallback_ops")] if npu else [])] for r in on_front]
    done = sum(r.complete for r in records)
    failed = sum(r.status == "failed" for r in records)
    stdout.print(table(f"Pareto front of {cfg.name}: {len(on_front)} of {done} complete trials"
                       f"{f' ({failed} failed)' if failed else ''}", header, body))
    if any_noisy(on_front):
        stdout.print(NOISY_LEGEND)
    print_failed(state, records, shown)
    stdout.print(table(f"Where the front's models are (in {sweep_dir}; `best` copies one out with a model card)",
                       ["trial", "artifact", "sha256", "MLflow run"],
                       [[r.trial_id, r.artifact or "-", (r.metrics.get("artifact_sha256") or "-")[:16],
                         runs.get(r.trial_id, "-")] for r in on_front]))
    variants = quantization_table(records)
    if variants:
        stdout.print(table("Each quantization against its float artifact (Table 5.1: same model, runtime and size)",
                           ["trial", "format", "vs float trial", "latency ratio", "Δ mAP@.5:.95 (points)", "size ratio"],
                           [[v["trial"], v["format"], f"{v['float_trial']} ({v['float_format']})",
                             f"{v['latency_ratio']:.2f}x", f"{v['map_change_points']:+.2f}", f"{v['size_ratio']:.2f}x"]
                            for v in variants]))
    duels = kd_against_baseline(records)
    if duels:
        stdout.print(table("Best KD trial against the best baseline trial, per format (one trial each: see "
                           "bench/kd_methods.py for paired seeds)",
                           ["format", "baseline trial", "mAP@.5:.95", "train s", "KD trial", "method",
                            "mAP@.5:.95", "train s", "Δ (points)"],
                           [[d["format"], d["baseline"].trial_id, d["baseline"].metrics["map50_95"],
                             d["baseline"].metrics.get("train_s"), d["kd"].trial_id, kd_label(d["kd"]),
                             d["kd"].metrics["map50_95"], d["kd"].metrics.get("train_s"),
                             f"{d['difference'] * 100:+.2f}"] for d in duels]))
    trained, artifacts = students_trained(records)
    if artifacts:
        stdout.print(f"trained {trained} student{'s' * (trained != 1)} for {artifacts} artifact{'s' * (artifacts != 1)}"
                     f" (a student is trained once for every artifact made of it: orchestrator/students.py)")
    repeats, exhausted_after = repeated_proposals(cfg, sweep_dir)
    if repeats:
        stdout.print(f"{repeats} proposal(s) of the searcher repeated a configuration already trained (or training): "
                     "skipped, not trained again")
    if exhausted_after is not None:
        stdout.print(f"the search space ran out of new configurations after {exhausted_after} of "
                     f"{cfg.searcher.trials} trials")
    stdout.print(f"report files: {', '.join(str(f) for f in files)}")
    # soft_wrap: a long store path must not break the command over two lines (it is meant to be pasted)
    stdout.print(ui_hint(state["tracking_uri"], state["experiment_id"]), soft_wrap=True, markup=False)
    stdout.print(f"Optuna dashboard (the searcher's study): {dashboard_command(sweep_dir, cfg.searcher.storage)}\n  then open "
                 f"http://127.0.0.1:8080", soft_wrap=True, markup=False)


def print_failed(state: dict, records, shown: list[str]) -> None:
    """The failed trials, each with the stage it reached and its error, and the command that retries them."""
    from orchestrator.console import stdout, table

    failed = [r for r in records if r.status == "failed"]
    if not failed:
        return
    stdout.print(table(f"Failed trials ({len(failed)})", ["trial", *shown, "stage", "error"],
                       [[r.trial_id, *(r.knobs.get(k) for k in shown), r.metrics.get("stage") or "-", r.error or "-"]
                        for r in failed]))
    retry = shlex.join(["python", "-m", "orchestrator", "sweep", str(state["source"]), "--resume", "--retry-failed"])
    stdout.print(f"run them again (a trained student is not trained again): {retry}", soft_wrap=True, markup=False)


def run_report(args: argparse.Namespace) -> int:
    print_report(sweep_dir_of(args.sweep))
    return 0
