"""The trainer: exact resume, frozen backbone, init from a checkpoint, accumulation, schedules."""
from dataclasses import replace
from types import SimpleNamespace

import pytest
import torch

from detection.coco import CocoDataset, SplitSpec
from detection.synth import SynthConfig, generate
from trainables.checkpoint import CheckpointError, load_checkpoint
from trainables.models.yolo import ModelSpec
from trainables.hyper import TrainConfig
from trainables.train import _lr_factor, autocast_dtype, choose_optimizer, fit, select_device

TINY = TrainConfig(epochs=2, img_size=64, batch_size=4, nominal_batch=8, warmup_epochs=0.5, val_every=99,
                   torch_threads=1)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("train-data")
    generate(root, train=12, val=4, seed=5, config=SynthConfig(size=64))
    return CocoDataset(SplitSpec(root / "train", root / "instances_train.json"))


def _state(path):
    ckpt = load_checkpoint(path)
    return ckpt["raw_model"], ckpt["model"], ckpt["optimizer"], ckpt["ema_updates"]


class Interrupt(Exception):
    pass


def test_interrupted_run_resumed_from_its_checkpoint_ends_with_the_same_weights(data, tmp_path):
    spec = ModelSpec("n", data.num_classes)
    full = fit(spec, data, None, TINY, tmp_path / "full")

    def stop_after_first_epoch(result, checkpoint):
        if result.epoch == 1:
            raise Interrupt

    with pytest.raises(Interrupt):
        fit(spec, data, None, TINY, tmp_path / "resumed", on_epoch=stop_after_first_epoch)
    assert load_checkpoint(tmp_path / "resumed" / "last.pt")["epoch"] == 1
    resumed = fit(spec, data, None, TINY, tmp_path / "resumed")
    assert [h.epoch for h in resumed.history] == [1, 2]
    raw_a, ema_a, opt_a, updates_a = _state(full.checkpoint)
    raw_b, ema_b, opt_b, updates_b = _state(resumed.checkpoint)
    assert updates_a == updates_b
    for key in raw_a:
        assert torch.equal(raw_a[key], raw_b[key]), key
        assert torch.equal(ema_a[key], ema_b[key]), key


def test_resume_into_a_directory_of_another_run_is_refused(data, tmp_path):
    spec = ModelSpec("n", data.num_classes)
    fit(spec, data, None, replace(TINY, epochs=1), tmp_path / "run")
    with pytest.raises(CheckpointError, match="different run"):
        fit(spec, data, None, replace(TINY, epochs=1, seed=1), tmp_path / "run")


def test_frozen_backbone_keeps_weights_and_batchnorm_statistics(data, tmp_path):
    spec = ModelSpec("n", data.num_classes)
    start = fit(spec, data, None, replace(TINY, epochs=1), tmp_path / "start")
    cfg = replace(TINY, epochs=1, init=str(start.checkpoint), freeze_backbone=True, ema=False)
    frozen = fit(spec, data, None, cfg, tmp_path / "frozen")
    before, after = load_checkpoint(start.checkpoint)["model"], load_checkpoint(frozen.checkpoint)["raw_model"]
    backbone = [k for k in before if k.startswith("backbone.")]
    head = [k for k in before if k.startswith("head.") and k.endswith("weight")]
    assert backbone and all(torch.equal(before[k], after[k]) for k in backbone)  # incl. running_mean/var
    assert any(not torch.equal(before[k], after[k]) for k in head)


def test_init_checkpoint_of_another_architecture_is_refused(data, tmp_path):
    other = fit(ModelSpec("n", data.num_classes), data, None, replace(TINY, epochs=1), tmp_path / "n")
    with pytest.raises(CheckpointError, match="YOLO-n .* this run trains a YOLO-s"):
        fit(ModelSpec("s", data.num_classes), data, None, replace(TINY, init=str(other.checkpoint)), tmp_path / "s")


def test_gradients_accumulate_to_the_nominal_batch(data, tmp_path):
    result = fit(ModelSpec("n", data.num_classes), data, None, replace(TINY, epochs=1), tmp_path / "acc")
    # 12 images, batch 4 -> 3 batches; nominal batch 8 -> a step every 2 batches and after the last
    assert load_checkpoint(result.checkpoint)["ema_updates"] == 2


def test_learning_rate_schedules_start_at_one_and_end_at_lrf():
    for schedule in ("linear", "cosine"):
        cfg = TrainConfig(epochs=10, lr_schedule=schedule, lrf=0.01)
        assert _lr_factor(cfg, 0) == pytest.approx(1.0)
        assert _lr_factor(cfg, 10) == pytest.approx(0.01)
        assert _lr_factor(cfg, 5) == pytest.approx(0.505)


def test_auto_optimizer_is_adamw_for_short_schedules_and_sgd_for_long_ones():
    short, long = (choose_optimizer(TrainConfig(), steps=s, num_classes=1) for s in (1000, 50_000))
    assert (short.name, short.lr0, short.warmup_bias_lr) == ("adamw", 0.002, 0.0)
    assert (long.name, long.lr0, long.warmup_bias_lr) == ("sgd", 0.01, 0.1)
    assert choose_optimizer(TrainConfig(optimizer="sgd", lr0=0.02), steps=10, num_classes=1).lr0 == 0.02


def test_adamws_learning_rate_follows_the_class_count_as_ultralytics_does():
    """Ultralytics' optimizer=auto: lr0 = round(0.002 * 5 / (4 + nc), 6) for AdamW; SGD's stays 0.01."""
    assert [choose_optimizer(TrainConfig(), steps=1000, num_classes=nc).lr0 for nc in (1, 10, 80)] == \
        [0.002, 0.000714, 0.000119]
    assert choose_optimizer(TrainConfig(optimizer="adamw"), steps=50_000, num_classes=10).lr0 == 0.000714
    assert choose_optimizer(TrainConfig(), steps=50_000, num_classes=80).lr0 == 0.01
    assert choose_optimizer(TrainConfig(lr0=0.003), steps=1000, num_classes=80).lr0 == 0.003  # a set lr0 stays


def test_cuda_is_chosen_when_present_with_float16_autocast(monkeypatch):
    # No GPU exists on CI machines: torch.cuda.is_available is mocked, and only the choice is checked.
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert select_device("auto") == torch.device("cuda")
    assert autocast_dtype(torch.device("cuda")) is torch.float16
    assert select_device("cpu") == torch.device("cpu")


def test_the_distillers_parameters_are_clipped_apart_from_the_students():
    """A large adapter gradient must not shrink the student's step (one clip group each, at norm 10)."""
    from trainables.train import CLIP_NORM, clip_gradients

    student, adapter = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
    distiller = SimpleNamespace(named_trainable_parameters=lambda: adapter.named_parameters())
    for p in student.parameters():
        p.grad = torch.full_like(p, 0.1)
    for p in adapter.parameters():
        p.grad = torch.full_like(p, 100.0)
    clip_gradients(student, distiller)
    assert all(torch.equal(p.grad, torch.full_like(p, 0.1)) for p in student.parameters())
    adapter_norm = torch.linalg.vector_norm(torch.cat([p.grad.flatten() for p in adapter.parameters()]))
    assert adapter_norm.item() == pytest.approx(CLIP_NORM, rel=1e-4)
