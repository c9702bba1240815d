"""The KD method registry: a method's own knobs are checked and defaulted, and a method registered
from outside the package is a valid `kd_method` at once and passes the KD method conformance class
(which tests/conformance/test_registered.py runs over every registered method)."""
from __future__ import annotations

import pytest
import yaml

from common.knobs import Knob
from detection.coco import CocoDataset, SplitSpec
from detection.synth import SynthConfig, generate
from orchestrator.config import load_config
from search_spaces import ActiveWhen
from tests.conformance.kd_methods import KDMethodConformance
from trainables.checkpoint import save_checkpoint
from trainables.hyper import TrainConfig, TrainKnobs
from trainables.kd import (KD_METHODS, DistillContext, Distiller, KDConfigError, KDMethod, build_distiller,
                           distilling_methods, register_kd_method)
from trainables.models.yolo import ModelSpec, build_model
from trainables.student import train_student

SPEC = ModelSpec("n", 3)


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


class TestToyMethodConforms(KDMethodConformance):
    @pytest.fixture
    def method(self, toy_method) -> str:
        return toy_method.name


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
