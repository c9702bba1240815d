"""Knowledge distillation: teacher handling, each loss's behaviour, and the hand-checked masks."""
from dataclasses import replace

import pytest
import torch

from detection.anchors import DEFAULT_ANCHORS, STRIDES
from detection.coco import CocoDataset, SplitSpec
from detection.synth import SynthConfig, generate
from tests.kd_helpers import identity_adapters_
from trainables.checkpoint import CheckpointError, load_checkpoint, load_model, save_checkpoint
from trainables.kd import KD_METHODS, KDConfigError, build_distiller
from trainables.kd.cwd import cwd_loss, pkd_loss
from trainables.kd.feature import imitation_mask
from trainables.kd.output import fm_nms, fm_nms_keep
from trainables.models.yolo import ModelSpec, build_model
from trainables.hyper import TrainKnobs
from trainables.student import train_student
from trainables.hyper import TrainConfig

TINY = TrainConfig(epochs=1, img_size=64, batch_size=8, nominal_batch=8, warmup_epochs=0, val_every=99)


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("kd-data")
    generate(root, train=16, val=4, seed=3, config=SynthConfig(size=64))
    return (CocoDataset(SplitSpec(root / "train", root / "instances_train.json")),
            CocoDataset(SplitSpec(root / "val", root / "instances_val.json")))


@pytest.fixture(scope="module")
def teacher_ckpt(tmp_path_factory, tiny_data):
    """A teacher checkpoint whose weights are not a fresh init (so "not random" is checkable)."""
    torch.manual_seed(1)
    model = build_model(ModelSpec("s", tiny_data[0].num_classes))
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.01)
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
    path = tmp_path_factory.mktemp("teacher") / "teacher.pt"
    state = {k: v.clone() for k, v in model.state_dict().items()}
    save_checkpoint(path, {"model_spec": model.spec.to_dict(), "model": state})
    return path


def test_loaded_teacher_predicts_exactly_what_a_reloaded_checkpoint_predicts(teacher_ckpt, tiny_data):
    spec = ModelSpec("n", tiny_data[0].num_classes)
    distiller = build_distiller("output", load_model(teacher_ckpt), spec, img_size=64)
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        got = distiller.teacher(x)[0]
        want = load_model(teacher_ckpt)(x)[0]
        fresh = build_model(ModelSpec("s", spec.num_classes)).eval()(x)[0]
    assert all(torch.equal(a, b) for a, b in zip(got, want))
    assert not all(torch.allclose(a, b) for a, b in zip(got, fresh))


@pytest.mark.parametrize("method", [m for m in KD_METHODS if m != "none"])
def test_teacher_bn_statistics_unchanged_and_adapters_trained_after_a_kd_epoch(method, teacher_ckpt, tiny_data,
                                                                             tmp_path):
    knobs = TrainKnobs(student="n", kd_method=method, teacher=str(teacher_ckpt), epochs=1, img_size=64)
    teacher_before = {k: v.clone() for k, v in load_model(teacher_ckpt).state_dict().items()}
    captured = {}

    def on_epoch(result, checkpoint):
        captured["ckpt"], captured["losses"] = load_checkpoint(checkpoint), result.losses

    train_student(knobs, tiny_data[0], None, tmp_path / method, base=TINY, teacher_checkpoint=teacher_ckpt,
                  on_epoch=on_epoch)
    ckpt, losses = captured["ckpt"], captured["losses"]
    # the epoch says what the weight (the recipe's: factor 1, undecayed in a 1-epoch run) did against the
    # detection loss; feature imitation is still in its 400-image warm-up after 16 images: no KD yet
    weight = 0.0 if method == "feature" else KD_METHODS.get(method).load().reference_weight
    detection = losses["box"] + losses["obj"] + losses["cls"]
    assert losses["kd_to_detection"] == pytest.approx(weight * losses["kd"] / detection)
    # the teacher file is untouched and the distiller never saved teacher weights
    teacher_after = load_model(teacher_ckpt).state_dict()
    assert all(torch.equal(teacher_before[k], teacher_after[k]) for k in teacher_before)
    assert not any(k.startswith("teacher") for k in ckpt["distiller"])
    # the exported student (EMA "model" weights) holds exactly the student's tensors, no adapters
    assert set(ckpt["model"]) == set(build_model(ModelSpec("n", tiny_data[0].num_classes)).state_dict())


