"""numpy boxes, decode and NMS: known values and a brute-force NMS reference."""
from __future__ import annotations

import numpy as np
import pytest

from detection.anchors import STRIDES, anchor_array
from detection.boxes import box_iou, xywh_to_xyxy, xyxy_to_xywh
from detection.postprocess import decode, nms, postprocess


def random_clustered_boxes(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Boxes crowded into a small area so that many overlap and suppression chains form."""
    centres = rng.uniform(0, 120, (n, 2))
    sizes = rng.uniform(5, 50, (n, 2))
    boxes = xywh_to_xyxy(np.concatenate((centres, sizes), axis=1)).astype(np.float32)
    return boxes, rng.random(n).astype(np.float32)


def test_box_format_round_trip_and_known_corners():
    centre = np.array([[50.0, 40.0, 20.0, 10.0]])
    corners = xywh_to_xyxy(centre)
    np.testing.assert_array_equal(corners, [[40.0, 35.0, 60.0, 45.0]])
    np.testing.assert_array_equal(xyxy_to_xywh(corners), centre)


def test_box_iou_matches_hand_computed_values():
    a = np.array([[0.0, 0.0, 40.0, 40.0], [5.0, 5.0, 5.0, 5.0]])  # second box is degenerate
    b = np.array([[4.0, 0.0, 44.0, 40.0], [0.0, 0.0, 40.0, 40.0], [100.0, 100.0, 110.0, 110.0],
                  [5.0, 5.0, 5.0, 5.0]])
    iou = box_iou(a, b)
    np.testing.assert_allclose(iou[0], [36 * 40 / (44 * 40), 1.0, 0.0, 0.0])
    np.testing.assert_array_equal(iou[1], [0.0, 0.0, 0.0, 0.0])  # empty union: 0, not NaN


def test_box_iou_rejects_wrong_shapes_naming_them():
    with pytest.raises(ValueError, match=r"last dimension of 4.*\(3, 5\)"):
        box_iou(np.zeros((3, 5)), np.zeros((2, 4)))


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("iou_threshold", [0.3, 0.6])
@pytest.mark.parametrize("block", [7, 512])  # many blocks (kept boxes suppress later blocks) and one
def test_nms_matches_bruteforce_reference(seed, iou_threshold, block, greedy_nms_reference):
    boxes, scores = random_clustered_boxes(np.random.default_rng(seed), 300)
    expected = greedy_nms_reference(boxes.tolist(), scores.tolist(), iou_threshold)
    kept = nms(boxes, scores, iou_threshold, block=block)
    assert 1 < len(expected) < len(boxes)  # the case is non-trivial
    assert kept.tolist() == expected


def test_nms_max_keep_returns_the_first_rows_of_a_full_run():
    boxes, scores = random_clustered_boxes(np.random.default_rng(3), 300)
    full = nms(boxes, scores, 0.5, block=16)
    assert nms(boxes, scores, 0.5, max_keep=7, block=16).tolist() == full[:7].tolist()


def test_nms_of_no_boxes_is_empty():
    assert nms(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), 0.5).shape == (0,)


def test_decode_puts_zero_logits_at_cell_centres_with_anchor_sizes():
    # sigmoid(0) = 0.5: xy = (2*0.5 - 0.5 + grid) * stride = (grid + 0.5) * stride, wh = anchor.
    anchors = anchor_array()
    size, classes = 64, 2
    raw = [np.zeros((1, 3, size // s, size // s, 5 + classes), np.float32) for s in STRIDES]
    out = decode(raw, anchors, STRIDES)
    cells = [3 * (size // s) ** 2 for s in STRIDES]
    assert out.shape == (1, sum(cells), 5 + classes)
    # Rows go level, anchor, y, x: level 1 (stride 16, 4x4 grid), anchor 2, y=3, x=1.
    row = cells[0] + 2 * 16 + 3 * 4 + 1
    np.testing.assert_allclose(out[0, row, :4], [1.5 * 16, 3.5 * 16, *anchors[1, 2]])
    np.testing.assert_allclose(out[0, :, 4:], 0.5)


def test_decode_rejects_raw_outputs_that_do_not_match_the_anchors():
    raw = [np.zeros((1, 2, 8, 8, 7), np.float32) for _ in STRIDES]
    with pytest.raises(ValueError, match=r"raw\[0\] must have shape \(B, 3, H, W, 5\+C\)"):
        decode(raw, anchor_array(), STRIDES)


def _pred(rows: list[list[float]]) -> np.ndarray:
    return np.asarray(rows, dtype=np.float32)


def test_postprocess_scores_are_obj_times_cls_and_multi_label_gives_one_row_per_class():
    # One box, obj 0.8, class scores 0.5 and 0.25 -> rows with scores 0.4 and 0.2, best first.
    pred = _pred([[50, 50, 20, 20, 0.8, 0.25, 0.5]])
    out = postprocess(pred, conf_threshold=0.1)
    np.testing.assert_allclose(out, [[40, 40, 60, 60, 0.4, 1], [40, 40, 60, 60, 0.2, 0]])
    assert out.dtype == np.float32
    single = postprocess(pred, conf_threshold=0.1, multi_label=False)
    np.testing.assert_allclose(single, [[40, 40, 60, 60, 0.4, 1]])


def test_postprocess_nms_suppresses_within_a_class_but_not_across_classes():
    pred = _pred([[50, 50, 20, 20, 0.9, 1.0, 0.0],
                  [51, 50, 20, 20, 0.8, 1.0, 0.0],   # same class, IoU ~0.9: suppressed
                  [50, 51, 20, 20, 0.7, 0.0, 1.0]])  # other class: kept
    out = postprocess(pred, conf_threshold=0.1, iou_threshold=0.6)
    np.testing.assert_allclose(out[:, 4:], [[0.9, 0], [0.7, 1]])


def test_postprocess_drops_rows_at_or_below_conf_threshold():
    pred = _pred([[50, 50, 20, 20, 0.5, 0.5, 0.0], [150, 50, 20, 20, 0.5, 0.6, 0.0]])
    out = postprocess(pred, conf_threshold=0.25)
    np.testing.assert_allclose(out[:, 4], [0.3])


def test_postprocess_caps_candidates_and_detections():
    rng = np.random.default_rng(4)
    n = 50
    pred = np.zeros((n, 7), np.float32)
    pred[:, 0] = np.arange(n) * 30.0  # far apart: NMS removes nothing
    pred[:, 1] = 10
    pred[:, 2:4] = 10
    pred[:, 4] = rng.uniform(0.5, 1.0, n)
    pred[:, 5] = 1.0
    top_scores = np.sort(pred[:, 4])[::-1]
    assert len(postprocess(pred, conf_threshold=0.1, max_det=5)) == 5
    np.testing.assert_allclose(postprocess(pred, conf_threshold=0.1, max_det=5)[:, 4], top_scores[:5])
    np.testing.assert_allclose(postprocess(pred, conf_threshold=0.1, max_nms=8)[:, 4], top_scores[:8])


def test_postprocess_with_nothing_above_threshold_returns_empty_six_columns():
    out = postprocess(_pred([[50, 50, 20, 20, 0.01, 0.5, 0.5]]), conf_threshold=0.25)
    assert out.shape == (0, 6)


def test_postprocess_rejects_a_batched_input_with_the_shape_in_the_message():
    with pytest.raises(ValueError, match=r"\(N, 5\+C\).*\(2, 10, 7\)"):
        postprocess(np.zeros((2, 10, 7), np.float32))
