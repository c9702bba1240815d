"""The student's `activation` knob: every activation builds, trains from a SiLU checkpoint, and exports
and quantizes for every runtime; the int8 graph keeps its speed promise (every Conv but the stem
quantized) whatever the activation."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from detection.coco import CocoDataset, SplitSpec
from detection.letterbox import letterbox, to_input
from device_actors.runtimes import RuntimeOptions, get_runtime
from trainables.checkpoint import load_checkpoint, load_model, save_checkpoint
from trainables.export import FORMATS, export_formats, get_format
from trainables.models.blocks import ACTIVATION_MODULES
from trainables.models.family import ACTIVATIONS
from trainables.models.yolo import ModelSpec, build_model
from trainables.postprocess import decode

IMG_SIZE = 64
HAS_TFLITE_TOOLS = all(importlib.util.find_spec(m) for m in ("litert_torch", "ai_edge_quantizer"))
OTHERS = [a for a in ACTIVATIONS if a != "silu"]  # SiLU: tests/trainables/test_export.py


def test_every_conv_of_the_model_uses_the_chosen_activation_and_the_checkpoint_remembers_it(tmp_path):
    for name in ACTIVATIONS:
        model = build_model(ModelSpec("n", 3, activation=name))
        acts = {type(m.act) for m in model.modules() if hasattr(m, "act")}
        assert acts == {ACTIVATION_MODULES[name]}
    spec = ModelSpec("n", 3, activation="relu6")
    save_checkpoint(tmp_path / "c.pt", {"model_spec": spec.to_dict(), "model": build_model(spec).state_dict()})
    assert ModelSpec.from_dict(load_checkpoint(tmp_path / "c.pt")["model_spec"]) == spec
    old = {k: v for k, v in spec.to_dict().items() if k != "activation"}  # a checkpoint from before the knob
    assert ModelSpec.from_dict(old).activation == "silu"
    with pytest.raises(ValueError, match="unknown activation 'gelu'; known: silu, relu, relu6, hardswish"):
        ModelSpec("n", 3, activation="gelu")


def test_a_silu_checkpoint_starts_a_student_of_another_activation(trained_student, tmp_path):
    """The knob reaches the trained model: one epoch from the SiLU student's weights with hardswish."""
    from trainables.hyper import TrainConfig, TrainKnobs
    from trainables.student import train_student

    root = Path(trained_student.data_dir)
    data = CocoDataset(SplitSpec(root / "train", root / "instances_train.json", subset=32))
    knobs = TrainKnobs(student_init=str(trained_student.checkpoint), activation="hardswish", epochs=1, img_size=64)
    result = train_student(knobs, data, None, tmp_path, base=TrainConfig(torch_threads=1, warmup_epochs=0))
    spec = ModelSpec.from_dict(load_checkpoint(result.checkpoint)["model_spec"])
    assert spec.activation == "hardswish"
    assert {type(m.act) for m in load_model(result.checkpoint).modules() if hasattr(m, "act")} == {torch.nn.Hardswish}


@pytest.fixture(scope="module")
def calibration(trained_student) -> CocoDataset:
    root = Path(trained_student.data_dir)
    return CocoDataset(SplitSpec(root / "train", root / "instances_train.json"))


@pytest.fixture(scope="module")
def checkpoints(trained_student, tmp_path_factory) -> dict[str, Path]:
    """The trained SiLU student's weights under each other activation (the weights do not depend on it)."""
    trained = load_checkpoint(trained_student.checkpoint)
    out = {}
    for name in OTHERS:
        spec = ModelSpec.from_dict({**trained["model_spec"], "activation": name})
        out[name] = tmp_path_factory.mktemp(name) / "student.pt"
        save_checkpoint(out[name], {"model_spec": spec.to_dict(), "model": trained["model"]})
    return out


def _image(data: CocoDataset) -> np.ndarray:
    return to_input(letterbox(data.load_image(0), IMG_SIZE)[0])


# relu6 in the default suite; the others with the slow checks (about 20 s each on CI). QAT and int8-mixed
# (slow_build) have their own tests: they fine-tune or score candidates on training images
@pytest.mark.parametrize("activation", [pytest.param(a, marks=() if a == "relu6" else pytest.mark.slow) for a in OTHERS])
def test_onnx_formats_export_quantize_and_match_the_torch_model(activation, checkpoints, calibration, tmp_path):
    formats = [f for f in FORMATS.names() if get_format(f).runtime == "onnxruntime" and not get_format(f).slow_build]
    made = {a.format: a for a in export_formats(checkpoints[activation], formats, tmp_path, img_size=IMG_SIZE,
                                                calibration=calibration, calib_images=8)}
    model = load_model(checkpoints[activation])
    image = _image(calibration)
    with torch.no_grad():
        raw, _ = model(torch.from_numpy(image))
        expected = decode(raw, model.anchors, model.strides).numpy()
    for name, artifact in made.items():
        got = get_runtime("onnxruntime").load(artifact.read_bytes(), RuntimeOptions()).run(image)
        assert got.shape == expected.shape and np.isfinite(got).all(), name
        # Mean errors; measured 0.5-0.9 % of the box scale and 0.001-0.002 in probability (whose mean is
        # about 0.07) for the 8-bit formats, 3e-4 and 5e-5 for fp16.
        box_bound, prob_bound = (1e-5, 1e-6) if name == "onnx" else (0.03, 0.01)
        boxes = np.abs(got[..., :4] - expected[..., :4]).mean() / np.abs(expected[..., :4]).mean()
        probs = np.abs(got[..., 4:] - expected[..., 4:]).mean()
        assert boxes < box_bound and probs < prob_bound, (name, boxes, probs)
    options = ort.SessionOptions()
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    ort.InferenceSession(str(made["onnx-int8"].path), options, providers=["CPUExecutionProvider"])
    ops = [node.op_type for node in onnx.load(str(tmp_path / "optimized.onnx")).graph.node]
    convs = sum(node.op_type == "Conv" for node in onnx.load(str(made["onnx"].path)).graph.node)
    assert ops.count("QLinearConv") == convs - 1  # all but the float stem


@pytest.mark.slow  # three TFLite conversions per activation (litert-torch): minutes on CI
@pytest.mark.skipif(not HAS_TFLITE_TOOLS, reason="TFLite converters (the `tflite` extra) are not installed")
@pytest.mark.parametrize("activation", OTHERS)
def test_tflite_formats_export_quantize_and_run(activation, checkpoints, calibration, tmp_path):
    formats = [f for f in FORMATS.names() if get_format(f).runtime == "tflite" and not get_format(f).slow_build]
    made = export_formats(checkpoints[activation], formats, tmp_path, img_size=IMG_SIZE, calibration=calibration,
                          calib_images=8)
    reference = get_runtime("onnxruntime").load(
        export_formats(checkpoints[activation], ["onnx"], tmp_path / "onnx", img_size=IMG_SIZE)[0].read_bytes(),
        RuntimeOptions()).run(_image(calibration))
    for artifact in made:
        got = get_runtime("tflite").load(artifact.read_bytes(), RuntimeOptions()).run(_image(calibration))
        assert got.shape == reference.shape and np.isfinite(got).all(), artifact.format
        assert np.abs(got[..., 4:] - reference[..., 4:]).mean() < (1e-5 if artifact.format == "tflite" else 0.01)
