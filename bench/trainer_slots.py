"""What does a trial pay to start training on a GPU slot? A process per trial against a trainer actor.

The same short real training (the sweep's `train_student_stream`, YOLO-n, 1 epoch on the demo's
data: 1000 generated training images at 128 px, 150 val images) runs N times in each way a slot
can be served:

- `process per trial`: a Ray task given a GPU through `.options()`, which runs in a fresh worker
  process (`max_calls=1`, how the sweep ran GPU trainings before the trainer pool);
- `trainer actor`: the sweep's `TrainSlots` with a GPU, a long-lived trainer lent by the pool;
- `CPU task`: a Ray task on CPUs in Ray's warm workers (how CPU slots run), for reference.

The GPU is a MOCK: the local Ray declares one, none exists, so the training computes on the CPU and
no CUDA context is created (on a real GPU a fresh process also pays CUDA's start, which the trainer
actor pays once). Printed per way: the overhead of each training, its wall time (from asking for
the slot to the last update) minus the seconds its epochs report, for the first training and the
median of the others.

Run: `.venv/bin/python bench/trainer_slots.py [--trainings 5] [--train 1000]`. On a machine with a
real GPU, `bench/gpu_check.py pool-overhead` runs the same ways (`measure(mock_gpu=False)`).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import ray  # noqa: E402

from orchestrator.config import parse_config  # noqa: E402
from orchestrator.stages import EpochUpdate, TrainSpec, train_student_stream  # noqa: E402
from orchestrator.sweep import init_ray  # noqa: E402
from orchestrator.trainers import _stream_task, start_train_slots  # noqa: E402
from trainables.hyper import TrainKnobs  # noqa: E402

GPU_SLOT = {"num_cpus": 0, "num_gpus": 1, "scheduling_strategy": "DEFAULT"}
PROCESS_PER_TRIAL = "process per trial (GPU task, max_calls=1)"
TRAINER_ACTOR = "trainer actor (GPU slot of the pool)"
CPU_TASK = "CPU task (warm worker)"


def _config(train: int, val: int = 150, synth: dict | None = None) -> dict:
    data = {"source": "default", "train_subset": train, "val_subset": val, **({"synth": synth} if synth else {})}
    return {"name": "slots", "data": data,
            "search": {"seed": {"choice": [0]}}, "searcher": {"algorithm": "random", "trials": 1},
            "fixed": {"epochs": 1, "img_size": 128, "kd_method": "none"}}


def overhead(items) -> tuple[float, float]:
    """(wall seconds, wall minus the epochs' own seconds) of one training's stream of updates."""
    started = time.perf_counter()
    epochs = sum(item.seconds for item in items if isinstance(item, EpochUpdate))
    wall = time.perf_counter() - started
    return wall, wall - epochs


def measure(trainings: int, *, train: int = 1000, val: int = 150, synth: dict | None = None, mock_gpu: bool = True,
            on_training: Callable[[str, int, float, float], None] | None = None,
            deadline: float | None = None) -> dict:
    """Each way's figures: its `runs` [(wall, overhead), ...], the `first`, and the median wall and
    overhead of the others. Starts a local Ray and shuts it down: with `mock_gpu` one declared GPU
    on 2 CPUs (the training computes on the CPU, no CUDA); else the machine's CPUs and GPUs as Ray
    finds them, which must include a GPU. `on_training(way, number, wall, overhead)` hears of each
    training as it ends; past `deadline` (a `time.perf_counter()` value) no training starts."""
    cfg = parse_config(_config(train, val, synth))
    spec = TrainSpec(data=cfg.data, seed=cfg.seed, training=cfg.training, torch_threads=1)
    knobs = TrainKnobs.from_knobs(cfg.search.complete({"seed": 0}))
    if mock_gpu:
        init_ray(None, num_cpus=2, num_gpus=1)
    else:
        # Ray 2.60 leaves CUDA_VISIBLE_DEVICES alone in a task given no GPU, so the CPU way would find the
        # GPU (the trainer's device "auto") and train there; with this, a zero-GPU worker sees none.
        os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "1")
        init_ray(None)
        if ray.cluster_resources().get("GPU", 0) < 1:
            ray.shutdown()
            raise RuntimeError("Ray found no GPU on this machine (ray.cluster_resources() has no 'GPU')")
    try:
        slots = start_train_slots(GPU_SLOT)
        ways = {
            PROCESS_PER_TRIAL:
                lambda: (ray.get(ref) for ref in _stream_task.options(**GPU_SLOT).remote(train_student_stream, knobs,
                                                                                           spec, None, None)),
            TRAINER_ACTOR:
                lambda: slots.stream(train_student_stream, knobs, spec, None, None),
            CPU_TASK:
                lambda: (ray.get(ref) for ref in _stream_task.options(num_cpus=1).remote(train_student_stream, knobs,
                                                                                          spec, None, None)),
        }
        figures = {}
        for name, start in ways.items():
            runs = []
            for number in range(1, trainings + 1):
                if deadline is not None and time.perf_counter() > deadline:
                    break
                runs.append(overhead(start()))
                if on_training is not None:
                    on_training(name, number, *runs[-1])
            if not runs:
                continue
            rest = runs[1:] or runs
            figures[name] = {"first": runs[0], "median_wall": statistics.median(w for w, _ in rest),
                             "median_overhead": statistics.median(o for _, o in rest), "runs": runs}
        return figures
    finally:
        ray.shutdown()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trainings", type=int, default=5, help="trainings per way")
    parser.add_argument("--train", type=int, default=1000, help="training images (the demo's 1000)")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args()

    print(f"local Ray with one MOCK GPU (declared only: training computes on this CPU, no CUDA); "
          f"{args.trainings} trainings per way of YOLO-n, 1 epoch, {args.train} images at 128 px")
    figures = measure(args.trainings, train=args.train)
    print(f"\n{'way':45} {'first: wall, overhead s':>25} {'then (median): wall, overhead s':>33}")
    for name, f in figures.items():
        print(f"{name:45} {f['first'][0]:12.2f} {f['first'][1]:12.2f} {f['median_wall']:16.2f} "
              f"{f['median_overhead']:16.2f}")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
