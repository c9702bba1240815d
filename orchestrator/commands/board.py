"""`board`: join a board to the cluster, list boards, time one artifact on a board.

`board join` runs on the board itself, which has no torch and no rich (`pip install '.[board]'`),
so this module imports only the standard library at the top and the rest lazily.
"""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path


def add_parser(sub) -> None:
    from device_actors.runtimes import RUNTIMES  # numpy only: the board has it
    from device_actors.timing import TimingProtocol

    protocol = TimingProtocol()
    p = sub.add_parser("board", help="the latency board: join it to the cluster, list boards, time a model")
    bsub = p.add_subparsers(dest="board_command", required=True, metavar="ACTION")

    j = bsub.add_parser("join", help="run on the board: start its Ray node as board NAME of the cluster at HEAD:PORT")
    j.add_argument("--address", required=True, help="the head's GCS address HOST:PORT (ray start --head --port)")
    j.add_argument("--name", required=True, help="board name, e.g. imx8mp (resource board_NAME, actor board:NAME)")
    j.add_argument("--token-file", type=Path, default=None,
                   help="the cluster's auth token (default: $RAY_AUTH_TOKEN, then ~/.ray/auth_token)")
    j.add_argument("--object-store-memory", type=int, default=None, help="bytes; cap it on a small board")
    j.add_argument("--node-ip-address", default=None, help="this board's address as the head sees it")
    j.add_argument("--temp-dir", default=None, help="Ray's temporary directory on this board")
    j.add_argument("--block", action="store_true", help="stay in the foreground (systemd, containers)")
    j.add_argument("--ray-arg", action="append", default=[], metavar="ARG",
                   help="one more argument for `ray start`, passed as is (repeatable), "
                        "e.g. --ray-arg=--min-worker-port=20000")
    j.set_defaults(run=run_join)

    s = bsub.add_parser("status", help="list boards (alive or not), their queue and last results")
    add_cluster_args(s, default_address="auto")
    s.add_argument("--json", action="store_true", help="print JSON instead of tables")
    s.set_defaults(run=run_status)

    b = bsub.add_parser("bench", help="time one .onnx/.tflite artifact on a board and print the report")
    b.add_argument("model", type=Path)
    b.add_argument("--board", required=True, help="board name")
    b.add_argument("--runtime", choices=RUNTIMES.names(), default=None, help="default: by file suffix")
    add_runtime_args(b)
    b.add_argument("--warmup", type=int, default=protocol.warmup_runs)
    b.add_argument("--min-runs", type=int, default=protocol.min_runs)
    b.add_argument("--min-seconds", type=float, default=protocol.min_seconds)
    b.add_argument("--cooldown", type=float, default=protocol.cooldown_seconds, help="seconds of rest before timing")
    b.add_argument("--emulate", action="store_true", help="use an emulated board on this machine if NAME is missing")
    b.add_argument("--timeout", type=float, default=3600.0, help="seconds to wait, queue included")
    b.add_argument("--score", metavar="DATA", default=None,
                   help="also compute the model's COCO mAP on the board, on the val split of DATA ('default' "
                        "or a COCO-format directory), through the same runtime, threads and delegate")
    b.add_argument("--val-subset", type=int, default=None, help="with --score: a seeded subset of val images")
    add_cluster_args(b, default_address=None)
    b.add_argument("--json", action="store_true", help="print the report as JSON")
    b.set_defaults(run=run_bench)


def add_runtime_args(p: argparse.ArgumentParser) -> None:
    """How the runtime runs an artifact (`runtime_options` reads them back)."""
    from device_actors.runtimes import RuntimeOptions

    p.add_argument("--threads", type=int, default=RuntimeOptions.threads, help="the runtime's threads")
    p.add_argument("--providers", default="CPUExecutionProvider",
                   help="onnxruntime execution providers, comma-separated")
    p.add_argument("--delegate", default=None, help="TFLite external delegate, e.g. /usr/lib/libvx_delegate.so")
    p.add_argument("--delegate-option", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--no-xnnpack", dest="xnnpack", action="store_false",
                   help="TFLite: run the builtin kernels without the default XNNPACK delegate")


