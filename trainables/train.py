"""The detector trainer: SGD with warm-up, cosine or linear decay, EMA, gradient accumulation, AMP.

One entry point, `fit`, trains a student from scratch or from a checkpoint, with or without a
distiller, and writes `last.pt` after every epoch. Calling `fit` again on the same `out_dir`
resumes from that checkpoint and ends with the same weights as an uninterrupted run: data order
and augmentation depend only on (seed, epoch, index), and the checkpoint carries optimizer, EMA
and scaler state.
"""
from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterable

import torch
from torch import nn

from detection.coco import CocoDataset
from trainables.checkpoint import CheckpointError, checkpoint_spec, load_checkpoint, save_checkpoint
from trainables.data import DetectionDataset, make_loader
from trainables.ema import ModelEMA
from trainables.evaluate import evaluate
from trainables.hyper import TrainConfig
from trainables.kd.base import CALIBRATION_BUFFERS, Distiller
from trainables.loss import DETECTION_PARTS, DetectionLoss
from trainables.models.yolo import YOLO, ModelSpec, build_model

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EpochResult:
    epoch: int  # 1-based number of the epoch just finished
    epochs: int
    losses: dict[str, float]  # mean per-image training loss parts (box, obj, cls, and any KD parts)
    metrics: dict[str, float]  # val metrics (map50_95, map50, precision, recall); empty if not evaluated
    lr: float
    seconds: float
    images_per_second: float

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class TrainResult:
    checkpoint: Path
    spec: ModelSpec
    history: list[EpochResult]

    @property
    def final_metrics(self) -> dict[str, float]:
        for r in reversed(self.history):
            if r.metrics:
                return r.metrics
        return {}


BatchCallback = Callable[[int, int, int, dict[str, float]], None]  # (epoch, batch, batches, losses)
EpochCallback = Callable[[EpochResult, Path], None]


def select_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def autocast_dtype(device: torch.device) -> torch.dtype | None:
    """float16 on CUDA; bfloat16 on a CPU with native bf16 math, where it is about 1.3-1.5x faster
    for these convolutions; None (full float32) elsewhere."""
    if device.type == "cuda":
        return torch.float16
    if device.type == "cpu" and torch.cpu._is_avx512_bf16_supported():
        return torch.bfloat16
    return None


def _lr_factor(cfg: TrainConfig, epoch: float) -> float:
    x = epoch / cfg.epochs
    if cfg.lr_schedule == "cosine":
        return ((1 - math.cos(x * math.pi)) / 2) * (cfg.lrf - 1) + 1
    return (1 - x) * (1.0 - cfg.lrf) + cfg.lrf


def _param_groups(params: Iterable[tuple[str, nn.Parameter]]) -> tuple[list, list, list]:
    """YOLOv5's three groups: conv/linear weights (decayed), norm weights and biases (not)."""
    decay, no_decay, biases = [], [], []
    for name, p in params:
        if not p.requires_grad:
            continue
        if name.endswith(".bias"):
            biases.append(p)
        elif p.ndim <= 1:
            no_decay.append(p)  # BatchNorm weights
        else:
            decay.append(p)
    return decay, no_decay, biases


@dataclass(frozen=True)
class OptimizerChoice:
    name: str  # "sgd" or "adamw"
    lr0: float
    warmup_bias_lr: float


AUTO_SGD_STEPS = 10_000


def adamw_lr0(num_classes: int) -> float:
    """AdamW's initial learning rate for `num_classes` classes: Ultralytics' fit for its "auto"
    optimizer (ultralytics/engine/trainer.py, `build_optimizer`: lr_fit = round(0.002 * 5 / (4 + nc), 6)),
    0.002 for 1 class, 0.000714 for 10, 0.000119 for 80."""
    return round(0.002 * 5 / (4 + num_classes), 6)


def choose_optimizer(cfg: TrainConfig, steps: int, num_classes: int) -> OptimizerChoice:
    """Resolve "auto" and the optimizer-dependent defaults for a run of `steps` optimizer steps on
    `num_classes` classes: without a set lr0, SGD starts at 0.01 and AdamW at `adamw_lr0`."""
    name = cfg.optimizer
    if name == "auto":
        name = "sgd" if steps >= AUTO_SGD_STEPS else "adamw"
    if name not in ("sgd", "adamw"):
        raise ValueError(f"unknown optimizer {cfg.optimizer!r}; known: auto, sgd, adamw")
    lr0 = cfg.lr0 if cfg.lr0 is not None else (0.01 if name == "sgd" else adamw_lr0(num_classes))
    bias = cfg.warmup_bias_lr if cfg.warmup_bias_lr is not None else (0.1 if name == "sgd" else 0.0)
    return OptimizerChoice(name=name, lr0=lr0, warmup_bias_lr=bias)


