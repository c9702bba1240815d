"""Does the board actor measure what the model costs? Two checks, printed as a table.

1. Overhead: the actor's median (a Ray worker process, the full measurement path) next to a
   bare in-process loop with the same runtime, threads, input and protocol. Target: within 3 %.
2. Repeatability: the CV of the medians of N uncached (refreshed) actor measurements of the
   same model. Target: <= 3 %.

Actor and bare loop alternate, so slow drift (heat, other load) hits both alike. By default it
starts a local Ray and times on an emulated board on this machine; `--address HEAD:PORT
--board NAME` times on a real board instead (the bare loop then runs here, so compare only
on an emulated board). Run: `.venv/bin/python bench/board_latency.py [--model m.onnx]`.
"""
from __future__ import annotations

import argparse
import os
import secrets
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import ray  # noqa: E402

from device_actors.client import connect_board  # noqa: E402
from device_actors.measure import camera_frame, sniff_runtime  # noqa: E402
from device_actors.naming import NAMESPACE  # noqa: E402
from device_actors.runtimes import RuntimeOptions, get_runtime, runtime_for  # noqa: E402
from device_actors.timing import TimingProtocol, time_call  # noqa: E402
from device_actors.toy_model import toy_detector_onnx  # noqa: E402
from detection.letterbox import letterbox, to_input  # noqa: E402


def bare_loop_median(model: bytes, runtime: str, options: RuntimeOptions, protocol: TimingProtocol) -> float:
    """What the actor does for inference, minus Ray: load, first run, warm-up, timed runs."""
    session = get_runtime(runtime).load(model, options)
    height, width = session.input_hw
    image = to_input(letterbox(camera_frame((480, 640)), max(height, width))[0])[:, :, :height, :width].copy()
    session.run(image)
    stats, _ = time_call(lambda: session.run(image), protocol)
    return stats.median_ms


def cv(values: list[float]) -> float:
    return statistics.pstdev(values) / statistics.fmean(values)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", type=Path, default=None, help=".onnx/.tflite (default: a synthetic 320 px detector)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--min-runs", type=int, default=50)
    p.add_argument("--min-seconds", type=float, default=2.0)
    p.add_argument("--address", default=None, help="a cluster HEAD:PORT (default: a new local Ray)")
    p.add_argument("--board", default="bench", help="board name (emulated when the cluster has none)")
    args = p.parse_args()

    if args.model:
        model, runtime = args.model.read_bytes(), runtime_for(args.model.name).name
    else:
        model = toy_detector_onnx(320, width=24, depth=3)
        runtime = sniff_runtime(model)
    options = RuntimeOptions(threads=args.threads)
    protocol = TimingProtocol(warmup_runs=args.warmup, min_runs=args.min_runs, min_seconds=args.min_seconds)

    if args.address is None and not os.environ.get("RAY_AUTH_TOKEN"):
        os.environ["RAY_AUTH_TOKEN"] = secrets.token_hex(16)  # a throwaway local cluster: no ~/.ray/auth_token
    ray.init(address=args.address or "local", namespace=NAMESPACE, num_cpus=None if args.address else 1,
             include_dashboard=False, logging_level="WARNING", log_to_driver=False)
    try:
        with tempfile.TemporaryDirectory(prefix="edgesweep-bench-") as cache:
            board = connect_board(args.board, cache_dir=cache)
            rows = []
            for i in range(args.repeats):
                report = board.measure(model, runtime=runtime, options=options, protocol=protocol, refresh=True)
                bare = bare_loop_median(model, runtime, options, protocol)
                rows.append((report.median_ms, bare, report.cv))
                print(f"repeat {i + 1}: actor {report.median_ms:8.3f} ms (runs {report.runs}, run CV {report.cv:6.1%})"
                      f"   bare loop {bare:8.3f} ms", flush=True)
    finally:
        ray.shutdown()

    actor = [r[0] for r in rows]
    bare = [r[1] for r in rows]
    diff = statistics.median(actor) / statistics.median(bare) - 1
    print(f"\nmodel: {args.model or 'synthetic detector 320 px'} ({len(model) / 1e6:.2f} MB), runtime {runtime}, "
          f"threads {args.threads}, board {args.board} ({'emulated' if report.emulated else 'real'}), "
          f"{time.strftime('%Y-%m-%d %H:%M')}, load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
    print(f"{'':34}{'actor':>10}{'bare loop':>12}")
    print(f"{'median of medians (ms)':34}{statistics.median(actor):10.3f}{statistics.median(bare):12.3f}")
    print(f"{'CV of the ' + str(len(rows)) + ' medians':34}{cv(actor):10.2%}{cv(bare):12.2%}")
    print(f"actor vs bare loop: {diff:+.2%} (target within 3 %): {'OK' if abs(diff) <= 0.03 else 'MISSED'}")
    print(f"actor repeatability: CV {cv(actor):.2%} (target <= 3 %): {'OK' if cv(actor) <= 0.03 else 'MISSED'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
