"""Teachers train in parallel, each on its own `train` slot, and starting them waits for none:
on CPU slots (Ray tasks) and on GPU slots (the trainer pool's actors; the two GPUs are declared
to Ray only, none exists here, so the teachers train on the CPU)."""
from __future__ import annotations

import time

import pytest
import ray

from orchestrator.config import parse_config
from orchestrator.sweep import _task_options, _train_spec, init_ray, start_teachers
from orchestrator.trainers import start_train_slots


@pytest.fixture(params=[0, 1], ids=["cpu-slots", "gpu-slots"])
def gpus_per_slot(tmp_path, monkeypatch, request):
    monkeypatch.setenv("EDGESWEEP_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    init_ray(None, num_cpus=2, num_gpus=2 * request.param)
    yield request.param
    ray.shutdown()


def test_every_teacher_starts_at_once_and_the_driver_does_not_wait_for_them(tmp_path, gpus_per_slot):
    cfg = parse_config({
        "name": "teachers", "output_dir": str(tmp_path / "runs"),
        "data": {"source": "default", "synth": {"train": 24, "val": 8, "size": 64, "seed": 0}},
        "teachers": {"a": {"model": "n", "epochs": 4}, "b": {"model": "n", "epochs": 5}},
        "training": {"batch_size": 8, "nominal_batch": 8, "warmup_epochs": 0},
        "search": {"teacher": {"choice": ["a", "b"]}},
        "fixed": {"kd_method": "output", "epochs": 1, "img_size": 64},
        "searcher": {"algorithm": "random", "trials": 2},
        "resources": {"train": {"cpu": 1, "gpu": gpus_per_slot}}}, base_dir=tmp_path)
    started = time.monotonic()
    refs = start_teachers(cfg, _train_spec(cfg, ""), start_train_slots(_task_options(cfg.resources.train)))
    assert time.monotonic() - started < 5 and set(refs) == {("a", 64), ("b", 64)}
    assert ray.wait(list(refs.values()), num_returns=2, timeout=0)[0] == []  # still training

    # a teacher in training is a cache entry without complete.json (trainables/kd/teachers.py)
    entries = tmp_path / "cache" / "teachers"
    most_at_once, deadline = 0, time.monotonic() + 180
    while time.monotonic() < deadline and len(ray.wait(list(refs.values()), num_returns=2, timeout=0)[0]) < 2:
        training = [e for e in entries.glob("yolon-*") if not (e / "complete.json").exists()]
        most_at_once = max(most_at_once, len(training))
        time.sleep(0.1)
    teachers = ray.get(list(refs.values()))
    assert most_at_once == 2, "the two teachers never trained at the same time"
    assert all(t.checkpoint and t.metrics["map50_95"] >= 0 for t in teachers)
