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
