"""What training reads, as plain dataclasses without torch, so the sweep schema reuses them as they are.

- `TrainKnobs`: the train stage's trial knobs (every field a sweep knob, its default declared here);
- `TrainSettings`: the fixed trainer hyper-parameters (the sweep file's `training:` section);
- `TrainConfig`: what `trainables.train.fit` runs, the settings plus one run's epochs, size, seed, ...;
- `LossWeights` and `TeacherSpec`.

Defaults follow YOLOv5's hyp.scratch-low where they apply.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Literal

from common.knobs import knob, pick
from detection.anchors import MAX_STRIDE
from trainables.augment import AugmentConfig
from trainables.kd.registry import KD_METHODS, kd_method
from trainables.models.family import ACTIVATIONS, DEFAULT_ACTIVATION, SIZES

SCRATCH = "scratch"  # student_init: random weights
DISTILLATION_KNOBS = ("teacher", "kd_factor", "kd_off_last_epochs")  # read only by methods with a teacher


@dataclass(frozen=True)
class LossWeights:
    """YOLOv5 hyp.scratch-low gains, before the per-image-size scaling of `scaled`."""

    box: float = 0.05
    obj: float = 1.0
    cls: float = 0.5
    anchor_t: float = 4.0

    def scaled(self, num_classes: int, img_size: int, levels: int = 3) -> "LossWeights":
        """Scale gains as YOLOv5's train.py does, so they suit any class count and image size."""
        return LossWeights(box=self.box * 3 / levels,
                           obj=self.obj * (img_size / 640) ** 2 * 3 / levels,
                           cls=self.cls * num_classes / 80 * 3 / levels,
                           anchor_t=self.anchor_t)


@dataclass(frozen=True)
class TrainKnobs:
    """The train stage of one trial. `kd_params` holds the chosen KD method's own knobs."""

    student: str = knob("n", "model size of the student", noun="a model size", choices=SIZES)
    student_init: str = knob(SCRATCH, "'scratch' or a checkpoint path (a pretrained student)")
    freeze_backbone: bool = knob(False, "train only the neck and head")
    activation: str = knob(DEFAULT_ACTIVATION, "the student's activation after every conv (YOLOv5: silu; int8 kernels "
                           "and NPUs often run relu, relu6 or hardswish faster)", noun="an activation",
                           choices=ACTIVATIONS)
    epochs: int = knob(10, "training epochs; 0 (sweeps): no training, the student_init checkpoint is exported as it is",
                       minimum=0)
    img_size: int = knob(128, "input side in pixels (training and export)", minimum=MAX_STRIDE,
                         multiple_of=MAX_STRIDE)
    seed: int = knob(0, "initialisation, data order and augmentation", minimum=0)
    kd_method: str = knob("none", "distillation method", noun="a KD method", choices=KD_METHODS)
    teacher: str | None = knob(None, "a teacher: a key of teachers: (sweeps), a model size or checkpoint (CLI)")
    kd_factor: float = knob(1.0, "weight of the distillation loss", above=0)
    kd_off_last_epochs: int = knob(0, "switch distillation off for the last K epochs", minimum=0)
    kd_params: Mapping[str, object] = field(default_factory=dict)

    @classmethod
    def from_knobs(cls, knobs: Mapping[str, object]) -> "TrainKnobs":
        """This stage's share of a trial's flat knob dict, the KD method's own knobs included."""
        method = kd_method(str(knobs.get("kd_method", cls.kd_method)))
        own = {k.name: knobs[k.name] for k in method.knobs if k.name in knobs}
        return pick(cls, knobs, kd_params=method.params(own))

    @property
    def distills(self) -> bool:
        return kd_method(self.kd_method).needs_teacher


@dataclass(frozen=True)
class TrainSettings:
    """Fixed trainer hyper-parameters: the same for every trial of a sweep."""

    batch_size: int = 16
    nominal_batch: int = 16  # gradients are accumulated up to this many images per step (YOLOv5: 64)
    # "auto": AdamW for short schedules (< 10k optimizer steps), SGD with nesterov momentum for long
    # ones (Ultralytics' rule); on the embedded default AdamW reaches in 8 epochs what SGD does in 16.
    optimizer: Literal["auto", "sgd", "adamw"] = "auto"
    lr0: float | None = None  # None: 0.01 for SGD, 0.002 for AdamW
    lrf: float = 0.01  # final LR = lr0 * lrf
    lr_schedule: Literal["cosine", "linear"] = "linear"
    momentum: float = 0.937
    weight_decay: float = 5e-4
    warmup_epochs: float = 1.0
    warmup_momentum: float = 0.8
    warmup_bias_lr: float | None = None  # None: 0.1 for SGD (YOLOv5), 0 for AdamW
    ema: bool = True
    amp: bool = True  # mixed precision: float16 on CUDA, bfloat16 on CPUs with native bf16 (AVX512-BF16/AMX)
    channels_last: bool = True  # NHWC memory layout: faster convolutions on CPU (oneDNN) and tensor cores
    workers: int = 0  # data loader processes
    cache_images: bool = True
    val_every: int = 1  # evaluate on the val split every N epochs (and always after the last)
    loss: LossWeights = field(default_factory=LossWeights)
    augment: AugmentConfig = field(default_factory=AugmentConfig)


@dataclass(frozen=True)
class TrainConfig(TrainSettings):
    """One training run: the settings plus what differs per run and the machine it runs on."""

    epochs: int = TrainKnobs.epochs
    img_size: int = TrainKnobs.img_size
    seed: int = TrainKnobs.seed
    freeze_backbone: bool = TrainKnobs.freeze_backbone
    init: str | None = None  # start from this checkpoint's weights (a "pretrained" student)
    device: str = "auto"  # "auto" picks CUDA when present
    threads: int | None = None  # torch CPU threads; None leaves torch's default

    @classmethod
    def from_settings(cls, settings: TrainSettings, **run: object) -> "TrainConfig":
        """`settings` (a sweep's `training:` section) plus the run's own fields (device, threads, ...)."""
        shared = {f.name: getattr(settings, f.name) for f in fields(TrainSettings)}
        return cls(**shared, **run)

    def with_knobs(self, knobs: TrainKnobs) -> "TrainConfig":
        """This config for one trial: its epochs, image size, seed, frozen backbone and initial weights."""
        return replace(self, epochs=knobs.epochs, img_size=knobs.img_size, seed=knobs.seed,
                       freeze_backbone=knobs.freeze_backbone,
                       init=None if knobs.student_init == SCRATCH else knobs.student_init)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        d = dict(d)
        d["loss"] = LossWeights(**d.get("loss", {}))
        d["augment"] = AugmentConfig(**d.get("augment", {}))
        return cls(**d)


@dataclass(frozen=True)
class TeacherSpec:
    """A teacher: a model size trained once (per data, size and epochs) and cached, or a checkpoint."""

    model: str | None = None
    epochs: int = 30
    checkpoint: Path | None = None

    def __post_init__(self) -> None:
        if (self.model is None) == (self.checkpoint is None):
            raise ValueError("a teacher is either a model size (trained once and cached) or a checkpoint")
