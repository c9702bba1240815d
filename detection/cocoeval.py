"""COCO detection metrics through pycocotools, plus precision and recall at one confidence.

mAP comes straight from COCOeval so numbers are comparable with published YOLOv5 results. The
thesis also reports P and R next to mAP; they are read from COCOeval's own per-image matching
(IoU 0.5, greedy by score per image and class, crowd boxes ignored) instead of a second matcher.
"""
from __future__ import annotations

import contextlib
import io
import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

log = logging.getLogger(__name__)

# Index of IoU 0.50 in COCOeval's params.iouThrs (0.50:0.05:0.95), used for P and R.
IOU50_INDEX = 0


@dataclass(frozen=True)
class DetectionMetrics:
    """One evaluation's headline numbers; `conf_threshold` is the one P and R were taken at."""

    map50_95: float
    map50: float
    precision: float
    recall: float
    conf_threshold: float
    images: int


@dataclass(frozen=True)
class EvalResult:
    """An evaluation's metrics plus mean milliseconds per image for each stage; the torch evaluator
    and the artifact runner report the same shape, so their numbers sit side by side."""

    metrics: DetectionMetrics
    preprocess_ms: float
    inference_ms: float
    postprocess_ms: float


def to_coco_results(image_id: int, dets: np.ndarray, category_ids: Sequence[int]) -> list[dict]:
    """Detections (M, 6) [x1, y1, x2, y2, score, class] in ORIGINAL image pixels -> COCO results.

    `class` is the contiguous training index; `category_ids[class]` is the COCO id it stands for
    (COCO ids have gaps). The bbox is COCO's top-left [x, y, w, h].
    """
    dets = np.asarray(dets, dtype=np.float64)
    if dets.ndim != 2 or dets.shape[1] != 6:
        raise ValueError(f"dets for image {image_id} must have shape (M, 6), got {dets.shape}")
    classes = dets[:, 5].astype(np.int64)
    bad = (classes < 0) | (classes >= len(category_ids)) | (classes != dets[:, 5])
    if bad.any():
        raise ValueError(f"dets for image {image_id} have class {float(dets[bad, 5][0])}; allowed are the "
                         f"integers 0..{len(category_ids) - 1} (one per entry of category_ids)")
    return [{"image_id": int(image_id),
             "category_id": int(category_ids[c]),
             "bbox": [float(x1), float(y1), float(x2 - x1), float(y2 - y1)],
             "score": float(score)}
            for (x1, y1, x2, y2, score, _), c in zip(dets, classes)]


def _precision_recall(coco_eval: COCOeval, conf_threshold: float) -> tuple[float, float]:
    """P and R at IoU 0.5 over detections scoring >= conf_threshold, from COCOeval.evalImgs.

    COCOeval matches detections greedily in score order, so matches of the detections above the
    threshold do not depend on the ones below it. Detections matched to crowd (ignored) boxes
    count as neither TP nor FP, and ignored boxes are not in the recall denominator. Like mAP,
    this sees at most params.maxDets[-1] (100) detections per image and class.
    """
    all_areas = coco_eval.params.areaRng[0]
    true_pos = false_pos = positives = 0
    for e in coco_eval.evalImgs:
        if e is None or e["aRng"] != all_areas:
            continue
        positives += int(np.count_nonzero(e["gtIgnore"] == 0))
        confident = np.asarray(e["dtScores"], dtype=np.float64) >= conf_threshold
        counted = confident & ~e["dtIgnore"][IOU50_INDEX].astype(bool)
        matched = e["dtMatches"][IOU50_INDEX] > 0
        true_pos += int(np.count_nonzero(counted & matched))
        false_pos += int(np.count_nonzero(counted & ~matched))
    precision = true_pos / (true_pos + false_pos) if true_pos + false_pos else 0.0
    recall = true_pos / positives if positives else 0.0
    return precision, recall


