"""Run an exported artifact on images and keep what it detects, the way a deployed detector runs:
letterbox, the artifact's runtime, NMS at a display threshold, boxes back in original pixels.
numpy only (the board runs it too); `detection.draw` turns the rows into pictures."""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from detection.letterbox import boxes_to_original, letterbox, to_input
from detection.postprocess import postprocess

DISPLAY_CONF = 0.25  # YOLOv5's detect.py default: what a user would call a detection
DISPLAY_IOU = 0.45


@dataclass(frozen=True)
class Detected:
    dets: np.ndarray  # (M, 6): x1, y1, x2, y2 in original pixels, score, class index
    preprocess_ms: float
    inference_ms: float
    postprocess_ms: float


def detect(session, image: np.ndarray, *, conf: float = DISPLAY_CONF, iou: float = DISPLAY_IOU,
           max_det: int = 300) -> Detected:
    """One (H, W, 3) uint8 RGB image through a loaded runtime session (`device_actors.runtimes`)."""
    t0 = time.perf_counter()
    boxed, scale, pad = letterbox(image, session.input_hw[0])
    batch = to_input(boxed)
    t1 = time.perf_counter()
    pred = session.run(batch)
    t2 = time.perf_counter()
    dets = postprocess(pred[0], conf_threshold=conf, iou_threshold=iou, max_det=max_det, multi_label=False)
    dets[:, :4] = boxes_to_original(dets[:, :4], scale, pad, image.shape[:2])
    t3 = time.perf_counter()
    return Detected(dets, (t1 - t0) * 1000, (t2 - t1) * 1000, (t3 - t2) * 1000)
