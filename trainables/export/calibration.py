"""Calibration images: training images prepared exactly as the board prepares its input.

Static quantization fixes activation ranges from these images, so they must go through the same
letterbox and scaling as inference, and they must come from the training split: calibrating on
the images the artifact is then scored on would leak the evaluation set into the model.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from detection.letterbox import letterbox, to_input
from trainables.export.artifact import ExportError

if TYPE_CHECKING:
    from detection.coco import CocoDataset


def check_count(data: "CocoDataset", count: int) -> None:
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise ExportError(f"calib_images must be a positive integer, got {count!r}")
    if count > len(data):
        raise ExportError(f"calib_images={count} but the calibration split {data.spec.annotations} has only "
                          f"{len(data)} images")


def calibration_images(data: "CocoDataset", *, count: int, img_size: int, seed: int = 0) -> list[np.ndarray]:
    """`count` images of `data` drawn without replacement by `seed`, each (1, 3, S, S) float32 in [0, 1]."""
    check_count(data, count)
    chosen = np.sort(np.random.default_rng(seed).choice(len(data), size=count, replace=False))
    return [to_input(letterbox(data.load_image(int(i)), img_size)[0]) for i in chosen]


def provenance(data: "CocoDataset", count: int, seed: int) -> dict:
    """What to record about the calibration set next to an artifact."""
    return {"calib_split": str(data.spec.annotations), "calib_images": count, "calib_seed": seed}
