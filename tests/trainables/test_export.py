"""Export of a trained student to every format, checked on the files themselves.

The expensive part (training, exporting all formats) runs once per module; each test then checks
one promise: equal outputs and equal mAP for fp32 ONNX, what each quantized format does to the
graph, provenance (size, hash, calibration from training images only), and clear errors. What
every format promises (runs in its runtime, within its mAP bound) is tests/conformance/formats.py's.
"""
from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from PIL import Image

from detection.letterbox import letterbox, to_input
from device_actors.accuracy import evaluate_artifact
from device_actors.runtimes import RuntimeOptions, get_runtime
from trainables.checkpoint import CheckpointError, load_model, save_checkpoint
from trainables.evaluate import evaluate
from tests.exports import CALIB_IMAGES, IMG_SIZE, tools_problem
from tests.tolerance import assert_float32_close
from trainables.export import FORMATS, ExportError, ExportGraph, export_formats, format_for
from trainables.export.registry import MAP_EQUAL
from trainables.models.yolo import ModelSpec, build_model
from trainables.postprocess import decode

HAS_TFLITE_TOOLS = all(importlib.util.find_spec(m) for m in ("litert_torch", "ai_edge_quantizer"))


@pytest.fixture(scope="module")
def student(trained_student) -> SimpleNamespace:
    return trained_student


@pytest.fixture(scope="module")
def splits(student_exports) -> SimpleNamespace:
    return student_exports.splits


@pytest.fixture(scope="module")
def artifacts(student_exports) -> dict:
    """The student in every format whose tools are installed (shared with the conformance classes), but
    those slow to build (QAT, int8-mixed), which their own slow tests and the slow conformance cases cover."""
    return {f.name: student_exports.get(f.name) for f in FORMATS.values() if not tools_problem(f) and not f.slow_build}


def test_export_graph_decode_equals_trainables_decode():
    torch.manual_seed(0)
    model = build_model(ModelSpec("n", 3)).eval()
    images = torch.rand(2, 3, 96, 96)
    with torch.no_grad():
        raw, _ = model(images)
        expected = decode(raw, model.anchors, model.strides)
        got = ExportGraph(model, 96)(images)
    assert_float32_close(got.numpy(), expected.numpy())


def test_fp32_onnx_outputs_equal_torch_outputs(student, artifacts, splits):
    """The artifact against the torch model plus the training side's own decode, on real val images."""
    model = load_model(student.checkpoint)
    session = get_runtime("onnxruntime").load(artifacts["onnx"].read_bytes(), RuntimeOptions())
    for i in range(4):
        image = to_input(letterbox(splits.val.load_image(i), IMG_SIZE)[0])
        with torch.no_grad():
            raw, _ = model(torch.from_numpy(image))
            expected = decode(raw, model.anchors, model.strides).numpy()
        got = session.run(image)
        assert got.shape == expected.shape == (1, 3 * (16 * 16 + 8 * 8 + 4 * 4), 5 + splits.val.num_classes)
        assert_float32_close(got[..., :4], expected[..., :4])  # boxes reach ~1500 px: an ulp there is 1e-4
        assert_float32_close(got[..., 4:], expected[..., 4:], ulps=256)  # a probability rounds like its logit (~30)


def test_onnx_file_is_self_contained_folded_and_opset_17(artifacts):
    path = artifacts["onnx"].path
    assert sorted(p.name for p in path.parent.iterdir() if p.name.startswith("onnx-")) == \
        sorted(f"{name}-{IMG_SIZE}px.onnx" for name in artifacts if name.startswith("onnx"))
    model = onnx.load(str(path), load_external_data=False)
    assert all(t.data_location != onnx.TensorProto.EXTERNAL for t in model.graph.initializer)
    assert max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) >= 17
    ops = {node.op_type for node in model.graph.node}
    assert not ops & {"Constant", "Identity", "BatchNormalization"}  # folded: BN into Conv, constants by onnxslim
    assert any(node.name.startswith("/decode/") for node in model.graph.node)
    ort.InferenceSession(artifacts["onnx"].read_bytes())  # loads from bytes alone, as the board does


def test_fp32_onnx_map_equals_torch_map(student, artifacts, splits):
    torch_map = evaluate(load_model(student.checkpoint), splits.val, img_size=IMG_SIZE).metrics.map50_95
    assert torch_map > 0.01, "the student must detect something for mAP comparisons to mean anything"
    onnx_map = evaluate_artifact(artifacts["onnx"].read_bytes(), "onnxruntime", splits.val).metrics.map50_95
    assert onnx_map == pytest.approx(torch_map, abs=MAP_EQUAL)  # "the same model"