def _build_optimizer(model: nn.Module, distiller: Distiller | None, cfg: TrainConfig, choice: OptimizerChoice,
                     accumulate: int) -> torch.optim.Optimizer:
    named = list(model.named_parameters())
    if distiller is not None:
        named += [(f"distiller.{name}", p) for name, p in distiller.named_trainable_parameters()]
    decay, no_decay, biases = _param_groups(named)
    wd = cfg.weight_decay * cfg.batch_size * accumulate / cfg.nominal_batch
    if choice.name == "adamw":
        opt = torch.optim.AdamW(no_decay, lr=choice.lr0, betas=(cfg.momentum, 0.999), weight_decay=0.0)
    else:
        opt = torch.optim.SGD(no_decay, lr=choice.lr0, momentum=cfg.momentum, nesterov=True)
    opt.add_param_group({"params": decay, "weight_decay": wd})
    opt.add_param_group({"params": biases, "weight_decay": 0.0})
    return opt


CLIP_NORM = 10.0  # YOLOv5's max_norm (train.py)


def clip_gradients(model: nn.Module, distiller: Distiller | None) -> None:
    """Clip the student's gradients to norm 10, as YOLOv5 does (train.py:
    `clip_grad_norm_(model.parameters(), max_norm=10.0)`), and the distiller's own parameters (its
    adaptation convs) in a clip group of their own at the same norm. Clipped together, as before,
    a large adapter gradient shrank the student's step; DAMO-YOLO's trainer likewise clips only the
    student's parameters when it distils (`clip_grad_norm_(self.model.parameters(), 30)`), leaving
    its CWD align convs out of the student's norm."""
    torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm=CLIP_NORM)
    if distiller is not None:
        torch.nn.utils.clip_grad_norm_([p for _, p in distiller.named_trainable_parameters()], max_norm=CLIP_NORM)


def _set_momentum(group: dict, momentum: float) -> None:
    if "betas" in group:
        group["betas"] = (momentum, group["betas"][1])
    else:
        group["momentum"] = momentum


def _set_frozen(model: YOLO, frozen: bool) -> None:
    for p in model.backbone.parameters():
        p.requires_grad_(not frozen)


def _train_mode(model: YOLO, frozen: bool) -> None:
    model.train()
    if frozen:
        model.backbone.eval()  # a frozen backbone keeps its BatchNorm statistics too


def initial_model(spec: ModelSpec, cfg: TrainConfig) -> YOLO:
    """The model a run starts from: `cfg.init`'s weights, or fresh ones for `cfg.img_size` (seed first)."""
    model = build_model(spec, img_size=cfg.img_size)
    if cfg.init:
        init = load_checkpoint(Path(cfg.init))
        if not checkpoint_spec(init).same_weights(spec):
            got = checkpoint_spec(init)
            raise CheckpointError(f"init checkpoint {cfg.init} is a {got.describe()} with {got.num_classes} classes; "
                                  f"this run trains a {spec.describe()} with {spec.num_classes} classes")
        model.load_state_dict(init["model"])
    return model


