"""GPU training slots: long-lived trainer actors lent by the sweep's pool (`orchestrator.trainers`).

A real local Ray; its GPUs are declared only (none exists here: what runs on a "GPU" trainer is
plain Python). What is tested is what a GPU cluster relies on: a slot's process trains trial
after trial, every slot trains at once, a dead trial's lease and a dead trainer are taken back.
"""
from __future__ import annotations

import os
import time
from pathlib import Path
from concurrent.futures import ThreadPoolExecutor

import pytest
import ray

from orchestrator.trainers import TrainSlots, slots_in_cluster, start_train_slots

GPU = {"num_cpus": 0, "num_gpus": 1, "scheduling_strategy": "DEFAULT"}


@pytest.fixture(scope="module")
def two_gpus():
    if ray.is_initialized():
        ray.shutdown()
    ray.init(num_cpus=2, num_gpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def busy(seconds: float):
    """A training stand-in: where it ran and when."""
    start = time.time()
    time.sleep(seconds)
    yield os.getpid(), start, time.time()


def meet(rendezvous: str, parties: int, timeout_s: float = 120.0):
    """A training that waits until `parties` trainings are running at the same time (or times out)."""
    here = Path(rendezvous)
    (here / str(os.getpid())).touch()
    deadline = time.monotonic() + timeout_s
    while len(list(here.iterdir())) < parties and time.monotonic() < deadline:
        time.sleep(0.05)
    yield os.getpid(), len(list(here.iterdir()))


def crash():
    os._exit(1)
    yield  # pragma: no cover - a generator that never gets here


def _run(slots: TrainSlots, seconds: float = 0.0) -> tuple[int, float, float]:
    (ran,) = slots.stream(busy, seconds)
    return ran


def _at_once(slots: TrainSlots, seconds: float, trainings: int) -> list[tuple[int, float, float]]:
    """`trainings` trials asking for a slot at the same time, as concurrent trial processes do."""
    with ThreadPoolExecutor(trainings) as pool:
        return list(pool.map(lambda _: _run(slots, seconds), range(trainings)))


def test_the_cluster_has_a_slot_per_declared_gpu(two_gpus):
    assert slots_in_cluster({"GPU": 1}) == 2
    assert slots_in_cluster({"GPU": 0.5}) == 4
    assert slots_in_cluster({"GPU": 1, "CPU": 2}) == 1  # 2 CPUs hold one trainer that needs 2
    assert slots_in_cluster({"GPU": 0, "CPU": 0}) == 0


def test_a_gpu_slot_trains_trial_after_trial_in_one_process_and_both_slots_train_at_once(two_gpus, tmp_path):
    slots = start_train_slots(GPU)
    one_after_another = {_run(slots)[0] for _ in range(3)}
    assert len(one_after_another) == 1, "sequential trainings should reuse the idle trainer"
    assert os.getpid() not in one_after_another

    with ThreadPoolExecutor(2) as pool:
        met = list(pool.map(lambda _: list(slots.stream(meet, str(tmp_path), 2))[0], range(2)))
    (pid_a, seen_a), (pid_b, seen_b) = met
    assert pid_a != pid_b, "two trainings at once should run on two trainers"
    assert seen_a == seen_b == 2, "the two GPU slots should train at the same time"
    assert {pid_a, pid_b} >= one_after_another
    stats = ray.get(slots.pool.stats.remote())
    assert stats["started"] == 2, stats


def test_a_third_training_waits_for_a_slot_instead_of_starting_a_trainer_that_cannot_run(two_gpus):
    slots = start_train_slots(GPU)
    runs = _at_once(slots, 1.5, 3)
    assert len({pid for pid, _, _ in runs}) == 2
    starts = sorted(start for _, start, _ in runs)
    assert starts[2] - starts[0] > 1.0, "the third training should have waited for a free trainer"
    assert ray.get(slots.pool.stats.remote())["started"] == 2


def test_a_lease_its_trial_stopped_renewing_is_taken_back_and_its_trainer_replaced(two_gpus):
    slots = start_train_slots({**GPU, "num_gpus": 2}, lease_ttl_s=1.0)  # one slot: the trainer takes both GPUs
    first_pid = _run(slots)[0]
    # a trial that leased the trainer and died: nobody renews or releases the lease
    _, orphaned = ray.get(slots.pool.acquire.remote())
    started = time.monotonic()
    pid, _, _ = _run(slots)
    assert time.monotonic() - started >= 1.0, "the lease should have been held until it ran out"
    assert pid != first_pid, "the dead trial's trainer should have been killed and replaced"
    with pytest.raises(ray.exceptions.RayActorError):  # the orphan's trainer is gone, with its GPU
        ray.get(orphaned.call.remote(sum, [1]))


def test_a_renewed_lease_outlives_its_ttl(two_gpus):
    slots = start_train_slots({**GPU, "num_gpus": 2}, lease_ttl_s=1.0)  # renewed every 0.25 s
    pid, start, end = _run(slots, 3.0)
    assert end - start >= 3.0
    assert _run(slots)[0] == pid, "a renewed lease's trainer should stay the slot's trainer"
    assert ray.get(slots.pool.stats.remote()) == {"started": 1, "idle": 1, "lent": 0}


def test_a_trainer_that_died_is_dropped_and_the_next_trial_gets_a_new_one(two_gpus):
    slots = start_train_slots({**GPU, "num_gpus": 2})
    first_pid = _run(slots)[0]
    with pytest.raises(ray.exceptions.RayActorError):
        list(slots.stream(crash))
    assert _run(slots)[0] != first_pid
    assert ray.get(slots.pool.stats.remote())["started"] == 2


def test_cpu_slots_run_as_warm_ray_tasks_without_a_pool(two_gpus):
    slots = start_train_slots({"num_cpus": 1, "num_gpus": 0, "scheduling_strategy": "DEFAULT"})
    assert slots.pool is None
    assert _run(slots)[0] == _run(slots)[0] != os.getpid()
    assert ray.get(slots.call(sum, [1, 2, 3])) == 6


def test_a_sweep_on_gpu_slots_trains_every_trial_on_the_pools_trainers(tmp_path, monkeypatch):
    """The real sweep (Tune, Optuna, board actor, MLflow) with the TEST-ONLY stand-in training and
    export, on two declared GPUs: 5 trials, 3 at a time, train on at most 2 long-lived trainers."""
    from orchestrator.config import parse_config
    from orchestrator.stand_in_stages import StandInStages
    from orchestrator.sweep import Sweep, init_ray

    if ray.is_initialized():
        ray.shutdown()
    monkeypatch.setenv("EDGESWEEP_CACHE", str(tmp_path / "cache"))
    init_ray(None, num_cpus=2, num_gpus=2)
    try:
        cfg = parse_config({
            "name": "gpu-slots", "output_dir": str(tmp_path / "runs"),
            "data": {"source": "default", "synth": {"train": 8, "val": 4, "size": 64, "seed": 0},
                     "calibration_images": 4},
            "search": {"quantization": {"choice": ["fp32", "fp16", "dynamic", "int8"]}, "seed": {"choice": [0, 1]}},
            "fixed": {"epochs": 2, "img_size": 64, "kd_method": "none"},
            "searcher": {"algorithm": "random", "trials": 5, "concurrency": 3, "max_failures": 0},
            "resources": {"train": {"cpu": 0, "gpu": 1}, "export": {"cpu": 0.25}},
            "board": {"name": "local", "timing": {"warmup_runs": 1, "min_runs": 3, "min_seconds": 0.01}},
            "mlflow": {"experiment": "gpu-slots"}}, base_dir=tmp_path)
        sweep = Sweep(cfg, stages=StandInStages(train_seconds=1.0))
        sweep.prepare_teachers()
        result = sweep.run(show_progress=False)
        assert len(result.records) == 5 and all(r.complete for r in result.records)
        stats = ray.get(sweep.trainers.pool.stats.remote())
        assert 1 <= stats["started"] <= 2 and stats["lent"] == 0, stats
    finally:
        ray.shutdown()
