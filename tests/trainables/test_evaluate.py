"""The torch evaluator end to end on a tiny COCO split written to tmp_path."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

from detection.anchors import STRIDES, anchor_array
from detection.coco import CocoDataset, SplitSpec
from detection.letterbox import letterbox
from trainables.evaluate import EvalResult, evaluate
from trainables.models.yolo import ModelSpec, build_model

IMG_SIZE = 64
CATEGORY_IDS = (2, 5)  # COCO ids with a gap; contiguous classes 0 and 1
# file name -> (height, width, [(category id, [x, y, w, h]), ...]); sizes differ so padding differs.
IMAGES = {
    "wide.png": (80, 128, [(2, [10, 12, 30, 40]), (5, [70, 20, 40, 30])]),
    "tall.png": (120, 72, [(5, [20, 60, 30, 40])]),
    "square.png": (96, 96, [(2, [40, 8, 24, 50])]),
}


def _write_split(tmp_path, category_ids: tuple[int, ...]) -> CocoDataset:
    """IMAGES as a COCO split; with one category id every object is of that one class."""
    images_dir = tmp_path / "images"
    images_dir.mkdir()
    rng = np.random.default_rng(0)
    images, annotations = [], []
    for image_id, (name, (height, width, objects)) in enumerate(IMAGES.items(), start=1):
        Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(images_dir / name)
        images.append({"id": image_id, "file_name": name, "height": height, "width": width})
        for category_id, bbox in objects:
            category_id = category_id if len(category_ids) > 1 else category_ids[0]
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": category_id,
                                "bbox": bbox, "area": bbox[2] * bbox[3], "iscrowd": 0})
    path = tmp_path / "instances.json"
    path.write_text(json.dumps({"images": images, "annotations": annotations,
                                "categories": [{"id": c, "name": f"c{c}"} for c in category_ids]}))
    return CocoDataset(SplitSpec(images=images_dir, annotations=path))


@pytest.fixture
def tiny_split(tmp_path) -> CocoDataset:
    return _write_split(tmp_path, CATEGORY_IDS)


def _logit(p: float) -> float:
    return math.log(p / (1 - p))


class GroundTruthModel(torch.nn.Module):
    """Emits head logits that decode exactly to each image's ground truth, in data order.

    Boxes are placed in letterboxed pixels with the same `letterbox` the evaluator uses, so a
    perfect score proves the whole chain: letterbox, decode, NMS, mapping back to the original
    image and to COCO category ids.
    """

    LEVEL, ANCHOR = 0, 1  # stride 8, anchor (16, 30): every box of IMAGES is < 4x that anchor

    def __init__(self, data: CocoDataset, num_classes: int, class_logit: float = 12.0,
                 false_positive_logits: tuple[float, float] | None = None):
        super().__init__()
        self.class_logit = class_logit
        # (obj, class) logits of one extra box per image away from every object: a false positive
        self.false_positive = false_positive_logits
        self.register_buffer("anchors", torch.from_numpy(anchor_array()))
        self.strides = STRIDES
        self.scale = torch.nn.Parameter(torch.ones(()))  # gives the evaluator a dtype to read
        self.queue = [self._image_logits(data, i, num_classes) for i in range(len(data))]

    def _image_logits(self, data: CocoDataset, i: int, num_classes: int) -> list[torch.Tensor]:
        raw = [torch.full((3, IMG_SIZE // s, IMG_SIZE // s, 5 + num_classes), -20.0) for s in STRIDES]
        _, scale, (pad_x, pad_y) = letterbox(data.load_image(i), IMG_SIZE)
        boxes, classes = data.annotations(i)
        stride = STRIDES[self.LEVEL]
        anchor_w, anchor_h = anchor_array()[self.LEVEL, self.ANCHOR]
        for (x1, y1, x2, y2), cls in zip(boxes.tolist(), classes.tolist()):
            cx, cy = (x1 + x2) / 2 * scale + pad_x, (y1 + y2) / 2 * scale + pad_y
            w, h = (x2 - x1) * scale, (y2 - y1) * scale
            gx, gy = int(cx // stride), int(cy // stride)
            cell = raw[self.LEVEL][self.ANCHOR, gy, gx]
            # Invert xy = (2 s - 0.5 + g) * stride and wh = (2 s)^2 * anchor.
            cell[0] = _logit((cx / stride - gx + 0.5) / 2)
            cell[1] = _logit((cy / stride - gy + 0.5) / 2)
            cell[2] = _logit(math.sqrt(w / anchor_w) / 2)
            cell[3] = _logit(math.sqrt(h / anchor_h) / 2)
            cell[4] = 12.0
            cell[5 + cls] = self.class_logit
        if self.false_positive is not None:  # logits 0: a 10 x 13 box at (36, 36), IoU < 0.25 with every object
            raw[self.LEVEL][0, 4, 4, :] = 0.0
            raw[self.LEVEL][0, 4, 4, 4], raw[self.LEVEL][0, 4, 4, 5:] = self.false_positive
        return raw

    def forward(self, x: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        batch, self.queue = self.queue[:len(x)], self.queue[len(x):]
        return [torch.stack([image[level] for image in batch]) * self.scale for level in range(3)], []


def test_evaluator_gives_a_ground_truth_model_a_perfect_score(tiny_split):
    model = GroundTruthModel(tiny_split, num_classes=2)
    result = evaluate(model, tiny_split, img_size=IMG_SIZE, batch_size=2)
    assert result.metrics.map50_95 == pytest.approx(1.0, abs=1e-9)
    assert (result.metrics.precision, result.metrics.recall, result.metrics.images) == (1.0, 1.0, 3)


def test_a_one_class_data_set_ranks_detections_by_objectness_not_by_the_untrained_class_channel(tmp_path):
    # Each image: its objects with objectness ~1 but a class logit of -3 (sigmoid 0.05), and a false
    # positive with objectness 0.88 and class logit +12. Scored as obj x cls the false positives
    # would rank first; a one-class model has no class to be unsure of, so the objects come first.
    one_class = _write_split(tmp_path, (7,))
    model = GroundTruthModel(one_class, num_classes=1, class_logit=-3.0, false_positive_logits=(2.0, 12.0))
    result = evaluate(model, one_class, img_size=IMG_SIZE, batch_size=2)
    assert result.metrics.map50_95 == pytest.approx(1.0, abs=1e-9)


def test_evaluator_runs_an_untrained_model_end_to_end_with_finite_timings(tiny_split):
    torch.manual_seed(0)
    model = build_model(ModelSpec("n", num_classes=2))
    model.train()
    model.backbone.eval()  # as the trainer does for a frozen backbone
    calls: list[tuple[int, int]] = []
    result = evaluate(model, tiny_split, img_size=IMG_SIZE, batch_size=2,
                      progress=lambda done, total: calls.append((done, total)))
    assert isinstance(result, EvalResult)
    assert calls == [(2, 3), (3, 3)]
    for ms in (result.preprocess_ms, result.inference_ms, result.postprocess_ms):
        assert math.isfinite(ms) and ms > 0
    m = result.metrics
    assert m.images == 3 and m.conf_threshold == 0.25
    assert all(0.0 <= v <= 1.0 for v in (m.map50_95, m.map50, m.precision, m.recall))
    # Every module is back in the mode it had before evaluation.
    assert model.training and model.neck.training and not model.backbone.training


def test_evaluator_rejects_an_image_size_the_model_cannot_take(tiny_split):
    model = build_model(ModelSpec("n", num_classes=2))
    with pytest.raises(ValueError, match=r"multiple of the model's largest stride 32, got 48"):
        evaluate(model, tiny_split, img_size=48)
