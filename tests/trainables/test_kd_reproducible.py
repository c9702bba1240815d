"""Every random draw of a trial comes from its seed, the distiller's own parameters included: a trial
trained in a process that trained another trial first ends with the same weights, bit for bit, as
the same trial trained in a fresh process. A sweep's trainer process trains trial after trial, so
without this a KD trial's result would depend on the trial before it.

Every registered KD method is checked (the registry is iterated, `none` included); the fresh process
is a spawned one, which has imported the trainer and drawn nothing."""
from __future__ import annotations

import multiprocessing
from pathlib import Path

import pytest
import torch

from detection.coco import CocoDataset, SplitSpec
from detection.synth import SynthConfig, generate
from trainables.checkpoint import load_checkpoint, save_checkpoint
from trainables.hyper import TrainConfig, TrainKnobs
from trainables.kd import KD_METHODS, kd_method
from trainables.models.yolo import ModelSpec, build_model
from trainables.student import train_student

TINY = TrainConfig(epochs=1, img_size=64, batch_size=8, nominal_batch=8, warmup_epochs=0, val_every=99,
                   torch_threads=1)


@pytest.fixture(scope="module")
def setting(tmp_path_factory) -> tuple[Path, Path]:
    """(data root, teacher checkpoint): generated data and a YOLO-s whose weights are no fresh init."""
    root = tmp_path_factory.mktemp("repro")
    generate(root / "data", train=16, val=4, seed=3, config=SynthConfig(size=64))
    torch.manual_seed(1)
    teacher = build_model(ModelSpec("s", CocoDataset(_split(root / "data")).num_classes))
    with torch.no_grad():
        for p in teacher.parameters():
            p.add_(torch.randn_like(p) * 0.01)
    save_checkpoint(root / "teacher.pt", {"model_spec": teacher.spec.to_dict(), "model": teacher.state_dict()})
    return root / "data", root / "teacher.pt"


def _split(root: Path) -> SplitSpec:
    return SplitSpec(root / "train", root / "instances_train.json")


def _train(method: str, seed: int, data: Path, teacher: Path, out: Path) -> dict[str, torch.Tensor]:
    """One trial; its final student (raw and EMA) and distiller weights."""
    distills = kd_method(method).needs_teacher
    knobs = TrainKnobs(student="n", kd_method=method, teacher=str(teacher) if distills else None, epochs=1,
                       img_size=64, seed=seed)
    result = train_student(knobs, CocoDataset(_split(data)), None, out, base=TINY,
                           teacher_checkpoint=teacher if distills else None)
    ckpt = load_checkpoint(result.checkpoint)
    return {f"{part}.{k}": v for part in ("model", "raw_model", "distiller") for k, v in ckpt[part].items()}


@pytest.mark.parametrize("method", list(KD_METHODS))
def test_a_trial_trained_after_another_equals_it_trained_in_a_fresh_process(method, setting, tmp_path):
    data, teacher = setting
    with multiprocessing.get_context("spawn").Pool(1) as fresh_process:
        fresh = fresh_process.apply(_train, (method, 0, data, teacher, tmp_path / "fresh"))
    _train(method, 1, data, teacher, tmp_path / "before")  # this process trains something else first
    reused = _train(method, 0, data, teacher, tmp_path / "reused")
    assert fresh.keys() == reused.keys()
    different = [k for k in fresh if not torch.equal(fresh[k], reused[k])]
    assert not different, f"{method}: weights differ between a fresh and a reused process: {different[:5]}"