def add_cluster_args(p: argparse.ArgumentParser, default_address: str | None) -> None:
    p.add_argument("--address", default=os.environ.get("RAY_ADDRESS", default_address),
                   help="the cluster's HEAD:PORT (default: $RAY_ADDRESS, "
                        + ("else a running local cluster)" if default_address else "else a new local Ray)"))
    p.add_argument("--token-file", type=Path, default=None,
                   help="the cluster's auth token (default: $RAY_AUTH_TOKEN, then ~/.ray/auth_token)")


def run_join(args: argparse.Namespace) -> int:
    from device_actors.join import JoinOptions, join_board

    return join_board(JoinOptions(address=args.address, name=args.name, token_file=args.token_file,
                                  object_store_memory=args.object_store_memory, node_ip_address=args.node_ip_address,
                                  temp_dir=args.temp_dir, block=args.block, extra_ray_args=tuple(args.ray_arg)))


def connect_cluster(args: argparse.Namespace) -> None:
    """ray.init as a driver; the token goes into this process's environment, where Ray reads it."""
    from common.errors import UserError
    from device_actors.join import resolve_auth_token
    from device_actors.naming import NAMESPACE

    token = resolve_auth_token(args.token_file, os.environ, Path.home())
    if token is not None:
        os.environ.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=token.value)
    import ray

    if token is not None:
        from orchestrator._ray_internals import reload_auth_config

        reload_auth_config()  # Ray read the auth mode when it was imported, perhaps before the token was set
    try:
        ray.init(address=args.address or "local", namespace=NAMESPACE, logging_level="WARNING", log_to_driver=False)
    except ConnectionError as e:
        raise UserError(f"no Ray cluster at {args.address or 'this machine'} ({e}); pass --address HEAD:PORT") from None


def runtime_options(args: argparse.Namespace):
    from device_actors.runtimes import RuntimeOptions
    from orchestrator.errors import ConfigError

    delegate_options = {}
    for item in args.delegate_option:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--delegate-option {item!r} is not KEY=VALUE")
        delegate_options[key] = value
    if args.threads < 1:
        raise ConfigError(f"--threads must be >= 1, got {args.threads}")
    return RuntimeOptions(threads=args.threads, providers=tuple(p for p in args.providers.split(",") if p),
                          delegate=args.delegate, delegate_options=delegate_options, xnnpack=args.xnnpack)


def run_bench(args: argparse.Namespace) -> int:
    import ray

    from device_actors.client import connect_board
    from device_actors.timing import TimingProtocol

    if not args.model.is_file():
        raise FileNotFoundError(f"model {args.model} does not exist")
    options = runtime_options(args)
    protocol = TimingProtocol(warmup_runs=args.warmup, min_runs=args.min_runs, min_seconds=args.min_seconds,
                              cooldown_seconds=args.cooldown)
    split = _packed_val(args) if args.score else None  # a bad data path fails before Ray starts
    connect_cluster(args)
    try:
        board = connect_board(args.board, emulate_if_missing=args.emulate)
        report = board.measure(args.model, runtime=args.runtime, options=options, protocol=protocol,
                               timeout_s=args.timeout)
        scores = board.score(args.model, split, runtime=report.runtime, options=options,
                             timeout_s=args.timeout) if split is not None else None
    finally:
        ray.shutdown()
    if args.json:
        print(json.dumps({**report.to_dict(), **({"scores": scores} if scores else {})}, indent=2))
        return 0
    from orchestrator.console import console, stdout, table

    emulated = f" (EMULATED: {report.emulation})" if report.emulated else ""
    rows = [["board", f"{report.board}{emulated}"], ["node", report.node_id[:16]],
            ["cached", report.cached], ["runtime", f"{report.runtime} {report.runtime_version}"],
            ["threads", report.threads], ["delegate", report.delegate or "-"],
            ["delegated ops (partitions)", "-" if report.delegated_ops is None else
             f"{report.delegated_ops} of {report.ops_in_graph} ({report.delegate_partitions})"],
            ["input", "x".join(map(str, report.input_hw))], ["runs", report.runs], ["median ms", report.median_ms],
            ["mean ms", report.mean_ms], ["p90 ms", report.p90_ms],
            ["p99 ms", report.p99_ms], ["std ms", report.std_ms], ["CV", f"{report.cv:.2%}"], ["FPS", report.fps],
            ["first run ms", report.first_run_ms], ["load ms", report.load_ms],
            [f"pre-process ms ({report.camera_hw[1]}x{report.camera_hw[0]} frame)", report.preprocess_ms],
            ["post-process ms", report.postprocess_ms],
            ["peak RSS increase MB", "-" if report.peak_rss_increase_mb is None else report.peak_rss_increase_mb],
            ["CPU", f"{report.facts.get('cpu_model')} x{report.facts.get('cores')}"],
            ["int8-relevant SIMD", report.facts.get("simd") or "-"],
            ["governor", report.facts.get("governor") or "-"],
            ["temperature degC", _span(report.temperature_start_c, report.temperature_end_c)],
            ["frequency MHz", _span(report.frequency_start_mhz, report.frequency_end_mhz)]]
    if scores is not None:
        rows += [[f"mAP@.5:.95 on the board ({int(scores['images'])} val images)", scores["map50_95"]],
                 ["mAP@.5 on the board", scores["map50"]]]
    stdout.print(table(f"{args.model.name} on board {report.board}", ["name", "value"], rows))
    for warning in report.warnings:
        console.print(f"[yellow]warning:[/yellow] {warning}")
    return 0


