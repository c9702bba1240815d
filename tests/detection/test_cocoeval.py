"""COCO metrics through real pycocotools on a small annotation file written to tmp_path."""
from __future__ import annotations

import contextlib
import io
import json

import numpy as np
import pytest
from pycocotools.coco import COCO

from detection.cocoeval import DetectionMetrics, evaluate, to_coco_results

# COCO category ids with gaps; position in this tuple is the contiguous training class.
CATEGORY_IDS = (1, 3, 7)
# image id -> list of (COCO category id, [x, y, w, h]) ground truth, all 40x40.
GROUND_TRUTH = {
    11: [(1, [20, 30, 40, 40]), (7, [100, 100, 40, 40])],
    12: [(3, [50, 50, 40, 40])],
    13: [(1, [120, 20, 40, 40])],
}


def _write_coco(path, ground_truth, crowd=()) -> COCO:
    """Write a COCO json with 200x200 images; `crowd` adds iscrowd boxes (image id, cat id, bbox)."""
    annotations = []
    for image_id, objects in ground_truth.items():
        for category_id, bbox in objects:
            annotations.append({"image_id": image_id, "category_id": category_id, "bbox": bbox, "iscrowd": 0})
    for image_id, category_id, bbox in crowd:
        annotations.append({"image_id": image_id, "category_id": category_id, "bbox": bbox, "iscrowd": 1})
    for i, a in enumerate(annotations, start=1):
        a.update(id=i, area=a["bbox"][2] * a["bbox"][3])
    dataset = {
        "images": [{"id": i, "file_name": f"{i}.jpg", "width": 200, "height": 200} for i in ground_truth],
        "categories": [{"id": c, "name": f"class{c}"} for c in CATEGORY_IDS],
        "annotations": annotations,
    }
    path.write_text(json.dumps(dataset))
    with contextlib.redirect_stdout(io.StringIO()):
        return COCO(str(path))


@pytest.fixture
def coco_gt(tmp_path) -> COCO:
    return _write_coco(tmp_path / "instances.json", GROUND_TRUTH)


def _dets(objects, score: float = 1.0, shift_x: float = 0.0) -> np.ndarray:
    """Ground truth of one image as (M, 6) xyxy detections with contiguous classes."""
    return np.array([[x + shift_x, y, x + shift_x + w, y + h, score, CATEGORY_IDS.index(c)]
                     for c, (x, y, w, h) in objects], dtype=np.float32)


def _results(shift_x: float = 0.0) -> list[dict]:
    return [r for image_id, objects in GROUND_TRUTH.items()
            for r in to_coco_results(image_id, _dets(objects, shift_x=shift_x), CATEGORY_IDS)]


def test_perfect_predictions_give_map_one_and_precision_recall_one(coco_gt):
    metrics = evaluate(coco_gt, _results(), list(GROUND_TRUTH))
    # pycocotools divides by tp + fp + eps, so a perfect AP can come out one ulp below 1.
    assert (metrics.map50_95, metrics.map50) == (pytest.approx(1.0, abs=1e-12), pytest.approx(1.0, abs=1e-12))
    assert (metrics.precision, metrics.recall, metrics.conf_threshold, metrics.images) == (1.0, 1.0, 0.25, 3)


def test_boxes_shifted_4px_count_at_iou_50_to_80_only_so_map_is_0_7(coco_gt):
    # 40x40 boxes shifted 4 px in x: IoU = 36*40 / (44*40) = 0.818, a true positive at the
    # thresholds 0.50..0.80 (7 of 10) and a miss at 0.85..0.95.
    metrics = evaluate(coco_gt, _results(shift_x=4.0), list(GROUND_TRUTH))
    assert metrics.map50_95 == pytest.approx(0.7, abs=1e-12)
    assert metrics.map50 == pytest.approx(1.0, abs=1e-12)
    assert (metrics.precision, metrics.recall) == (1.0, 1.0)


def test_results_carry_coco_category_ids_and_top_left_width_height_boxes():
    dets = np.array([[10, 20, 50, 80, 0.9, 2], [0, 0, 5, 5, 0.5, 1]], dtype=np.float32)
    results = to_coco_results(42, dets, CATEGORY_IDS)
    assert [r["category_id"] for r in results] == [7, 3]
    assert results[0]["bbox"] == [10.0, 20.0, 40.0, 60.0]
    assert results[0]["image_id"] == 42
    assert results[0]["score"] == pytest.approx(0.9)