def evaluate(coco_gt: COCO, results: list[dict], image_ids: Sequence[int], *,
             conf_threshold: float = 0.25) -> DetectionMetrics:
    """COCO bbox mAP@.5:.95 and mAP@.5 over `image_ids`, with P and R at `conf_threshold`.

    Empty `results` (e.g. an untrained model) give zeros rather than pycocotools' exception.
    When the images hold no ground truth COCOeval reports -1; that becomes 0 with a warning so a
    sweep's objective stays a number.
    """
    image_ids = [int(i) for i in image_ids]
    unknown = sorted(set(image_ids) - set(coco_gt.getImgIds()))
    if unknown:
        raise ValueError(f"image_ids {unknown[:5]} are not in the ground-truth COCO set")
    if not results:
        return DetectionMetrics(0.0, 0.0, 0.0, 0.0, conf_threshold, len(image_ids))
    stray = sorted({r["image_id"] for r in results} - set(coco_gt.getImgIds()))
    if stray:
        raise ValueError(f"results refer to image ids {stray[:5]} that are not in the ground-truth COCO set")
    with contextlib.redirect_stdout(io.StringIO()):
        # loadRes adds keys (id, area, ...) to every dict it gets; copies keep the caller's intact.
        coco_dt = coco_gt.loadRes([dict(r) for r in results])
        coco_eval = COCOeval(coco_gt, coco_dt, iouType="bbox")
        coco_eval.params.imgIds = image_ids
        coco_eval.evaluate()
        coco_eval.accumulate()
        coco_eval.summarize()
    map50_95, map50 = (float(s) for s in coco_eval.stats[:2])
    if map50_95 < 0 or map50 < 0:
        log.warning("no ground-truth boxes in the %d evaluated images; reporting mAP 0", len(image_ids))
        map50_95, map50 = max(map50_95, 0.0), max(map50, 0.0)
    precision, recall = _precision_recall(coco_eval, conf_threshold)
    return DetectionMetrics(map50_95, map50, precision, recall, conf_threshold, len(image_ids))


class Scorer:
    """Collects one evaluation's detections and per-stage times, then scores them with COCOeval.

    The torch evaluator and the artifact runner differ only in how they get detections; both feed
    them here, so their mAP and timings are computed the same way.
    """

    STAGES = ("preprocess", "inference", "postprocess")

    def __init__(self, coco_gt: COCO, image_ids: Sequence[int], category_ids: Sequence[int]):
        self.coco_gt, self.image_ids, self.category_ids = coco_gt, list(image_ids), list(category_ids)
        self.results: list[dict] = []
        self.seconds = dict.fromkeys(self.STAGES, 0.0)

    def add(self, index: int, dets: np.ndarray, scale: float, pad: tuple[float, float],
            shape_hw: tuple[int, int]) -> None:
        """Detections (M, 6) in letterboxed pixels of image `index`, mapped back to the original image."""
        from detection.letterbox import boxes_to_original

        dets = np.array(dets, dtype=np.float32, copy=True)
        dets[:, :4] = boxes_to_original(dets[:, :4], scale, pad, shape_hw)
        self.results.extend(to_coco_results(self.image_ids[index], dets, self.category_ids))

    def time(self, stage: str, seconds: float) -> None:
        self.seconds[stage] += seconds

    def result(self, *, pr_conf_threshold: float = 0.25) -> EvalResult:
        metrics = evaluate(self.coco_gt, self.results, self.image_ids, conf_threshold=pr_conf_threshold)
        per_image = {stage: s * 1000.0 / max(len(self.image_ids), 1) for stage, s in self.seconds.items()}
        log.info("%d images: mAP@.5:.95 %.4f, mAP@.5 %.4f, P %.3f, R %.3f; ms/image pre %.1f, inference %.1f, "
                 "post %.1f", len(self.image_ids), metrics.map50_95, metrics.map50, metrics.precision,
                 metrics.recall, per_image["preprocess"], per_image["inference"], per_image["postprocess"])
        return EvalResult(metrics=metrics, preprocess_ms=per_image["preprocess"],
                          inference_ms=per_image["inference"], postprocess_ms=per_image["postprocess"])
