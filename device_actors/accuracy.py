"""COCO accuracy of an exported artifact, run the way the board runs it (numpy only, no torch).

The board cannot run the PyTorch model, and a quantized file does not score like it, so every
artifact is scored itself: the same letterbox as training, the artifact's own runtime (which
holds the decode), numpy NMS, and pycocotools. The input size is read from the loaded session,
so the file, not the caller, says what resolution it was exported for.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from detection.cocoeval import DetectionMetrics, evaluate, to_coco_results
from detection.letterbox import boxes_to_original, letterbox, to_input
from detection.postprocess import postprocess
from device_actors.runtimes import RuntimeOptions, get_runtime

if TYPE_CHECKING:
    from detection.coco import CocoDataset

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ArtifactEval:
    """Metrics plus mean milliseconds per image for each stage (batch 1, as on the board)."""

    metrics: DetectionMetrics
    preprocess_ms: float
    inference_ms: float
    postprocess_ms: float


def evaluate_artifact(model: bytes, runtime: str, data: "CocoDataset", *, options: RuntimeOptions = RuntimeOptions(),
                      conf_threshold: float = 0.001, iou_threshold: float = 0.6, max_det: int = 300,
                      pr_conf_threshold: float = 0.25,
                      progress: Callable[[int, int], None] | None = None) -> ArtifactEval:
    """Run `model` (ONNX or TFLite bytes) in `runtime` over every image of `data` and score it.

    `conf_threshold`/`iou_threshold` are the NMS settings for mAP (YOLOv5's val defaults, as in
    `trainables.evaluate`); precision and recall are read at `pr_conf_threshold`.
    `progress(done, total)` is called after each image.
    """
    if len(data) == 0:
        raise ValueError("cannot evaluate on an empty data set")
    session = get_runtime(runtime).load(model, options)
    height, width = session.input_hw
    if height != width:
        raise ValueError(f"the artifact's input is {height}x{width}; letterbox evaluation needs a square input")
    total = len(data)
    results: list[dict] = []
    seconds = {"preprocess": 0.0, "inference": 0.0, "postprocess": 0.0}
    for i in range(total):
        t0 = time.perf_counter()
        image = data.load_image(i)
        boxed, scale, pad = letterbox(image, height)
        batch = to_input(boxed)
        t1 = time.perf_counter()
        pred = session.run(batch)
        t2 = time.perf_counter()
        dets = postprocess(pred[0], conf_threshold=conf_threshold, iou_threshold=iou_threshold, max_det=max_det)
        dets[:, :4] = boxes_to_original(dets[:, :4], scale, pad, image.shape[:2])
        results.extend(to_coco_results(data.image_ids[i], dets, data.category_ids))
        t3 = time.perf_counter()
        seconds["preprocess"] += t1 - t0
        seconds["inference"] += t2 - t1
        seconds["postprocess"] += t3 - t2
        if progress is not None:
            progress(i + 1, total)
    metrics = evaluate(data.coco, results, data.image_ids, conf_threshold=pr_conf_threshold)
    per_image_ms = {stage: s * 1000.0 / total for stage, s in seconds.items()}
    log.info("%s artifact on %d images: mAP@.5:.95 %.4f, mAP@.5 %.4f; ms/image pre %.1f, inference %.1f, post %.1f",
             runtime, total, metrics.map50_95, metrics.map50, per_image_ms["preprocess"],
             per_image_ms["inference"], per_image_ms["postprocess"])
    return ArtifactEval(metrics=metrics, preprocess_ms=per_image_ms["preprocess"],
                        inference_ms=per_image_ms["inference"], postprocess_ms=per_image_ms["postprocess"])
