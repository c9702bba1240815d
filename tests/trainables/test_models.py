import math

import pytest
import torch

from trainables.models.yolo import SIZES, ModelSpec, build_model, count_parameters

OFFICIAL_PARAMS_M = {"n": 1.9, "s": 7.2, "m": 21.2, "l": 46.5, "x": 86.7}


@pytest.mark.parametrize("size", list(OFFICIAL_PARAMS_M))
def test_parameter_count_matches_official_yolov5_within_5_percent(size):
    params = count_parameters(build_model(ModelSpec(size, num_classes=80))) / 1e6
    assert abs(params - OFFICIAL_PARAMS_M[size]) / OFFICIAL_PARAMS_M[size] < 0.05


def test_every_size_has_the_same_head_grid_so_teacher_and_student_align():
    x = torch.rand(1, 3, 96, 128)
    shapes = {}
    for size in ("n", "s"):
        raw, feats = build_model(ModelSpec(size, num_classes=7)).eval()(x)
        shapes[size] = [tuple(r.shape) for r in raw]
        assert [tuple(f.shape[2:]) for f in feats] == [(12, 16), (6, 8), (3, 4)]
    assert shapes["n"] == shapes["s"] == [(1, 3, 12, 16, 12), (1, 3, 6, 8, 12), (1, 3, 3, 4, 12)]


def test_neck_features_are_exposed_with_documented_channels():
    model = build_model(ModelSpec("n", num_classes=3))
    _, feats = model(torch.rand(1, 3, 64, 64))
    assert tuple(f.shape[1] for f in feats) == model.spec.feature_channels == (64, 128, 256)


def test_unknown_size_lists_known_sizes():
    with pytest.raises(ValueError, match="known sizes: n, s, m, l, x"):
        ModelSpec("q", num_classes=3)
    assert set(SIZES) == {"n", "s", "m", "l", "x"}


def test_spec_round_trips_through_dict():
    spec = ModelSpec("s", num_classes=10)
    assert ModelSpec.from_dict(spec.to_dict()) == spec


def test_the_objectness_prior_follows_the_training_image_size():
    """About 8 objects per image: at 128 px each level has 25x fewer cells than at 640 px."""
    spec = ModelSpec("n", 3)
    torch.manual_seed(0)
    at_640 = build_model(spec)
    torch.manual_seed(0)
    at_128 = build_model(spec, img_size=128)
    for small, large, stride in zip(at_128.head.m, at_640.head.m, at_640.strides):
        diff = (small.bias - large.bias).view(at_640.head.na, -1)
        assert torch.allclose(diff[:, 4], torch.full_like(diff[:, 4], math.log(25)), atol=1e-5)
        assert torch.equal(diff[:, :4], torch.zeros_like(diff[:, :4])) and torch.equal(diff[:, 5:], torch.zeros_like(diff[:, 5:]))
    p3 = at_128.head.m[0]
    obj = p3.bias.view(at_128.head.na, -1)[:, 4]
    # log(8 / 16^2) = -3.47 on the 16 x 16 grid, give or take the conv's own bias init (within 1 / sqrt(fan-in))
    assert (obj - math.log(8 / 16 ** 2)).abs().max() <= 1 / math.sqrt(p3.in_channels)
