"""The board-side accuracy runner on hand-built ONNX artifacts with known outputs.

The artifacts ignore their input and return a fixed prediction tensor, so the expected score is
known exactly: a prediction placed on the ground-truth box in letterboxed pixels must score mAP 1
once the runner letterboxes, post-processes and maps boxes back the way the board does.
"""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

from detection.coco import CocoDataset, SplitSpec
from detection.letterbox import letterbox
from detection.cocoeval import EvalResult
from device_actors.accuracy import evaluate_artifact
from device_actors.runtimes import RuntimeLoadError

REPO = Path(__file__).resolve().parents[2]
CATEGORY_IDS = (3, 9)  # COCO-style ids with a gap: class index 1 is category 9
IMAGE_HW = (60, 100)  # not square, so letterbox padding and scale both matter
GT_BOX = [30.0, 12.0, 40.0, 24.0]  # COCO [x, y, w, h] in original pixels, category 9


@pytest.fixture
def one_image_split(tmp_path) -> CocoDataset:
    images = tmp_path / "images"
    images.mkdir()
    Image.fromarray(np.full((*IMAGE_HW, 3), 90, dtype=np.uint8)).save(images / "a.png")
    annotations = tmp_path / "instances.json"
    annotations.write_text(json.dumps({
        "images": [{"id": 7, "file_name": "a.png", "height": IMAGE_HW[0], "width": IMAGE_HW[1]}],
        "annotations": [{"id": 1, "image_id": 7, "category_id": 9, "bbox": GT_BOX, "area": 960.0, "iscrowd": 0}],
        "categories": [{"id": c, "name": f"c{c}"} for c in CATEGORY_IDS]}))
    return CocoDataset(SplitSpec(images=images, annotations=annotations))


def constant_output_onnx(prediction: np.ndarray, input_hw: tuple[int, int]) -> bytes:
    """An ONNX model with a (1, 3, H, W) input whose output is always `prediction` (1, N, 5+C)."""
    zero = helper.make_node("ReduceSum", ["images"], ["total"], keepdims=0)
    times_zero = helper.make_node("Mul", ["total", "zero"], ["nothing"])
    output = helper.make_node("Add", ["prediction", "nothing"], ["predictions"])
    graph = helper.make_graph(
        [zero, times_zero, output], "constant",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, *input_hw])],
        [helper.make_tensor_value_info("predictions", TensorProto.FLOAT, list(prediction.shape))],
        initializer=[numpy_helper.from_array(prediction.astype(np.float32), "prediction"),
                     numpy_helper.from_array(np.zeros((), np.float32), "zero")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    return model.SerializeToString()


def ground_truth_prediction(size: int) -> np.ndarray:
    """One row on the ground-truth box in letterboxed pixels (cx, cy, w, h, obj, cls0, cls1), plus a
    low-score row of the other class elsewhere."""
    _, scale, (pad_x, pad_y) = letterbox(np.zeros((*IMAGE_HW, 3), np.uint8), size)
    x, y, w, h = GT_BOX
    cx, cy = (x + w / 2) * scale + pad_x, (y + h / 2) * scale + pad_y
    return np.array([[[cx, cy, w * scale, h * scale, 0.9, 0.05, 0.95],
                      [10.0, 10.0, 6.0, 6.0, 0.3, 0.5, 0.01]]], dtype=np.float32)


def test_prediction_on_the_ground_truth_box_scores_map_one(one_image_split):
    model = constant_output_onnx(ground_truth_prediction(64), (64, 64))
    result = evaluate_artifact(model, "onnxruntime", one_image_split)
    assert isinstance(result, EvalResult)
    assert result.metrics.map50_95 == pytest.approx(1.0)
    assert result.metrics.map50 == pytest.approx(1.0)
    assert result.metrics.images == 1
    assert result.preprocess_ms > 0 and result.inference_ms > 0 and result.postprocess_ms > 0


def test_input_size_comes_from_the_artifact(one_image_split):
    # The same box expressed for a 96 px input only matches if the runner letterboxes to 96 px.
    right = evaluate_artifact(constant_output_onnx(ground_truth_prediction(96), (96, 96)), "onnxruntime",
                              one_image_split)
    wrong = evaluate_artifact(constant_output_onnx(ground_truth_prediction(64), (96, 96)), "onnxruntime",
                              one_image_split)
    assert right.metrics.map50_95 == pytest.approx(1.0)
    assert wrong.metrics.map50_95 < 0.5


def test_progress_reports_every_image(one_image_split):
    calls = []
    evaluate_artifact(constant_output_onnx(ground_truth_prediction(64), (64, 64)), "onnxruntime",
                      one_image_split, progress=lambda done, total: calls.append((done, total)))
    assert calls == [(1, 1)]


def test_non_square_artifact_input_is_refused(one_image_split):
    model = constant_output_onnx(ground_truth_prediction(64), (64, 96))
    with pytest.raises(ValueError, match="64x96"):
        evaluate_artifact(model, "onnxruntime", one_image_split)


def test_unknown_runtime_lists_known_names(one_image_split):
    with pytest.raises(RuntimeLoadError, match="onnxruntime, tflite"):
        evaluate_artifact(b"", "tensorrt", one_image_split)


def test_accuracy_runner_imports_and_runs_without_torch(tmp_path, one_image_split):
    """The board has no torch: the runner must score an artifact in an interpreter that cannot import it."""
    model = tmp_path / "gt.onnx"
    model.write_bytes(constant_output_onnx(ground_truth_prediction(64), (64, 64)))
    code = textwrap.dedent('''
        import sys

        class NoTorch:
            def find_spec(self, name, path=None, target=None):
                if name == "torch" or name.startswith("torch."):
                    raise ImportError("torch is not installed on the board")
                return None

        sys.meta_path.insert(0, NoTorch())
        from pathlib import Path
        from detection.coco import CocoDataset, SplitSpec
        from device_actors.accuracy import evaluate_artifact
        data = CocoDataset(SplitSpec(images=sys.argv[2], annotations=sys.argv[3]))
        result = evaluate_artifact(Path(sys.argv[1]).read_bytes(), "onnxruntime", data)
        print("map", round(result.metrics.map50_95, 6), "torch loaded", "torch" in sys.modules)
    ''')
    spec = one_image_split.spec
    done = subprocess.run([sys.executable, "-c", code, str(model), str(spec.images), str(spec.annotations)],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "map 1.0 torch loaded False" in done.stdout