def test_quantized_files_are_at_most_a_third_of_fp32(artifacts):
    for name, artifact in artifacts.items():
        if name.endswith(("-int8", "-dynamic")):
            float_name = format_for(artifact.runtime, "fp32").name
            assert artifact.size_mb <= 0.31 * artifacts[float_name].size_mb, name


def test_artifacts_record_size_hash_and_calibration(artifacts, splits):
    for artifact in artifacts.values():
        data = artifact.read_bytes()
        assert artifact.size_mb == pytest.approx(len(data) / 1e6)
        assert artifact.sha256 == hashlib.sha256(data).hexdigest()
        assert artifact.img_size == IMG_SIZE
    int8 = artifacts["onnx-int8"].settings
    assert int8["calib_images"] == CALIB_IMAGES
    assert int8["calib_split"] == str(splits.train.spec.annotations)
    assert int8["calib_method"] == "minmax"


def test_onnx_int8_runs_every_conv_but_the_stem_as_qlinearconv(artifacts, tmp_path):
    """Guards the speed: with int8 activations ORT 1.32 on x86 leaves Convs in float (slower than fp32)."""
    options = ort.SessionOptions()
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    ort.InferenceSession(str(artifacts["onnx-int8"].path), options, providers=["CPUExecutionProvider"])
    ops = [node.op_type for node in onnx.load(str(tmp_path / "optimized.onnx")).graph.node]
    float_convs = sum(1 for node in onnx.load(str(artifacts["onnx"].path)).graph.node if node.op_type == "Conv")
    assert ops.count("QLinearConv") == float_convs - 1


@pytest.mark.skipif(not HAS_TFLITE_TOOLS, reason="TFLite converters (the `tflite` extra) are not installed")
def test_tflite_int8_takes_int8_input_and_gives_float_output(artifacts):
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=artifacts["tflite-int8"].read_bytes())
    assert interpreter.get_input_details()[0]["dtype"] == np.int8
    assert interpreter.get_output_details()[0]["dtype"] == np.float32  # the decode tail stays float


def test_calibration_reads_only_training_images(student, splits, tmp_path, monkeypatch):
    opened: list[Path] = []
    real_open = Image.open

    def recording_open(fp, *args, **kwargs):
        opened.append(Path(fp))
        return real_open(fp, *args, **kwargs)

    monkeypatch.setattr(Image, "open", recording_open)
    export_formats(student.checkpoint, ["onnx-int8"], tmp_path, img_size=IMG_SIZE, calibration=splits.train,
                   calib_images=8)
    train_dir = splits.train.spec.images.resolve()
    assert len(set(opened)) == 8
    assert all(train_dir in path.resolve().parents for path in opened), opened


@pytest.mark.slow  # ~14 s: the entropy search runs over every activation tensor's histogram
def test_entropy_calibration_gives_other_ranges_than_minmax(student, splits, tmp_path):
    """ORT's quantize_static alone would silently return min/max ranges for Entropy."""
    made = {method: export_formats(student.checkpoint, ["onnx-int8"], tmp_path / method, img_size=IMG_SIZE,
                                   calibration=splits.train, calib_images=8, calib_method=method)[0]
            for method in ("minmax", "entropy")}
    assert made["entropy"].sha256 != made["minmax"].sha256
    assert made["entropy"].settings["calib_method"] == "entropy"


def test_missing_checkpoint_names_the_path(tmp_path):
    missing = tmp_path / "nope.pt"
    with pytest.raises(CheckpointError, match="nope.pt"):
        export_formats(missing, ["onnx"], tmp_path / "out", img_size=IMG_SIZE)


def test_checkpoint_of_another_architecture_is_refused(student, tmp_path):
    with pytest.raises(CheckpointError, match="YOLO-n .* but a YOLO-s"):
        export_formats(student.checkpoint, ["onnx"], tmp_path, img_size=IMG_SIZE,
                       expect=ModelSpec("s", load_model(student.checkpoint).spec.num_classes))


def test_unknown_format_lists_known_ones_before_touching_the_checkpoint(tmp_path):
    with pytest.raises(ExportError, match="unknown export format 'onnx-int4'; known formats: onnx, onnx-fp16"):
        export_formats(tmp_path / "missing.pt", ["onnx", "onnx-int4"], tmp_path, img_size=IMG_SIZE)


