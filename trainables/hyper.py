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
from typing import Annotated, Literal

from pydantic import Field

from common.knobs import Noun, knob, pick
from detection.anchors import MAX_STRIDE
from trainables.augment import AugmentConfig
from trainables.kd.registry import KD_METHODS, kd_method
from trainables.models.family import ACTIVATIONS, DEFAULT_ACTIVATION, SIZES

SCRATCH = "scratch"  # student_init: random weights
DISTILLATION_KNOBS = ("teacher", "kd_factor", "kd_off_last_epochs")  # read only by methods with a teacher
# Structured pruning: how a channel's importance is scored (trainables.prune maps each to Torch-Pruning's).
PRUNE_METHODS = ("l1", "group-norm", "bn-scale")
PRUNING_KNOBS = ("prune_method",)  # read only when prune_ratio > 0
MAX_PRUNE_RATIO = 0.9


def is_user_model(student_init: object) -> bool:
    """A student_init that is a user's own .onnx detector: quantized, timed and scored, never trained."""
    return str(student_init).endswith(".onnx")


@dataclass(frozen=True)
class LossWeights:
    """YOLOv5 hyp.scratch-low gains, before the per-image-size scaling of `scaled`."""

    __pydantic_config__ = {"extra": "forbid"}  # the sweep file's `training.loss` (orchestrator.config)
    box: Annotated[float, Field(ge=0, description="box (CIoU) loss gain")] = 0.05
    obj: Annotated[float, Field(ge=0, description="objectness loss gain")] = 1.0
    cls: Annotated[float, Field(ge=0, description="classification loss gain")] = 0.5
    anchor_t: Annotated[float, Field(gt=1, description="anchor-matching ratio threshold")] = 4.0

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
    kd_factor: float = knob(1.0, "multiplies the KD method's reference weight (1: its reference recipe's)", above=0)
    kd_off_last_epochs: int = knob(0, "switch distillation off for the last K epochs", minimum=0)
    prune_ratio: float = knob(0.0, "structured pruning: the share of every layer's channels removed before training "
                              "(from student_init's weights, or the seeded random init), then fine-tuned for the "
                              "trial's epochs; 0: off", minimum=0, below=MAX_PRUNE_RATIO)
    prune_method: str = knob("l1", "channel importance: l1 (L1 norm of each filter, Li et "
                             "al. 2017), group-norm (L2 norm over the channel's dependency group, DepGraph) or "
                             "bn-scale (BatchNorm scale, network slimming)", noun="a pruning method",
                             choices=PRUNE_METHODS)
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

    def kd_name(self, *, teacher: bool = False) -> str:
        """How it distils, in a few characters: "output x2.5" ("output/s x2.5" with its teacher), or "no KD"."""
        if not self.distills:
            return "no KD"
        return f"{self.kd_method}{'/' + str(self.teacher) if teacher else ''} x{self.kd_factor:.2g}"


@dataclass(frozen=True)
class TrainSettings:
    """Fixed trainer hyper-parameters: the same for every trial of a sweep (the sweep file's
    `training:` section, validated by pydantic through the bounds below)."""

    __pydantic_config__ = {"extra": "forbid"}
    batch_size: Annotated[int, Field(ge=1, description="images per forward/backward pass on the device")] = 16
    nominal_batch: Annotated[int, Field(ge=1, description="gradients accumulate up to this many images per update "
                                        "(YOLOv5 uses 64)")] = 16
    # "auto": AdamW for short schedules (< 10k optimizer steps), SGD with nesterov momentum for long
    # ones (Ultralytics' rule); on the embedded default AdamW reaches in 8 epochs what SGD does in 16.
    optimizer: Annotated[Literal["auto", "sgd", "adamw"], Noun("an optimizer"), Field(
        description="auto: AdamW below 10k optimizer steps, else SGD with nesterov momentum")] = "auto"
    lr0: Annotated[float | None, Field(gt=0, description="initial learning rate; null: the optimizer's default "
                                       "(SGD 0.01, AdamW 0.01 / (4 + classes), Ultralytics' rule)")] = None
    lrf: Annotated[float, Field(gt=0, le=1, description="final learning rate = lr0 * lrf")] = 0.01
    lr_schedule: Annotated[Literal["linear", "cosine"], Noun("a learning-rate schedule"),
                           Field(description="how the learning rate falls from lr0 to lr0 * lrf")] = "linear"
    momentum: Annotated[float, Field(ge=0, lt=1, description="SGD momentum / Adam beta1")] = 0.937
    weight_decay: Annotated[float, Field(ge=0, description="L2 weight decay")] = 5e-4
    warmup_epochs: Annotated[float, Field(ge=0, description="epochs of learning-rate and momentum warm-up")] = 1.0
    warmup_momentum: Annotated[float, Field(ge=0, lt=1, description="momentum at the warm-up's start")] = 0.8
    warmup_bias_lr: Annotated[float | None, Field(ge=0, description="bias learning rate at the warm-up's start; "
                                                  "null: the optimizer's default (SGD 0.1, AdamW 0)")] = None
    ema: Annotated[bool, Field(description="keep an exponential moving average of the weights (evaluated and "
                               "exported)")] = True
    amp: Annotated[bool, Field(description="mixed precision: float16 on CUDA, bfloat16 on CPUs with native bf16 "
                               "(AVX512-BF16/AMX), else off")] = True
    channels_last: Annotated[bool, Field(description="NHWC memory layout: faster convolutions on CPU (oneDNN) and "
                                         "tensor cores")] = True
    workers: Annotated[int, Field(ge=0, description="data loader processes")] = 0
    cache_images: Annotated[bool, Field(description="keep decoded training images in RAM")] = True
    val_every: Annotated[int, Field(ge=1, description="val mAP every N epochs (and always after the last)")] = 1
    loss: Annotated[LossWeights, Field(description="YOLOv5 loss gains")] = field(default_factory=LossWeights)
    augment: Annotated[AugmentConfig, Field(description="training augmentation")] = field(
        default_factory=AugmentConfig)


@dataclass(frozen=True)
class TrainConfig(TrainSettings):
    """One training run: the settings plus what differs per run and the machine it runs on."""

    epochs: int = TrainKnobs.epochs
    img_size: int = TrainKnobs.img_size
    seed: int = TrainKnobs.seed
    freeze_backbone: bool = TrainKnobs.freeze_backbone
    init: str | None = None  # start from this checkpoint's weights (a "pretrained" student)
    device: str = "auto"  # "auto" picks CUDA when present
    torch_threads: int | None = None  # torch CPU threads; None leaves torch's default

    @classmethod
    def from_settings(cls, settings: TrainSettings, **run: object) -> "TrainConfig":
        """`settings` (a sweep's `training:` section) plus the run's own fields (device, torch_threads, ...)."""
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

    __pydantic_config__ = {"extra": "forbid"}  # an entry of the sweep file's `teachers:`
    model: Annotated[Literal[tuple(SIZES)] | None, Noun("a model size"), Field(  # type: ignore[valid-type]
        description="a model size, trained once on the sweep's data at the trial's img_size and cached")] = None
    epochs: Annotated[int, Field(ge=1, description="only with model: its training epochs (part of its cache key)")] = 30
    checkpoint: Annotated[Path | None, Field(description="an already trained teacher (must exist); not with model "
                                             "or epochs")] = None

    def __post_init__(self) -> None:
        if (self.model is None) == (self.checkpoint is None):
            raise ValueError("give either model (a size trained once and cached, with epochs) or checkpoint (a "
                             "trained model's path)")
