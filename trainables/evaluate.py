"""COCO evaluation of a torch detector, with per-stage timings.

Used after training epochs and for the float baseline of a sweep. Pre-processing is the board's
(`detection.letterbox`) and the metrics are pycocotools' (`detection.cocoeval`), so a torch model
and its exported copies are scored the same way. Inference time includes the decode because the
exported graphs contain it too.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable
from contextlib import contextmanager
from typing import TYPE_CHECKING, Iterator

import numpy as np
import torch

from detection.cocoeval import EvalResult, Scorer
from detection.letterbox import letterbox, to_input
from trainables.postprocess import decode, postprocess

if TYPE_CHECKING:
    from detection.coco import CocoDataset

log = logging.getLogger(__name__)


@contextmanager
def _eval_mode(model: torch.nn.Module) -> Iterator[None]:
    """Eval mode for the duration, then every module's own previous mode back.

    The trainer evaluates the model it is training (and may keep a frozen backbone in eval
    mode), so a plain model.train() afterwards would be wrong.
    """
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for module, training in modes:
            module.training = training


def _synchronize(device: torch.device) -> None:
    # CUDA runs asynchronously; without this the inference time would land in post-processing.
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def evaluate(model: torch.nn.Module, data: "CocoDataset", *, img_size: int, batch_size: int = 32,
             conf_threshold: float = 0.001, iou_threshold: float = 0.6, device: torch.device | str = "cpu",
             progress: Callable[[int, int], None] | None = None,
             pr_conf_threshold: float = 0.25) -> EvalResult:
    """Run `model` over every image of `data` and score it with COCOeval.

    `conf_threshold` and `iou_threshold` are the NMS settings for mAP (YOLOv5's val defaults);
    precision and recall are read at `pr_conf_threshold`. `progress(done, total)` is called after
    each batch. The model must already be on `device`, return (raw, feats) and carry `anchors`
    and `strides`; its train/eval modes are restored afterwards.
    """
    if len(data) == 0:
        raise ValueError("cannot evaluate on an empty data set")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    max_stride = max(model.strides)
    if img_size < max_stride or img_size % max_stride:
        raise ValueError(f"img_size must be a positive multiple of the model's largest stride {max_stride}, "
                         f"got {img_size}")
    device = torch.device(device)
    first_parameter = next(model.parameters(), None)
    dtype = first_parameter.dtype if first_parameter is not None else torch.float32
    total = len(data)
    scorer = Scorer(data.coco, data.image_ids, data.category_ids)
    with _eval_mode(model), torch.inference_mode():
        for start in range(0, total, batch_size):
            indices = range(start, min(start + batch_size, total))

            t0 = time.perf_counter()
            originals = [data.load_image(i) for i in indices]
            boxed = [letterbox(image, img_size) for image in originals]
            batch = torch.from_numpy(to_input(np.stack([img for img, _, _ in boxed])))
            batch = batch.to(device=device, dtype=dtype)
            _synchronize(device)
            t1 = time.perf_counter()
            raw, _ = model(batch)
            pred = decode(raw, model.anchors, model.strides)
            _synchronize(device)
            t2 = time.perf_counter()
            detections = postprocess(pred, conf_threshold=conf_threshold, iou_threshold=iou_threshold)
            for i, image, (_, scale, pad), dets in zip(indices, originals, boxed, detections):
                scorer.add(i, dets.cpu().numpy(), scale, pad, image.shape[:2])
            scorer.time("preprocess", t1 - t0)
            scorer.time("inference", t2 - t1)
            scorer.time("postprocess", time.perf_counter() - t2)
            if progress is not None:
                progress(indices.stop, total)
    return scorer.result(pr_conf_threshold=pr_conf_threshold)
