"""A trainer slot's process trains trial after trial (on CPUs Ray keeps task workers alive; on a GPU
the slot is a long-lived trainer actor; either way the splits and their decoded images are read
once per process): a trial trained there after another one must come out bit-identical to the
same trial trained in a fresh process.

Real components: a local Ray, the sweep's own training stage (`train_student_stream`) on the
generated default data set; only the schedule is tiny (2 epochs, 48 images at 64 px).
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import ray
import torch

from orchestrator.config import parse_config
from orchestrator.stages import TrainedModel, TrainSpec, train_student_stream, train_teacher
from orchestrator.trainers import StageTask, start_train_slots
from trainables.hyper import TrainKnobs
from trainables.kd.registry import distilling_methods
from trainables.checkpoint import load_checkpoint

CONFIG = {
    "name": "reuse",
    "data": {"source": "default", "synth": {"train": 64, "val": 16, "size": 64, "seed": 0},
             "train_subset": 48, "val_subset": 16},
    "training": {"batch_size": 16, "val_every": 2, "workers": 0},
    "search": {"seed": {"choice": [0, 1]}},
    "fixed": {"epochs": 2, "img_size": 64, "kd_method": "none"},
    "searcher": {"algorithm": "random", "trials": 2},
}


def _train(knobs: dict, spec: TrainSpec, teacher: TrainedModel | None = None) -> tuple[int, tuple[int, int], bytes]:
    """(worker pid, ids of the split objects the stage trained on, final checkpoint)."""
    student = TrainKnobs.from_knobs(knobs)
    final = [u for u in train_student_stream(student, spec, teacher, None) if isinstance(u, TrainedModel)][0]
    return os.getpid(), tuple(id(split) for split in spec.datasets()), final.checkpoint


def _train_streamed(knobs: dict, spec: TrainSpec):
    """`_train` as a training stream's one item, for a trainer slot."""
    yield _train(knobs, spec)


train_in_worker = ray.remote(num_cpus=1, max_retries=0)(_train)
train_in_fresh_worker = ray.remote(num_cpus=1, max_retries=0, max_calls=1)(_train)  # its worker exits after it


def _weights(checkpoint: bytes, path: Path) -> dict[str, torch.Tensor]:
    path.write_bytes(checkpoint)
    ckpt = load_checkpoint(path)
    return {f"{part}.{k}": v for part in ("model", "raw_model") for k, v in ckpt[part].items()}


@pytest.fixture(scope="module")
def one_trainer_slot(tmp_path_factory):
    if ray.is_initialized():
        ray.shutdown()
    # One CPU slot: one worker trains in turn. The GPU is declared only (none exists here): no task touches CUDA.
    ray.init(num_cpus=1, num_gpus=1, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.mark.parametrize("slot", ["cpu-task", "gpu-trainer"])
def test_a_reused_trainer_trains_a_trial_bit_identically_to_a_fresh_one(one_trainer_slot, tmp_path, slot):
    cfg = parse_config(CONFIG, base_dir=tmp_path)
    spec = TrainSpec(data=cfg.data, seed=cfg.seed, training=cfg.training, torch_threads=1)
    trial_b = cfg.search.complete({"seed": 0})
    trial_a = cfg.search.complete({"seed": 1})

    fresh_pid, _, fresh = ray.get(train_in_fresh_worker.remote(trial_b, spec))
    if slot == "cpu-task":
        pid_a, splits_a, _ = ray.get(train_in_worker.remote(trial_a, spec))
        pid_b, splits_b, reused = ray.get(train_in_worker.remote(trial_b, spec))
    else:  # the slot's trainer actor holds the (declared) GPU; the CPU stays free for the tasks
        slots = start_train_slots({"num_cpus": 0, "num_gpus": 1, "scheduling_strategy": "DEFAULT"})
        ((pid_a, splits_a, _),) = slots.stream(_train_streamed, trial_a, spec)
        ((pid_b, splits_b, reused),) = slots.stream(_train_streamed, trial_b, spec)
        ray.kill(slots.pool)  # its trainer goes with it, and the GPU back to the next test

    assert pid_a == pid_b != fresh_pid, "the second trial should train in the first one's (warm) process"
    assert splits_a == splits_b, "the warm process should train on the splits it read for the first trial"
    fresh_w, reused_w = _weights(fresh, tmp_path / "fresh.pt"), _weights(reused, tmp_path / "reused.pt")
    assert fresh_w.keys() == reused_w.keys()
    different = [k for k in fresh_w if not torch.equal(fresh_w[k], reused_w[k])]
    assert not different, f"weights differ between a fresh and a reused trainer: {different[:5]}"


@pytest.mark.parametrize("method", distilling_methods())
def test_a_distilled_trial_in_a_reused_trainer_equals_the_same_trial_in_a_fresh_one(one_trainer_slot, tmp_path,
                                                                                    monkeypatch, method):
    """Every registered KD method: its adapters are drawn from the trial's seed, not from whatever the
    warm process drew before (a 1-epoch YOLO-n teacher: what matters is that both runs get the same one)."""
    monkeypatch.setenv("EDGESWEEP_CACHE", str(tmp_path / "cache"))
    cfg = parse_config(CONFIG, base_dir=tmp_path)
    spec = TrainSpec(data=cfg.data, seed=cfg.seed, training=cfg.training, torch_threads=1, device="cpu")
    teacher = train_teacher("n", 1, 64, spec)
    trial_b = {**cfg.search.complete({"seed": 0}), "kd_method": method}
    trial_a = cfg.search.complete({"seed": 1})  # a baseline first: the warm process has drawn other numbers

    _, _, fresh = ray.get(train_in_fresh_worker.remote(trial_b, spec, teacher))
    pid_a, _, _ = ray.get(train_in_worker.remote(trial_a, spec))
    pid_b, _, reused = ray.get(train_in_worker.remote(trial_b, spec, teacher))
    assert pid_a == pid_b
    fresh_w, reused_w = _weights(fresh, tmp_path / "fresh.pt"), _weights(reused, tmp_path / "reused.pt")
    different = [k for k in fresh_w if not torch.equal(fresh_w[k], reused_w[k])]
    assert not different, f"{method}: weights differ between a fresh and a reused trainer: {different[:5]}"


def _pid() -> int:
    return os.getpid()


def test_a_stage_task_given_a_gpu_runs_in_a_process_of_its_own(one_trainer_slot):
    """CPU tasks share Ray's warm worker; a GPU task never inherits one (nor its CUDA context and
    device), as Ray intends for GPU functions. The GPU is a declared resource, not a real one."""
    task = StageTask(_pid)
    on_cpu = [ray.get(task.options(num_cpus=1).remote()) for _ in range(2)]
    on_gpu = [ray.get(task.options(num_cpus=1, num_gpus=1).remote()) for _ in range(2)]
    assert on_cpu[0] == on_cpu[1], "CPU stage tasks should reuse the warm worker"
    assert len(set(on_gpu)) == 2 and not set(on_gpu) & set(on_cpu), \
        f"a GPU stage task ran in a reused process (cpu pids {on_cpu}, gpu pids {on_gpu})"
