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
from typing import TYPE_CHECKING

from detection.cocoeval import EvalResult, Scorer
from detection.letterbox import letterbox, to_input
from detection.postprocess import postprocess
from device_actors.runtimes import RuntimeOptions, get_runtime

if TYPE_CHECKING:
    from detection.coco import CocoDataset

log = logging.getLogger(__name__)


def evaluate_artifact(model: bytes, runtime: str, data: "CocoDataset", *, options: RuntimeOptions = RuntimeOptions(),
                      conf_threshold: float = 0.001, iou_threshold: float = 0.6, max_det: int = 300,
                      pr_conf_threshold: float = 0.25,
                      progress: Callable[[int, int], None] | None = None) -> EvalResult:
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
    scorer = Scorer(data.coco, data.image_ids, data.category_ids)
    for i in range(total):
        t0 = time.perf_counter()
        image = data.load_image(i)
        boxed, scale, pad = letterbox(image, height)
        batch = to_input(boxed)
        t1 = time.perf_counter()
        pred = session.run(batch)
        t2 = time.perf_counter()
        dets = postprocess(pred[0], conf_threshold=conf_threshold, iou_threshold=iou_threshold, max_det=max_det)
        scorer.add(i, dets, scale, pad, image.shape[:2])
        scorer.time("preprocess", t1 - t0)
        scorer.time("inference", t2 - t1)
        scorer.time("postprocess", time.perf_counter() - t2)
        if progress is not None:
            progress(i + 1, total)
    return scorer.result(pr_conf_threshold=pr_conf_threshold)
