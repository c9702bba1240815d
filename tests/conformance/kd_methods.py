"""What every distilling KD method (`trainables.kd.registry.KDMethod`) promises.

Subclass `KDMethodConformance` with a `method` fixture that gives a registered method's name (one
with a teacher). Each test checks one promise: it builds from its knobs' defaults and refuses a knob
it does not have, its loss is zero when student and teacher agree and positive when they differ,
its teacher and loss run in float32 even inside the student's autocast, its weight is its recipe's
times the factor, and one training step through it moves the student.
"""
from __future__ import annotations

import pytest
import torch

from tests.kd_helpers import identity_adapters_
from trainables.kd import KD_METHODS, KDConfigError, build_distiller
from trainables.models.yolo import ModelSpec, build_model

SPEC = ModelSpec("n", 3)
TARGETS = torch.tensor([[0, 1, 0.5, 0.5, 0.4, 0.4], [1, 0, 0.25, 0.25, 0.3, 0.3]])


class KDMethodConformance:
    def test_it_builds_from_its_knobs_defaults_and_refuses_a_knob_it_lacks(self, method):
        teacher = build_model(SPEC).eval()
        entry = KD_METHODS.get(method)
        assert entry.needs_teacher and build_distiller(method, teacher, SPEC, img_size=64) is not None
        assert all(k.name for k in entry.knobs)
        with pytest.raises(KDConfigError, match=f"KD method '{method}' has no knob no_such_knob"):
            build_distiller(method, teacher, SPEC, img_size=64, no_such_knob=1.0)

    def test_it_is_zero_when_student_and_teacher_agree(self, method):
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

    def test_its_teacher_and_loss_run_in_float32_even_inside_autocast(self, method):
        torch.manual_seed(0)
        distiller = build_distiller(method, build_model(ModelSpec("s", 3)).eval(), SPEC, img_size=64)
        x = torch.rand(2, 3, 64, 64)
        with torch.no_grad():
            raw, feats = build_model(SPEC).train()(x)
        calls, distill = [], distiller.distill

        def spy(s_raw, s_feats, t_raw, t_feats, targets):
            calls.append(({t.dtype for group in (s_raw, s_feats, t_raw, t_feats) for t in group},
                          torch.is_autocast_enabled("cpu")))
            return distill(s_raw, s_feats, t_raw, t_feats, targets)

        distiller.distill = spy
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss, parts = distiller(x, [r.bfloat16() for r in raw], [f.bfloat16() for f in feats], TARGETS, epoch=0,
                                    epochs=1, seen=distiller.warmup_images)
        assert calls == [({torch.float32}, False)]  # the teacher's outputs, the student's cast ones; autocast off
        assert loss.dtype == parts["kd"].dtype == torch.float32

    def test_its_loss_is_its_recipes_weight_times_the_factor_times_the_batch(self, method):
        torch.manual_seed(0)
        distiller = build_distiller(method, build_model(ModelSpec("s", 3)).eval(), SPEC, img_size=64, factor=2.5)
        assert distiller.reference_weight > 0 and distiller.warmup_images >= 0
        x = torch.rand(2, 3, 64, 64)
        with torch.no_grad():
            raw, feats = build_model(SPEC).train()(x)
            (loss, parts), (again, _) = (distiller(x, raw, feats, TARGETS, epoch=0, epochs=1,
                                                   seen=distiller.warmup_images) for _ in range(2))
        assert loss.item() == pytest.approx(2.5 * distiller.reference_weight * parts["kd"].item() * 2, rel=1e-6)
        assert torch.equal(loss, again)  # nothing is measured from the loss values: the weight stays

    def test_it_trains_one_step(self, method):
        torch.manual_seed(0)
        distiller = build_distiller(method, build_model(ModelSpec("s", 3)).eval(), SPEC, img_size=64)
        student = build_model(SPEC).train()
        params = list(student.parameters()) + [p for _, p in distiller.named_trainable_parameters()]
        before = [p.detach().clone() for p in student.parameters()]
        x = torch.rand(2, 3, 64, 64)
        raw, feats = student(x)
        loss, parts = distiller(x, raw, feats, TARGETS, epoch=0, epochs=1, seen=distiller.warmup_images)
        loss.backward()
        torch.optim.SGD(params, lr=0.01).step()
        assert torch.isfinite(loss) and loss.item() > 0 and parts["kd"].item() > 0
        assert any(not torch.equal(a, b) for a, b in zip(before, student.parameters()))