def test_teacher_running_stats_do_not_drift_during_distillation(teacher_ckpt, tiny_data):
    spec = ModelSpec("n", tiny_data[0].num_classes)
    teacher = load_model(teacher_ckpt)
    distiller = build_distiller("cwd", teacher, spec, img_size=64)
    distiller.train()
    before = [b.clone() for b in teacher.buffers()]
    student = build_model(spec).train()
    x = torch.rand(4, 3, 64, 64)
    raw, feats = student(x)
    loss, _ = distiller(x, raw, feats, torch.zeros((0, 6)), epoch=0, epochs=2, seen=0)
    loss.backward()
    assert not teacher.training
    assert all(torch.equal(a, b) for a, b in zip(before, teacher.buffers()))
    assert all(p.grad is None for p in teacher.parameters())


@pytest.mark.parametrize("method", ["feature", "cwd", "pkd"])
def test_adaptation_parameters_change_after_an_optimizer_step(method, teacher_ckpt, tiny_data):
    spec = ModelSpec("n", tiny_data[0].num_classes)
    distiller = build_distiller(method, load_model(teacher_ckpt), spec, img_size=64)
    params = dict(distiller.named_trainable_parameters())
    assert params, "feature methods train an adaptation layer"
    before = {k: v.detach().clone() for k, v in params.items()}
    student = build_model(spec).train()
    opt = torch.optim.SGD(list(student.parameters()) + list(params.values()), lr=0.1)
    x = torch.rand(2, 3, 64, 64)
    targets = torch.tensor([[0, 1, 0.5, 0.5, 0.3, 0.3], [1, 2, 0.3, 0.6, 0.2, 0.4]])
    raw, feats = student(x)
    loss, _ = distiller(x, raw, feats, targets, epoch=0, epochs=1, seen=distiller.warmup_images)
    loss.backward()
    opt.step()
    assert any(not torch.equal(before[k], v) for k, v in params.items())


@pytest.mark.parametrize("method", ["feature", "cwd", "pkd"])
def test_feature_losses_are_zero_when_student_equals_teacher_and_grow_with_divergence(method):
    spec = ModelSpec("n", 3)
    teacher = build_model(spec).eval()
    distiller = build_distiller(method, teacher, spec, img_size=64)
    identity_adapters_(distiller)
    torch.manual_seed(0)
    feats = [torch.randn(2, c, s, s) for c, s in zip(spec.feature_channels, (8, 4, 2))]
    targets = torch.tensor([[0, 1, 0.5, 0.5, 0.4, 0.4], [1, 0, 0.25, 0.25, 0.3, 0.3]])
    losses = []
    for eps in (0.0, 0.1, 0.5):
        s_feats = [f + eps * torch.randn_like(f) for f in feats]
        losses.append(distiller.distill([], s_feats, [], feats, targets).item())
    assert losses[0] == pytest.approx(0.0, abs=1e-6)
    assert losses[0] < losses[1] < losses[2]


def test_output_loss_is_at_its_minimum_when_student_equals_teacher_and_grows_with_divergence():
    spec = ModelSpec("n", 4)
    distiller = build_distiller("output", build_model(spec).eval(), spec, img_size=64, fm_nms=False)
    torch.manual_seed(0)
    t_raw = [torch.randn(2, 3, s, s, 9) for s in (8, 4, 2)]
    s_raw = [t.clone().requires_grad_(True) for t in t_raw]
    loss = distiller.distill(s_raw, [], t_raw, [], torch.zeros((0, 6)))
    loss.backward()
    assert max(s.grad.abs().max().item() for s in s_raw) < 1e-6  # stationary point: the minimum of a convex BCE
    values = [distiller.distill([t + eps * torch.randn_like(t) for t in t_raw], [], t_raw, [], None).item()
              for eps in (0.0, 0.3, 1.0)]
    assert values[0] < values[1] < values[2]


