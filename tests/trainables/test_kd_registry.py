"""The KD method registry: every registered method builds, trains a step and is zero when student
and teacher agree; a method registered from outside the package is a valid `kd_method` at once."""
from __future__ import annotations

import pytest
import torch
import yaml

from common.knobs import Knob
from detection.coco import CocoDataset, SplitSpec
from detection.synth import SynthConfig, generate
from orchestrator.config import load_config
from search_spaces import ActiveWhen
from tests.kd_helpers import identity_adapters_
from trainables.checkpoint import save_checkpoint
from trainables.hyper import TrainConfig, TrainKnobs
from trainables.kd import (KD_METHODS, DistillContext, Distiller, KDConfigError, KDMethod, build_distiller,
                           distilling_methods, register_kd_method)
from trainables.models.yolo import ModelSpec, build_model
from trainables.student import train_student

SPEC = ModelSpec("n", 3)
TARGETS = torch.tensor([[0, 1, 0.5, 0.5, 0.4, 0.4], [1, 0, 0.25, 0.25, 0.3, 0.3]])


@pytest.mark.parametrize("method", distilling_methods())
def test_every_registered_method_is_zero_when_student_and_teacher_agree(method):
    torch.manual_seed(0)
    teacher = build_model(SPEC).eval()
    distiller = build_distiller(method, teacher, SPEC, img_size=64)
    identity_adapters_(distiller)
    with torch.no_grad():
        raw, feats = teacher(torch.rand(2, 3, 64, 64))
        agree = distiller.distill(raw, feats, raw, feats, TARGETS).item()
        differ = distiller.distill([r + torch.randn_like(r) for r in raw], [f + torch.randn_like(f) for f in feats],
                                   raw, feats, TARGETS).item()
    assert agree == pytest.approx(0.0, abs=1e-5)
    assert differ > 1e-3


@pytest.mark.parametrize("method", distilling_methods())
def test_every_registered_method_trains_one_step(method):
    torch.manual_seed(0)
    distiller = build_distiller(method, build_model(ModelSpec("s", 3)).eval(), SPEC, img_size=64)
    student = build_model(SPEC).train()
    params = list(student.parameters()) + [p for _, p in distiller.named_trainable_parameters()]
    before = [p.detach().clone() for p in student.parameters()]
    x = torch.rand(2, 3, 64, 64)
    raw, feats = student(x)
    loss, parts = distiller(x, raw, feats, TARGETS, epoch=0, epochs=1, detection=torch.tensor(1.0))
    loss.backward()
    torch.optim.SGD(params, lr=0.01).step()
    assert torch.isfinite(loss) and loss.item() > 0 and parts["kd"].item() > 0
    assert any(not torch.equal(a, b) for a, b in zip(before, student.parameters()))


def test_a_methods_own_knobs_are_checked_and_defaulted():
    teacher = build_model(SPEC).eval()
    assert build_distiller("cwd", teacher, SPEC, img_size=64).tau == 1.0
    assert build_distiller("cwd", teacher, SPEC, img_size=64, cwd_tau=4.0).tau == 4.0
    assert build_distiller("output", teacher, SPEC, img_size=64, params={"fm_nms": False}).use_fm_nms is False
    with pytest.raises(KDConfigError, match="KD method 'pkd' has no knob cwd_tau; its knobs: none"):
        build_distiller("pkd", teacher, SPEC, img_size=64, cwd_tau=2.0)


# ---- a method from outside the package ----------------------------------------------------------------


class ToyDistiller(Distiller):
    """Squared difference of the objectness logits, times the toy's own gain."""

    def __init__(self, teacher, *, toy_gain: float, **common):
        super().__init__(teacher, **common)
        self.gain = toy_gain

    @classmethod
    def from_context(cls, ctx: DistillContext, **knobs) -> "ToyDistiller":
        return cls(ctx.teacher, **knobs)

    def distill(self, s_raw, s_feats, t_raw, t_feats, targets):
        return self.gain * sum(((s[..., 4].float() - t[..., 4].float()) ** 2).mean() for s, t in zip(s_raw, t_raw))


@pytest.fixture
def toy_method():
    method = register_kd_method(KDMethod("toy", "a test's own method", ToyDistiller,
                                         knobs=(Knob("toy_gain", float, 1.0, "the toy's weight", above=0),)))
    yield method
    KD_METHODS.unregister("toy")


def test_a_method_registered_in_a_test_is_a_valid_kd_method_in_a_yaml_and_trains(toy_method, tmp_path):
    data = tmp_path / "data"
    generate(data, train=8, val=2, seed=1, config=SynthConfig(size=64))
    teacher_path = tmp_path / "teacher.pt"
    teacher = build_model(ModelSpec("n", 10))
    save_checkpoint(teacher_path, {"model_spec": teacher.spec.to_dict(), "model": teacher.state_dict()})
    sweep = tmp_path / "toy.yaml"
    sweep.write_text(yaml.safe_dump({
        "name": "toy", "teachers": {"t": {"checkpoint": str(teacher_path)}},
        "search": {"kd_method": {"choice": ["none", "toy"]}, "toy_gain": {"loguniform": [0.5, 2.0]}},
        "fixed": {"epochs": 1, "img_size": 64}, "searcher": {"algorithm": "tpe", "trials": 2}}))
    cfg = load_config(sweep)
    assert cfg.search.conditions["toy_gain"] == ActiveWhen("kd_method", ("toy",))
    assert cfg.search.conditions["kd_factor"].values == distilling_methods() and "toy" in distilling_methods()
    knobs = cfg.search.complete({"kd_method": "toy", "toy_gain": 2.0})
    student = TrainKnobs.from_knobs(knobs)
    assert student.kd_params == {"toy_gain": 2.0}
    train = CocoDataset(SplitSpec(data / "train", data / "instances_train.json"))
    result = train_student(student, train, None, tmp_path / "run", teacher_checkpoint=teacher_path,
                           base=TrainConfig(batch_size=4, nominal_batch=4, warmup_epochs=0, val_every=9))
    assert result.history[-1].losses["kd"] > 0
