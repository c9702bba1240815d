"""Teachers are trained once and cached by a hash of (model, data, resolution, epochs, seed, hyper-
parameters), so a sweep of 100 trials trains each teacher once and the next sweep reuses it."""
from __future__ import annotations

import fcntl
import hashlib
import json
import logging
from dataclasses import replace
from pathlib import Path

from detection.coco import CocoDataset
from trainables.models.family import SIZES
from trainables.models.yolo import ModelSpec
from trainables.hyper import TrainConfig
from trainables.train import TrainResult, fit

log = logging.getLogger(__name__)


def data_fingerprint(data: CocoDataset) -> str:
    """Identity of a training split: its annotations as read (a YOLO set's labels too) and the chosen image ids."""
    h = hashlib.sha256(data.annotations_digest.encode())
    h.update(json.dumps(sorted(int(i) for i in data.image_ids)).encode())
    return h.hexdigest()


def teacher_config(base: TrainConfig, *, epochs: int, img_size: int, seed: int) -> TrainConfig:
    """How a teacher is trained: the base hyper-parameters, from scratch, nothing frozen."""
    return replace(base, epochs=epochs, img_size=img_size, seed=seed, init=None, freeze_backbone=False)


def teacher_key(size: str, data: CocoDataset, cfg: TrainConfig) -> str:
    """What changes a teacher's weights. The torch thread count is in: CPU kernels (bf16 autocast
    above all) sum in an order that depends on it, so the same seed trained on 1 and on 2 threads
    gives different teachers. Data-loading workers and the device request ("auto") are not."""
    cfg_dict = {k: v for k, v in cfg.to_dict().items() if k not in {"device", "workers"}}
    cfg_dict["threads"] = cfg_dict.pop("torch_threads")  # its name before the rename: cached teachers stay valid
    payload = json.dumps({"size": size, "data": data_fingerprint(data), "train": cfg_dict}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def ensure_teacher(size: str, train_data: CocoDataset, val_data: CocoDataset | None, cfg: TrainConfig,
                   cache_dir: Path, **fit_kwargs) -> Path:
    """Checkpoint of a YOLO-`size` teacher trained with `cfg`, trained now unless cached.

    A file lock makes concurrent callers (several trials on one node) wait for one training run
    instead of starting their own; an interrupted training run resumes from its last epoch.
    """
    if size not in SIZES:
        raise ValueError(f"unknown teacher size {size!r}; known sizes: {', '.join(SIZES)}")
    entry = Path(cache_dir) / "teachers" / f"yolo{size}-{cfg.img_size}px-e{cfg.epochs}-s{cfg.seed}-{teacher_key(size, train_data, cfg)}"
    entry.mkdir(parents=True, exist_ok=True)
    done = entry / "complete.json"
    with open(entry / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not done.exists():
            log.info("training teacher YOLO-%s (%d epochs at %d px) into %s", size, cfg.epochs, cfg.img_size, entry)
            result: TrainResult = fit(ModelSpec(size, train_data.num_classes), train_data, val_data, cfg, entry,
                                      **fit_kwargs)
            done.write_text(json.dumps({"metrics": result.final_metrics}, indent=2))
    return entry / "last.pt"


def teacher_metrics(checkpoint: Path) -> dict:
    """Val metrics recorded when a cached teacher finished training ({} for external checkpoints)."""
    done = Path(checkpoint).parent / "complete.json"
    return json.loads(done.read_text())["metrics"] if done.exists() else {}
