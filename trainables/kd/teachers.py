"""Teachers are trained once and cached by a hash of (model, data, resolution, epochs, seed, hyper-
parameters), so a sweep of 100 trials trains each teacher once and the next sweep reuses it."""
from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import replace
from pathlib import Path

from common import atomic
from common.hashing import file_sha256
from common.locking import lock_exclusive
from detection.coco import CocoDataset
from trainables.checkpoint import load_checkpoint
from trainables.models.family import SIZES
from trainables.models.yolo import ModelSpec
from trainables.hyper import TrainConfig
from trainables.train import TrainResult, fit

log = logging.getLogger(__name__)

DONE = "complete.json"  # written last, atomically: its presence says the entry's checkpoint is final


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
    entry = atomic.private_dir(Path(cache_dir) / "teachers") / f"yolo{size}-{cfg.img_size}px-e{cfg.epochs}-s{cfg.seed}-{teacher_key(size, train_data, cfg)}"
    entry.mkdir(parents=True, exist_ok=True)
    with open(entry / ".lock", "w") as lock:
        lock_exclusive(lock.fileno(), entry / ".lock")  # a file system without locks is refused, named
        if not _finished(entry):
            log.info("training teacher YOLO-%s (%d epochs at %d px) into %s", size, cfg.epochs, cfg.img_size, entry)
            result: TrainResult = fit(ModelSpec(size, train_data.num_classes), train_data, val_data, cfg, entry,
                                      **fit_kwargs)
            marker = {"metrics": result.final_metrics, "sha256": file_sha256(entry / "last.pt")}
            atomic.write_text(entry / DONE, json.dumps(marker, indent=2))
    return entry / "last.pt"


def _finished(entry: Path) -> bool:
    """Whether a cache entry holds a trained teacher. A damaged one (its marker unreadable or not a
    marker, its checkpoint unreadable or not the one the marker hashed) is cleared with a warning and
    trained again, never trusted. Markers written before the hash was recorded are checked by loading."""
    done = entry / DONE
    if not done.exists():
        return False
    try:
        marker = json.loads(done.read_text())
        if not isinstance(marker.get("metrics"), dict):
            raise ValueError(f"{done} holds no metrics")
        if "sha256" in marker and file_sha256(entry / "last.pt") != marker["sha256"]:
            raise ValueError(f"last.pt does not match the sha256 in {done}")
        load_checkpoint(entry / "last.pt")
        return True
    except (ValueError, KeyError, TypeError, AttributeError, OSError) as e:  # CheckpointError is a ValueError
        log.warning("teacher cache entry %s is damaged (%s): training the teacher again", entry, e)
        for name in (DONE, "last.pt"):
            (entry / name).unlink(missing_ok=True)
        return False


def teacher_metrics(checkpoint: Path) -> dict:
    """Val metrics recorded when a cached teacher finished training ({} for external checkpoints)."""
    done = Path(checkpoint).parent / DONE
    return json.loads(done.read_text())["metrics"] if done.exists() else {}