def test_fm_nms_keeps_exactly_the_per_class_maximum_of_each_3x3_neighbourhood():
    # one image, one anchor, 4x4 map, two classes
    obj = torch.ones(1, 1, 4, 4)
    cls = torch.zeros(1, 1, 4, 4, 2)
    cls[0, 0, :, :, 0] = torch.tensor([[0.1, 0.2, 0.1, 0.0],
                                       [0.3, 0.9, 0.2, 0.0],
                                       [0.1, 0.2, 0.1, 0.6],
                                       [0.0, 0.0, 0.5, 0.4]])
    cls[0, 0, :, :, 1] = torch.tensor([[0.7, 0.0, 0.0, 0.0],
                                       [0.0, 0.0, 0.0, 0.0],
                                       [0.0, 0.0, 0.0, 0.0],
                                       [0.0, 0.0, 0.0, 0.8]])
    kept = fm_nms(obj, cls)
    expected0 = torch.zeros(4, 4)
    expected0[1, 1], expected0[2, 3] = 0.9, 0.6  # 0.5 at (3,2) sees 0.6 at (2,3) in its 3x3 window
    expected1 = torch.zeros(4, 4)
    expected1[0, 0], expected1[3, 3] = 0.7, 0.8
    assert torch.equal(kept[0, 0, :, :, 0], expected0)
    assert torch.equal(kept[0, 0, :, :, 1], expected1)


def test_fm_nms_compares_across_anchors_using_objectness_times_class():
    obj = torch.tensor([0.9, 0.5]).view(1, 2, 1, 1).expand(1, 2, 3, 3).clone()
    cls = torch.full((1, 2, 3, 3, 1), 0.5)
    cls[0, 1, 1, 1, 0] = 1.0  # 0.5 * 1.0 = 0.5 < 0.9 * 0.5 = 0.45? no: 0.5 > 0.45, so anchor 1 wins at the centre
    kept = fm_nms(obj, cls)
    assert kept[0, 1, 1, 1, 0] == 1.0
    assert kept[..., 0].count_nonzero() == 1


def test_feature_mask_matches_a_hand_computed_one_for_two_boxes():
    anchors = torch.tensor([[1.0, 1.0]])  # one anchor of one cell
    targets = torch.tensor([
        [0, 0, 1.5 / 4, 1.5 / 4, 1 / 4, 1 / 4],  # exactly the anchor of cell (1,1): IoU 1 there, 0 elsewhere
        [1, 0, 3.0 / 4, 2.5 / 4, 2 / 4, 1 / 4],  # 2x1 box straddling cells (2,2) and (2,3): IoU 0.5 with both
    ])
    mask = imitation_mask(targets, batch=2, grid_hw=(4, 4), anchors_grid=anchors, psi=0.5)
    expected = torch.zeros(2, 4, 4, dtype=torch.bool)
    expected[0, 1, 1] = True
    expected[1, 2, 2] = expected[1, 2, 3] = True
    assert torch.equal(mask, expected)


def test_fm_nms_never_pushes_a_positives_true_class_down():
    """YOLOv5 makes an object positive at its cell and two neighbours; FM-NMS suppresses two of them.
    The paper's zero target there would pull the true class down where the ground truth pulls it up."""
    spec = ModelSpec("n", 2)
    distiller = build_distiller("output", build_model(spec).eval(), spec, img_size=128)
    t_raw = [torch.full((1, 3, g, g, 7), -6.0) for g in (16, 8, 4)]  # the teacher sees nothing ...
    positives = [(1, 1), (1, 2), (2, 1)]
    for (y, x), obj in zip(positives, (4.0, 3.0, 3.0)):  # ... but the object, peaking at (1, 1)
        t_raw[0][0, 0, y, x, 4], t_raw[0][0, 0, y, x, 5] = obj, 3.0  # class 0 at p = 0.95
    s_raw = [torch.zeros_like(t).requires_grad_(True) for t in t_raw]  # the student: p = 0.5 everywhere
    distiller.distill(s_raw, [], t_raw, [], torch.zeros((0, 6))).backward()
    keep = fm_nms_keep(t_raw[0][..., 4].sigmoid(), t_raw[0][..., 5:].sigmoid())
    assert [bool(keep[0, 0, y, x, 0]) for y, x in positives] == [True, False, False]  # two are suppressed
    grads = [s_raw[0].grad[0, 0, y, x, 5].item() for y, x in positives]
    assert grads[0] < 0 and all(g <= 0 for g in grads)  # descent raises the true class, or leaves it