def _packed_val(args: argparse.Namespace):
    """The val split of --score, packed to travel to the board."""
    from detection.coco import CocoDataset
    from detection.packed import PackedSplit
    from orchestrator.datasets import embedded_default, splits_in

    root = embedded_default() if args.score == "default" else Path(args.score)
    return PackedSplit.of(CocoDataset(splits_in(root, val_subset=args.val_subset).val))


def _span(start: float | None, end: float | None) -> str:
    return "-" if start is None or end is None else f"{start:.1f} -> {end:.1f}"


def run_status(args: argparse.Namespace) -> int:
    import dataclasses
    import time

    import ray

    from device_actors.overview import board_overviews

    connect_cluster(args)
    try:
        overviews = board_overviews()
    finally:
        ray.shutdown()
    if args.json:
        print(json.dumps([dataclasses.asdict(o) for o in overviews], indent=2, default=str))
        return 0
    from orchestrator.console import console, stdout, table

    if not overviews:
        console.print("no boards in the cluster; join one with `python -m orchestrator board join --address "
                      "HEAD:PORT --name NAME` on the board")
        return 0
    now = time.time()
    rows, recent_rows, notes = [], [], []
    for o in overviews:
        st = o.status
        if st is None:
            rows.append([o.name, "yes" if o.alive else "NO", o.node_id[:8], "-", "-", "-", "-"])
            notes.append(f"{o.name}: {o.note}")
            continue
        q = st.queue
        running = f"{now - (q.running_since or now):.0f} s" if q.running else "idle"
        rows.append([o.name, "yes", o.node_id[:8], len(q.waiting), running, st.measured,
                     f"{st.cache_hits}/{st.cache_entries}"])
        notes.append(f"{o.name}: {st.facts.get('cpu_model')} x{st.facts.get('cores')} at {o.address}, "
                     f"governor {st.facts.get('governor') or '-'}"
                     + (f"; running {q.running.what}" if q.running else ""))
        for r in st.recent:
            recent_rows.append([o.name, r.artifact_sha256[:12], r.runtime, r.threads, r.median_ms,
                                "yes" if r.cached else "no", time.strftime("%H:%M", time.localtime(r.ended_at))])
    stdout.print(table("boards", ["name", "alive", "node", "waiting", "running", "timed", "hits/cached"], rows))
    for note in notes:
        stdout.print(note)
    if recent_rows:
        stdout.print(table("last results", ["name", "artifact", "runtime", "threads", "median ms", "cached", "at"],
                           recent_rows))
    return 0
