"""Structured pruning: a pruned student is a narrower network that trains, reloads and exports as one;
unstructured pruning zeroes weights and keeps every shape."""
from __future__ import annotations

import onnx
import pytest
import torch
from torch import nn

from detection.coco import CocoDataset, SplitSpec
from detection.synth import SynthConfig, generate
from trainables.checkpoint import CheckpointError, load_checkpoint, load_model, save_checkpoint
from trainables.export import export_formats
from trainables.kd import build_distiller
from trainables.hyper import PRUNE_METHODS, TrainConfig, TrainKnobs
from trainables.models.yolo import ModelSpec, build_model, count_parameters
from trainables.prune import ModelCost, prune_channels, zero_weights
from trainables.student import train_student

TINY = TrainConfig(epochs=1, img_size=64, batch_size=4, nominal_batch=4, warmup_epochs=0, val_every=99,
                   torch_threads=1, ema=True)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("prune-data")
    generate(root, train=8, val=4, seed=3, config=SynthConfig(size=64))
    return CocoDataset(SplitSpec(root / "train", root / "instances_train.json"))


def _conv_channels(model: onnx.ModelProto) -> list[int]:
    """Output channels of every Conv of an ONNX graph, from its weight initializers."""
    weights = {t.name: t.dims for t in model.graph.initializer}
    return [weights[node.input[1]][0] for node in model.graph.node if node.op_type == "Conv"]


def _output_dims(model: onnx.ModelProto) -> list[list[int]]:
    return [[d.dim_value for d in o.type.tensor_type.shape.dim] for o in model.graph.output]


@pytest.mark.parametrize("method", PRUNE_METHODS)
def test_every_pruning_method_removes_channels_and_keeps_the_output_layout(method):
    model = build_model(ModelSpec("n", 3)).eval()
    before = count_parameters(model)
    x = torch.randn(1, 3, 64, 64)
    raw_before = [r.shape for r in model(x)[0]]
    prune_channels(model, ratio=0.5, method=method, img_size=64)
    assert count_parameters(model) < before * 0.5
    assert [r.shape for r in model(x)[0]] == raw_before
    assert model.spec.pruned and model.spec.feature_channels == tuple(f.shape[1] for f in model(x)[1])


def test_pruned_student_trains_reloads_and_exports_with_fewer_channels(data, tmp_path):
    knobs = TrainKnobs(epochs=1, img_size=64, prune_ratio=0.4, prune_method="l1")
    result = train_student(knobs, data, None, tmp_path / "run", base=TINY)
    full = build_model(ModelSpec("n", data.num_classes))
    pruned = load_model(result.checkpoint)  # rebuilt from the checkpoint's model_spec alone
    assert count_parameters(pruned) < 0.75 * count_parameters(full)
    assert load_checkpoint(result.checkpoint)["model_spec"]["channels"]
    onnx_file = export_formats(result.checkpoint, ["onnx"], tmp_path / "export", img_size=64)[0].path
    dense_file = tmp_path / "dense.pt"
    save_checkpoint(dense_file, {"model_spec": full.spec.to_dict(), "model": full.state_dict()})
    dense_onnx = export_formats(dense_file, ["onnx"], tmp_path / "dense", img_size=64)[0].path
    pruned_onnx, dense_onnx = onnx.load(onnx_file), onnx.load(dense_onnx)
    assert sum(_conv_channels(pruned_onnx)) < sum(_conv_channels(dense_onnx))
    assert _output_dims(pruned_onnx) == _output_dims(dense_onnx)


def test_pruned_checkpoint_as_student_init_keeps_its_widths(data, tmp_path):
    first = train_student(TrainKnobs(epochs=1, img_size=64, prune_ratio=0.3), data, None, tmp_path / "a", base=TINY)
    again = train_student(TrainKnobs(epochs=1, img_size=64, student_init=str(first.checkpoint)), data, None,
                          tmp_path / "b", base=TINY)
    assert again.spec == first.spec and again.spec.pruned


def test_checkpoint_asking_for_wider_convolutions_than_its_size_is_refused(tmp_path):
    model = build_model(ModelSpec("n", 3))
    prune_channels(model, ratio=0.3, method="l1", img_size=64)
    spec = model.spec.to_dict()
    name, out, c_in = spec["channels"][0]
    spec["channels"][0] = [name, 4096, c_in]
    path = tmp_path / "wide.pt"
    save_checkpoint(path, {"model_spec": spec, "model": model.state_dict()})
    with pytest.raises((CheckpointError, ValueError), match="wider than a YOLO-n"):
        load_model(path)


def test_unstructured_pruning_zeroes_weights_but_keeps_shapes_and_macs():
    model = build_model(ModelSpec("n", 3))
    before = ModelCost.of(model, 64)
    for scope in ("layer", "global"):
        pruned = zero_weights(build_model(ModelSpec("n", 3)), ratio=0.5, scope=scope)
        after = ModelCost.of(pruned, 64)
        assert (after.parameters, after.macs) == (before.parameters, before.macs)
        conv_weights = sum(m.weight.numel() for m in pruned.modules() if isinstance(m, nn.Conv2d))
        assert before.nonzero - after.nonzero == pytest.approx(conv_weights / 2, rel=0.01)



@pytest.mark.parametrize("method", ["feature", "cwd"])
def test_distillers_built_on_a_pruned_spec_align_its_features_with_the_teachers(method):
    teacher = build_model(ModelSpec("n", 3)).eval()
    student = prune_channels(build_model(ModelSpec("n", 3)), ratio=0.5, method="l1", img_size=64)
    distiller = build_distiller(method, teacher, student.spec, img_size=64)
    images = torch.rand(2, 3, 64, 64)
    targets = torch.tensor([[0, 1, 0.5, 0.5, 0.3, 0.3], [1, 2, 0.4, 0.6, 0.2, 0.4]])
    s_raw, s_feats = student(images)
    t_raw, t_feats = teacher(images)
    assert student.spec.feature_channels < teacher.spec.feature_channels
    assert float(distiller.distill(s_raw, s_feats, t_raw, t_feats, targets).detach()) > 0