def test_contiguous_classes_map_back_so_gap_ids_still_match_ground_truth(coco_gt):
    # Image 11 holds categories 1 and 7 (contiguous 0 and 2); treating the class index as the COCO
    # id would score category 7's box as a miss.
    metrics = evaluate(coco_gt, to_coco_results(11, _dets(GROUND_TRUTH[11]), CATEGORY_IDS), [11])
    assert (metrics.map50, metrics.recall) == (pytest.approx(1.0, abs=1e-12), 1.0)


def test_to_coco_results_rejects_a_class_without_a_category_id():
    with pytest.raises(ValueError, match=r"image 5 have class 3\.0.*0\.\.2"):
        to_coco_results(5, np.array([[0, 0, 1, 1, 0.5, 3]]), CATEGORY_IDS)


def test_empty_results_give_zero_metrics(coco_gt):
    assert evaluate(coco_gt, [], list(GROUND_TRUTH), conf_threshold=0.5) == DetectionMetrics(
        map50_95=0.0, map50=0.0, precision=0.0, recall=0.0, conf_threshold=0.5, images=3)


def test_precision_and_recall_are_taken_at_the_confidence_threshold(coco_gt):
    results = (to_coco_results(11, _dets(GROUND_TRUTH[11], score=0.9), CATEGORY_IDS)  # 2 TP
               + to_coco_results(12, np.array([[150, 150, 190, 190, 0.5, 1]]), CATEGORY_IDS)  # FP
               + to_coco_results(13, _dets(GROUND_TRUTH[13], score=0.1), CATEGORY_IDS))  # TP, low score
    high = evaluate(coco_gt, results, list(GROUND_TRUTH), conf_threshold=0.25)
    assert (high.precision, high.recall) == (pytest.approx(2 / 3), pytest.approx(2 / 4))
    low = evaluate(coco_gt, results, list(GROUND_TRUTH), conf_threshold=0.05)
    assert (low.precision, low.recall) == (pytest.approx(3 / 4), pytest.approx(3 / 4))


def test_detections_on_crowd_boxes_are_neither_false_positives_nor_missed(tmp_path):
    crowd = [(12, 3, [120, 120, 60, 60])]
    coco_gt = _write_coco(tmp_path / "crowd.json", GROUND_TRUTH, crowd=crowd)
    results = _results() + to_coco_results(12, np.array([[125, 125, 170, 170, 0.9, 1]]), CATEGORY_IDS)
    metrics = evaluate(coco_gt, results, list(GROUND_TRUTH))
    assert (metrics.precision, metrics.recall) == (1.0, 1.0)
    assert metrics.map50_95 == pytest.approx(1.0, abs=1e-12)


def test_only_the_requested_images_are_evaluated(coco_gt):
    # Image 13's prediction is wrong, but only 11 and 12 are evaluated.
    results = [r for image_id in (11, 12) for r in to_coco_results(image_id, _dets(GROUND_TRUTH[image_id]),
                                                                   CATEGORY_IDS)]
    results += to_coco_results(13, np.array([[0, 150, 30, 190, 0.9, 0]]), CATEGORY_IDS)
    metrics = evaluate(coco_gt, results, [11, 12])
    assert (metrics.map50_95, metrics.precision, metrics.images) == (pytest.approx(1.0, abs=1e-12), 1.0, 2)
    assert evaluate(coco_gt, results, list(GROUND_TRUTH)).precision == pytest.approx(3 / 4)


def test_evaluate_leaves_the_callers_result_dicts_unchanged(coco_gt):
    results = _results()
    before = json.dumps(results)
    evaluate(coco_gt, results, list(GROUND_TRUTH))
    assert json.dumps(results) == before


def test_unknown_image_ids_are_rejected_by_name(coco_gt):
    with pytest.raises(ValueError, match=r"image_ids \[99\] are not in the ground-truth"):
        evaluate(coco_gt, _results(), [11, 99])
    with pytest.raises(ValueError, match=r"results refer to image ids \[99\]"):
        evaluate(coco_gt, to_coco_results(99, np.array([[0, 0, 5, 5, 0.9, 0]]), CATEGORY_IDS), [11])