@pytest.mark.parametrize("kwargs, message", [
    ({"formats": ["onnx-int8"]}, "needs calibration images"),
    ({"formats": ["tflite-int8"], "calib_method": "entropy"}, "tflite-int8 supports calib_method minmax"),
    ({"formats": ["onnx-int8"], "calib_method": "kl"}, "supports calib_method minmax, percentile, entropy"),
    ({"formats": ["onnx"], "img_size": 100}, "multiple of 32"),
    ({"formats": ["onnx-int8"], "calib_images": 0, "calibration": "train"}, "positive integer"),
    ({"formats": ["onnx-int8"], "calib_images": 10**6, "calibration": "train"}, "has only"),
    ({"formats": "onnx"}, "list of names"),
])
def test_bad_export_arguments_fail_fast_with_a_clear_error(kwargs, message, splits, tmp_path):
    checkpoint = tmp_path / "untrained.pt"
    save_checkpoint(checkpoint, {"model_spec": ModelSpec("n", 2).to_dict(),
                                 "model": build_model(ModelSpec("n", 2)).state_dict()})
    args = {"img_size": 64, **kwargs}
    if args.get("calibration") == "train":
        args["calibration"] = splits.train
    with pytest.raises(ExportError, match=message):
        export_formats(checkpoint, args.pop("formats"), tmp_path / "out", **args)


def test_a_one_class_artifact_gives_class_probability_one_so_its_score_is_the_objectness(tmp_path):
    checkpoint = tmp_path / "one-class.pt"
    torch.manual_seed(0)
    save_checkpoint(checkpoint, {"model_spec": ModelSpec("n", 1).to_dict(),
                                 "model": build_model(ModelSpec("n", 1)).state_dict()})
    [artifact] = export_formats(checkpoint, ["onnx"], tmp_path / "out", img_size=64)
    session = get_runtime("onnxruntime").load(artifact.read_bytes(), RuntimeOptions())
    pred = session.run(np.random.default_rng(0).random((1, 3, 64, 64), dtype=np.float32))
    assert pred.shape == (1, 3 * (8 * 8 + 4 * 4 + 2 * 2), 6) and np.all(pred[..., 5] == 1.0)
    assert pred[..., 4].std() > 0  # the objectness still varies: it alone ranks the detections


def test_missing_tflite_converter_says_how_to_install(tmp_path, monkeypatch):
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "litert_torch" else real_find_spec(name, *a))
    with pytest.raises(ExportError, match=r"litert_torch.*pip install -e '\.\[tflite\]'"):
        export_formats(tmp_path / "missing.pt", ["onnx", "tflite"], tmp_path, img_size=IMG_SIZE)


def test_a_runtime_and_quantization_pair_without_a_format_is_refused_naming_what_exists():
    assert format_for("onnxruntime", "int8").name == "onnx-int8"
    with pytest.raises(ExportError, match="no export format for runtime 'tflite' with quantization 'int4'; "
                                          "tflite offers fp32, fp16, dynamic, int8"):
        format_for("tflite", "int4")


def test_int8_variants_the_bench_measures_change_the_graph_as_named(artifacts, splits, tmp_path):
    """bench/int8_variants.py's options: QOperator writes QLinearConv itself; a quantized stem leaves no
    float Conv; per-tensor weights have one scale per weight tensor."""
    from trainables.export.calibration import calibration_images
    from trainables.export.onnx_quant import quantize_onnx_static

    images = calibration_images(splits.train, count=8, img_size=IMG_SIZE)
    fp32 = artifacts["onnx"].path
    convs = sum(node.op_type == "Conv" for node in onnx.load(str(fp32)).graph.node)

    def ops(**options) -> list[str]:
        path = tmp_path / f"{len(list(tmp_path.iterdir()))}.onnx"
        quantize_onnx_static(fp32, path, images, **options)
        return [node.op_type for node in onnx.load(str(path)).graph.node]

    assert ops(quant_format="QOperator").count("QLinearConv") == convs - 1  # the stem stays float
    quantized_stem = ops(float_stem=False)
    assert quantized_stem.count("Conv") == convs and quantized_stem.count("DequantizeLinear") > convs
    path = tmp_path / "per-tensor.onnx"
    quantize_onnx_static(fp32, path, images, per_channel=False)
    scales = [t for t in onnx.load(str(path)).graph.initializer if t.name.endswith("_scale") and "weight" in t.name]
    assert scales and all(len(t.dims) == 0 for t in scales)
    with pytest.raises(ExportError, match="unknown quant_format 'QDQX'; known: QDQ, QOperator"):
        quantize_onnx_static(fp32, tmp_path / "x.onnx", images, quant_format="QDQX")


@pytest.mark.skipif(not HAS_TFLITE_TOOLS, reason="TFLite converters (the `tflite` extra) are not installed")
def test_tflite_without_xnnpack_runs_the_builtin_kernels_to_the_same_output(artifacts, splits):
    image = to_input(letterbox(splits.val.load_image(0), IMG_SIZE)[0])
    with_xnnpack, without = (RuntimeOptions(), RuntimeOptions(xnnpack=False))
    a, b = (get_runtime("tflite").load(artifacts["tflite"].read_bytes(), o).run(image) for o in (with_xnnpack, without))
    assert_float32_close(b[..., 4:], a[..., 4:], ulps=4096)
    assert with_xnnpack.key() != without.key() and with_xnnpack.key() == RuntimeOptions().key()