def fit(spec: ModelSpec, train_data: CocoDataset, val_data: CocoDataset | None, cfg: TrainConfig,
        out_dir: Path, *, distiller: Distiller | None = None, on_batch: BatchCallback | None = None,
        on_epoch: EpochCallback | None = None) -> TrainResult:
    """Train (or resume training) a detector; returns the checkpoint path and per-epoch history."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    last = out_dir / "last.pt"
    device = select_device(cfg.device)
    if cfg.torch_threads:
        torch.set_num_threads(cfg.torch_threads)
    torch.manual_seed(cfg.seed)
    if spec.num_classes != train_data.num_classes:
        raise ValueError(f"model has {spec.num_classes} classes but the training data has {train_data.num_classes}")

    model = initial_model(spec, cfg)
    memory_format = torch.channels_last if cfg.channels_last else torch.contiguous_format
    model.to(device, memory_format=memory_format)
    _set_frozen(model, cfg.freeze_backbone)
    if distiller is not None:
        distiller.to(device)

    dataset = DetectionDataset(train_data, cfg.img_size, cfg.augment, seed=cfg.seed, cache_images=cfg.cache_images)
    accumulate = max(round(cfg.nominal_batch / cfg.batch_size), 1)
    batches = math.ceil(len(dataset) / cfg.batch_size)
    choice = choose_optimizer(cfg, steps=cfg.epochs * math.ceil(batches / accumulate), num_classes=spec.num_classes)
    optimizer = _build_optimizer(model, distiller, cfg, choice, accumulate)
    ema = ModelEMA(model) if cfg.ema else None
    amp_dtype = autocast_dtype(device) if cfg.amp else None
    scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype is torch.float16)
    criterion = DetectionLoss(model.anchors, model.strides, spec.num_classes,
                              cfg.loss.scaled(spec.num_classes, cfg.img_size)).to(device)

    start_epoch, history = 0, []
    if last.exists():
        ckpt = load_checkpoint(last, device)
        if checkpoint_spec(ckpt) != spec or ckpt.get("train_config") != cfg.to_dict():
            raise CheckpointError(f"{last} belongs to a different run (model or training config differ); "
                                  f"use another output directory or delete it")
        model.load_state_dict(ckpt["raw_model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scaler.load_state_dict(ckpt["scaler"])
        if ema is not None:
            ema.ema.load_state_dict(ckpt["model"])
            ema.updates = int(ckpt["ema_updates"])
        if distiller is not None and ckpt.get("distiller"):
            if set(CALIBRATION_BUFFERS) & set(ckpt["distiller"]):
                raise CheckpointError(f"{last} was distilled with the loss-value calibration (kd_scale) of an earlier "
                                      f"EdgeSweep, which now weighs KD by each method's reference weight: resuming "
                                      f"it would change the KD weight mid-run; use another output directory or "
                                      f"delete it")
            distiller.load_state_dict(ckpt["distiller"])
        start_epoch = int(ckpt["epoch"])
        history = [EpochResult(**h) for h in ckpt["history"]]
        log.info("resuming %s from epoch %d/%d", last, start_epoch, cfg.epochs)

    warmup_iters = max(round(cfg.warmup_epochs * batches), 1) if cfg.warmup_epochs > 0 else 0
    for epoch in range(start_epoch, cfg.epochs):
        started = time.perf_counter()
        _train_mode(model, cfg.freeze_backbone)
        if distiller is not None:
            distiller.train()
        dataset.set_epoch(epoch)
        loader = make_loader(dataset, batch_size=cfg.batch_size, shuffle=True, workers=cfg.workers,
                             seed=cfg.seed, epoch=epoch)
        sums: dict[str, float] = {}
        seen, kd_pull = 0, 0.0  # images of this epoch so far; sum of the weighted KD losses
        optimizer.zero_grad(set_to_none=True)
        lr_epoch = _lr_factor(cfg, epoch)
        for i, (images, targets, _) in enumerate(loader):
            it = i + batches * epoch
            if it <= warmup_iters and warmup_iters:
                frac = it / warmup_iters
                for j, group in enumerate(optimizer.param_groups):
                    start = choice.warmup_bias_lr if j == 2 else 0.0
                    group["lr"] = start + frac * (choice.lr0 * lr_epoch - start)
                    _set_momentum(group, cfg.warmup_momentum + frac * (cfg.momentum - cfg.warmup_momentum))
            else:
                for group in optimizer.param_groups:
                    group["lr"] = choice.lr0 * lr_epoch
                    _set_momentum(group, cfg.momentum)
            images = images.to(device, non_blocking=True, memory_format=memory_format)
            targets = targets.to(device)
            with torch.autocast(device_type=device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                raw, feats = model(images)
                loss, parts = criterion(raw, targets)
            if distiller is not None:  # outside autocast: the teacher and the KD loss run in float32
                kd_loss, kd_parts = distiller(images, raw, feats, targets, epoch=epoch, epochs=cfg.epochs,
                                               seen=epoch * len(dataset) + seen)
                kd_pull += float(kd_loss.detach())
                loss = loss + kd_loss
                parts = {**parts, **kd_parts}
            scaler.scale(loss).backward()
            last_batch = i == batches - 1
            if (i + 1) % accumulate == 0 or last_batch:
                scaler.unscale_(optimizer)
                clip_gradients(model, distiller)
                scaler.step(optimizer)
                scaler.update()
                optimizer.zero_grad(set_to_none=True)
                if ema is not None:
                    ema.update(model)
            n = images.shape[0]
            seen += n
            for k, v in parts.items():
                sums[k] = sums.get(k, 0.0) + float(v) * n
            if on_batch is not None:
                on_batch(epoch + 1, i + 1, batches, {k: float(v) for k, v in parts.items()})

        train_seconds = time.perf_counter() - started
        eval_model = ema.ema if ema is not None else model
        metrics: dict[str, float] = {}
        if val_data is not None and ((epoch + 1) % cfg.val_every == 0 or epoch + 1 == cfg.epochs):
            res = evaluate(eval_model, val_data, img_size=cfg.img_size, device=device)
            m = res.metrics
            metrics = {"map50_95": m.map50_95, "map50": m.map50, "precision": m.precision, "recall": m.recall}
        losses = {k: v / seen for k, v in sums.items()}
        if distiller is not None:  # what the weight did: the weighted KD loss against the detection loss
            detection = sum(losses.get(k, 0.0) for k in DETECTION_PARTS)
            losses["kd_to_detection"] = kd_pull / seen / max(detection, 1e-12)
        result = EpochResult(epoch=epoch + 1, epochs=cfg.epochs, losses=losses,
                             metrics=metrics, lr=choice.lr0 * lr_epoch, seconds=time.perf_counter() - started,
                             images_per_second=seen / train_seconds)
        history.append(result)
        save_checkpoint(last, {
            "model_spec": spec.to_dict(),
            "model": {k: v.detach().cpu() for k, v in eval_model.state_dict().items()},
            "raw_model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
            "optimizer": optimizer.state_dict(),
            "scaler": scaler.state_dict(),
            "ema_updates": ema.updates if ema is not None else 0,
            "distiller": distiller.state_dict() if distiller is not None else {},
            "epoch": epoch + 1,
            "train_config": cfg.to_dict(),
            "history": [h.to_dict() for h in history],
        })
        if on_epoch is not None:
            on_epoch(result, last)
    return TrainResult(checkpoint=last, spec=spec, history=history)