def test_feature_mask_covers_only_the_levels_an_object_is_assigned_to():
    """An 8 px object at 128 px: P3's anchors fit it, P5's (3.6-12 cells wide on a 4x4 grid) do not."""
    anchors = torch.tensor(DEFAULT_ANCHORS, dtype=torch.float32) / torch.tensor(STRIDES, dtype=torch.float32).view(-1, 1, 1)
    targets = torch.tensor([[0, 0, 60 / 128, 60 / 128, 8 / 128, 8 / 128]])
    p3 = imitation_mask(targets, 1, (16, 16), anchors[0])
    p5 = imitation_mask(targets, 1, (4, 4), anchors[2])
    assert p3[0, 7, 7] and 0 < p3.sum() <= 9  # around the object's own cell
    assert p5.sum() == 0  # was 12 of 16 cells when every anchor counted


@pytest.mark.parametrize(("method", "weight", "warmup"), [("output", 1.0, 0), ("feature", 0.01, 400), ("cwd", 1.0, 0),
                                                      ("pkd", 10.0, 0)])
def test_each_methods_default_weight_is_its_reference_recipes_and_the_factor_multiplies_it(method, weight, warmup):
    """Mehta & Ozturk lambda_D 1; Wang et al.'s official 0.01 after 400 one-image steps; CWD 1 per level
    (mmyolo RTMDet, DAMO-YOLO); PKD 10 per level (mmrazor's one-stage configs)."""
    spec = ModelSpec("n", 3)
    teacher = build_model(spec).eval()
    recipe = build_distiller(method, teacher, spec, img_size=64)
    assert recipe.weight(0, 10, seen=warmup) == weight
    assert build_distiller(method, teacher, spec, img_size=64, factor=3.0).weight(0, 10, seen=warmup) == 3.0 * weight
    if warmup:
        assert recipe.weight(0, 10, seen=warmup - 1) == 0.0
    assert not any(name in recipe.state_dict() for name in ("kd_scale", "calibration"))  # no value calibration


def test_a_checkpoint_distilled_with_the_dropped_calibration_is_not_resumed(teacher_ckpt, tiny_data, tmp_path):
    """Its KD weight came from loss values; resuming it with reference weights would change the weight mid-run."""
    knobs = TrainKnobs(student="n", kd_method="cwd", teacher=str(teacher_ckpt), epochs=2, img_size=64)

    def stop(result, checkpoint):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_student(knobs, tiny_data[0], None, tmp_path, base=TINY, teacher_checkpoint=teacher_ckpt, on_epoch=stop)
    ckpt = load_checkpoint(tmp_path / "last.pt")
    ckpt["distiller"] = {**ckpt["distiller"], "kd_scale": torch.tensor(7.0), "calibration": torch.zeros(3)}
    save_checkpoint(tmp_path / "last.pt", {k: v for k, v in ckpt.items() if k != "format"})
    with pytest.raises(CheckpointError, match="loss-value calibration .* use another output directory or delete it"):
        train_student(knobs, tiny_data[0], None, tmp_path, base=TINY, teacher_checkpoint=teacher_ckpt)


def test_cwd_is_invariant_to_a_per_channel_shift_and_pkd_to_scale():
    x = torch.randn(2, 4, 5, 5)
    assert cwd_loss(x, x + 3.0).item() == pytest.approx(0.0, abs=1e-6)
    assert pkd_loss(x, 2 * x).item() == pytest.approx(0.0, abs=1e-5)


