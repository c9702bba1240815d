"""Does the quiet-cores fence (device_actors.quiet) make latencies beside training quiet? One table.

The board times one ONNX detector on this machine (in-process, the full `measure_artifact` path)
under three conditions, interleaved round by round so slow drift and other load hit all alike:
  idle      no training here
  training  a real YOLO-n training (trainables.fit, synthetic data) in a second process, fence off
            (board.timing.quiet_wait_s 0: the board does not ask)
  quiet     the same training, fence on: it parks at a batch boundary while the board times
It prints each condition's medians, p90s and CVs over the rounds, and the quiet flags the reports
carry. Run: `.venv/bin/python bench/quiet_cores.py [--rounds 3] [--threads 2]` (about a minute a
round on a 2-core machine).
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from device_actors.measure import measure_artifact, sha256_hex  # noqa: E402
from device_actors.quiet import QUIET_DIR_ENV  # noqa: E402
from device_actors.report import MeasureRequest  # noqa: E402
from device_actors.runtimes import RuntimeOptions  # noqa: E402
from device_actors.timing import TimingProtocol  # noqa: E402
from device_actors.toy_model import toy_detector_onnx  # noqa: E402

TRAINER = textwrap.dedent('''
    import sys
    from pathlib import Path
    from detection.coco import CocoDataset, SplitSpec
    from detection.synth import SynthConfig, generate
    from device_actors.quiet import Trainer
    from trainables.hyper import TrainConfig
    from trainables.models.yolo import ModelSpec
    from trainables.train import fit

    work, threads = Path(sys.argv[1]), int(sys.argv[2])
    generate(work / "data", train=64, val=8, seed=0, config=SynthConfig(size=128))
    train = CocoDataset(SplitSpec(work / "data" / "train", work / "data" / "instances_train.json"))
    cfg = TrainConfig(epochs=1000, img_size=128, batch_size=8, torch_threads=threads, workers=0)
    with Trainer() as fence:
        (work / "training").touch()
        fit(ModelSpec("n", train.num_classes), train, None, cfg, work / "run", on_batch=fence.at_batch_end)
''')


def start_training(work: Path, threads: int) -> subprocess.Popen:
    work.mkdir(parents=True, exist_ok=True)
    process = subprocess.Popen([sys.executable, "-c", TRAINER, str(work), str(threads)], cwd=REPO,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while not (work / "training").exists():
        if process.poll() is not None:
            raise SystemExit(f"the training process exited with {process.returncode}")
        time.sleep(0.1)
    time.sleep(5.0)  # past its first batches
    return process


def stop(process: subprocess.Popen) -> None:
    process.terminate()
    process.wait(timeout=60)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2, help="board threads and the training's torch threads")
    parser.add_argument("--img-size", type=int, default=160)
    args = parser.parse_args()

    model = toy_detector_onnx(args.img_size, width=32, depth=4)
    protocol = TimingProtocol()
    options = RuntimeOptions(threads=args.threads)
    conditions = {"idle": protocol, "training": dataclasses.replace(protocol, quiet_wait_s=0.0), "quiet": protocol}
    results: dict[str, list] = {name: [] for name in conditions}
    with tempfile.TemporaryDirectory(prefix="quiet-cores-") as tmp:
        os.environ[QUIET_DIR_ENV] = str(Path(tmp) / "fence")
        for r in range(args.rounds):
            for name, proto in conditions.items():
                training = start_training(Path(tmp) / f"train-{r}-{name}", args.threads) if name != "idle" else None
                try:
                    request = MeasureRequest(sha256_hex(model), "onnxruntime", options=options, protocol=proto)
                    report = measure_artifact(model, request, board="bench", node_id="local", emulated=True)
                finally:
                    if training is not None:
                        stop(training)
                results[name].append(report)
                print(f"round {r + 1} {name:9s} median {report.median_ms:7.3f} ms  p90 {report.p90_ms:7.3f} ms  "
                      f"CV {report.cv:6.1%}  quiet {report.quiet}  paused {report.paused_trainers}  "
                      f"waited {report.quiet_wait_s:.2f} s", flush=True)
    print(f"\n{os.cpu_count()} CPUs, toy ONNX detector {args.img_size} px (width 32, depth 4), {args.threads} board "
          f"thread(s), training with {args.threads} torch thread(s); {args.rounds} round(s)")
    print(f"{'condition':10s} {'median ms (each round)':34s} {'p90/median':>11s} {'CV (each round)':28s}")
    for name, reports in results.items():
        medians = " ".join(f"{r.median_ms:7.3f}" for r in reports)
        tails = statistics.median(r.p90_ms / r.median_ms for r in reports)
        cvs = " ".join(f"{r.cv:6.1%}" for r in reports)
        print(f"{name:10s} {medians:34s} {tails:11.2f} {cvs:28s}")


if __name__ == "__main__":
    main()