def test_kd_switched_off_for_the_last_epochs_and_decay_schedule():
    spec = ModelSpec("n", 3)
    d = build_distiller("cwd", build_model(spec), spec, img_size=64, factor=2.0, off_last_epochs=2)
    weights = [d.weight(e, 10, seen=10_000) for e in range(10)]
    assert weights[0] == 2.0 and weights[-2:] == [0.0, 0.0]
    assert all(a >= b for a, b in zip(weights, weights[1:]))
    assert 2.0 * 0.1 < weights[7] < 2.0 * 0.15  # cosine from 1x towards 0.1x over the 8 active epochs


def test_unknown_method_and_mismatched_teacher_are_refused():
    spec = ModelSpec("n", 3)
    with pytest.raises(KDConfigError, match="known methods: none, output, feature, cwd, pkd"):
        build_distiller("attention", build_model(spec), spec, img_size=64)
    with pytest.raises(KDConfigError, match="classes and anchors must be equal"):
        build_distiller("output", build_model(ModelSpec("s", 5)), spec, img_size=64)
    assert build_distiller("none", None, spec, img_size=64) is None


def test_teacher_is_trained_once_and_reused(tiny_data, tmp_path):
    from trainables.kd.teachers import ensure_teacher, teacher_config

    cfg = teacher_config(TINY, epochs=1, img_size=64, seed=0)
    calls = []
    first = ensure_teacher("n", tiny_data[0], None, cfg, tmp_path, on_epoch=lambda r, c: calls.append(r.epoch))
    second = ensure_teacher("n", tiny_data[0], None, cfg, tmp_path, on_epoch=lambda r, c: calls.append(r.epoch))
    assert first == second and first.exists()
    assert calls == [1]  # the second call trained nothing
    other = ensure_teacher("n", tiny_data[0], None, replace(cfg, seed=1), tmp_path)
    assert other != first


@pytest.mark.parametrize("damage, content", [
    ("complete.json", b"{torn"),  # what a crash mid-write or a bad disk leaves
    ("last.pt", b"{torn"),
    ("complete.json", b'{"metrics": {}, "sha256": "' + b"0" * 64 + b'"}'),  # a marker of another checkpoint
], ids=["torn-marker", "torn-checkpoint", "marker-of-another-checkpoint"])
def test_a_damaged_teacher_cache_entry_is_trained_again_never_trusted(damage, content, tiny_data, tmp_path, caplog):
    from trainables.checkpoint import load_checkpoint
    from trainables.kd.teachers import ensure_teacher, teacher_config, teacher_metrics

    cfg = teacher_config(TINY, epochs=1, img_size=64, seed=0)
    first = ensure_teacher("n", tiny_data[0], None, cfg, tmp_path)
    (first.parent / damage).write_bytes(content)
    calls = []
    with caplog.at_level("WARNING"):
        again = ensure_teacher("n", tiny_data[0], None, cfg, tmp_path, on_epoch=lambda r, c: calls.append(r.epoch))
    assert again == first and calls == [1]  # trained again
    assert f"teacher cache entry {first.parent} is damaged" in caplog.text
    load_checkpoint(again)
    assert isinstance(teacher_metrics(again), dict)
    assert not list(first.parent.glob(".*.tmp"))  # nothing half-written is left beside the entry


def test_a_teacher_trained_on_other_threads_is_another_cache_entry(tiny_data):
    """bf16 CPU training depends on the thread count, so a cached teacher must be reproducible from its key."""
    from trainables.kd.teachers import teacher_config, teacher_key

    cfg = teacher_config(TINY, epochs=1, img_size=64, seed=0)
    one, two = (teacher_key("n", tiny_data[0], replace(cfg, torch_threads=t)) for t in (1, 2))
    assert one != two
    assert teacher_key("n", tiny_data[0], replace(cfg, torch_threads=1, workers=3)) == one
