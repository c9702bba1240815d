"""A YOLOv5-style detector family (v6.0 layout) in plain torch.

Sizes n/s/m/l/x scale depth and width exactly as YOLOv5 does, so parameter counts match the
official models. Every size shares the same anchors and strides (see `detection.anchors`), so a
teacher's and a student's head outputs align cell by cell, and the neck outputs (the features that
feed the head) come back from `forward` for feature distillation.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import nn

from detection.anchors import DEFAULT_ANCHORS, STRIDES
from trainables.models.blocks import ACTIVATION_MODULES, C3, SPPF, Conv
from trainables.models.family import ACTIVATIONS, DEFAULT_ACTIVATION, SIZES


# Bounds on what a checkpoint's model_spec may ask to allocate, checked before any tensor is built: the
# head's last convolutions grow with anchors x (5 + classes). 10,000 classes is 8x LVIS's 1,203 (the
# largest common detection set); YOLO uses 3 anchors per level, and 9 leaves room for evolved ones.
MAX_CLASSES = 10_000
MAX_ANCHORS_PER_LEVEL = 9
MAX_PRUNED_CONVS = 512  # a YOLO-x has 123 convolutions
FEATURE_CONVS = ("neck.out3.cv3.conv", "neck.out4.cv3.conv", "neck.out5.cv3.conv")  # make the P3-P5 neck outputs


@dataclass(frozen=True)
class ModelSpec:
    """Everything needed to rebuild a detector; stored in every checkpoint."""

    size: str
    num_classes: int
    anchors: tuple = field(default=DEFAULT_ANCHORS)
    activation: str = DEFAULT_ACTIVATION
    # A structurally pruned model's convolutions as (module path, out channels, in channels), every one of
    # them; empty: the size's own widths. `build_model` shrinks the size's model to these, never grows it.
    channels: tuple[tuple[str, int, int], ...] = ()

    def __post_init__(self) -> None:
        if self.size not in SIZES:
            raise ValueError(f"unknown model size {self.size!r}; known sizes: {', '.join(SIZES)}")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {self.activation!r}; known: {', '.join(ACTIVATIONS)}")
        if isinstance(self.num_classes, bool) or not isinstance(self.num_classes, int) or \
                not 1 <= self.num_classes <= MAX_CLASSES:
            raise ValueError(f"num_classes must be an integer in [1, {MAX_CLASSES}], got {self.num_classes!r:.40}")
        if len(self.anchors) != len(STRIDES) or not all(
                1 <= len(level) <= MAX_ANCHORS_PER_LEVEL and len(level) == len(self.anchors[0]) for level in self.anchors):
            raise ValueError(f"anchors must be {len(STRIDES)} levels (strides {', '.join(map(str, STRIDES))}) of the "
                             f"same 1-{MAX_ANCHORS_PER_LEVEL} anchors each, got {len(self.anchors)} level(s)")
        if not all(len(a) == 2 and all(math.isfinite(v) and 0 < v <= 1e4 for v in a) for lv in self.anchors for a in lv):
            raise ValueError("anchors must be (width, height) pairs of finite pixel sizes in (0, 10000]")
        if len(self.channels) > MAX_PRUNED_CONVS or not all(
                len(c) == 3 and isinstance(c[0], str) and all(type(v) is int and v >= 1 for v in c[1:])
                for c in self.channels):
            raise ValueError(f"channels must be at most {MAX_PRUNED_CONVS} (conv path, out, in) entries of positive "
                             f"integers")

    @property
    def pruned(self) -> bool:
        return bool(self.channels)

    def describe(self) -> str:
        """"YOLO-n", or "YOLO-n (pruned)" for one with its own widths."""
        return f"YOLO-{self.size}{' (pruned)' if self.pruned else ''}"

    @property
    def feature_channels(self) -> tuple[int, int, int]:
        """Channels of the P3, P4, P5 neck outputs (what feature distillation aligns)."""
        if self.pruned:
            outs = {path: out for path, out, _ in self.channels}
            return tuple(outs[path] for path in FEATURE_CONVS)
        width = SIZES[self.size][1]
        return _ch(256, width), _ch(512, width), _ch(1024, width)

    def same_weights(self, other: "ModelSpec") -> bool:
        """Whether `other`'s weights load into this model: the activation has none, so a SiLU
        checkpoint can start a ReLU student."""
        return ((self.size, self.num_classes, self.anchors, self.channels)
                == (other.size, other.num_classes, other.anchors, other.channels))

    def to_dict(self) -> dict:
        d = {"size": self.size, "num_classes": self.num_classes,
             "anchors": [[list(a) for a in level] for level in self.anchors], "activation": self.activation}
        if self.pruned:  # absent otherwise: an unpruned spec's dict (and any key hashed from it) stays as it was
            d["channels"] = [list(c) for c in self.channels]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "ModelSpec":
        # whole pixels as ints (the defaults); imported anchors (an evolved autoanchor) may be fractional
        if len(d["anchors"]) > len(STRIDES) or any(len(level) > MAX_ANCHORS_PER_LEVEL for level in d["anchors"]):
            raise ValueError(f"anchors: more than {len(STRIDES)} levels of {MAX_ANCHORS_PER_LEVEL} anchors")
        anchors = tuple(tuple(tuple(int(v) if float(v).is_integer() else float(v) for v in a) for a in level)
                        for level in d["anchors"])
        channels = d.get("channels", [])
        if len(channels) > MAX_PRUNED_CONVS:
            raise ValueError(f"channels: more than {MAX_PRUNED_CONVS} convolutions")
        return cls(size=d["size"], num_classes=int(d["num_classes"]), anchors=anchors,
                   activation=d.get("activation", DEFAULT_ACTIVATION),  # checkpoints before the knob: SiLU
                   channels=tuple(tuple(c) for c in channels))


def _ch(c: int, width: float) -> int:
    """Scaled channel count, rounded up to a multiple of 8 (YOLOv5's make_divisible)."""
    return int(math.ceil(c * width / 8) * 8)


def _n(n: int, depth: float) -> int:
    return max(round(n * depth), 1)


class Backbone(nn.Module):
    """CSP-Darknet53 with SPPF; returns the stride 8, 16 and 32 maps."""

    def __init__(self, depth: float, width: float):
        super().__init__()
        c = lambda v: _ch(v, width)  # noqa: E731
        self.stem = nn.Sequential(Conv(3, c(64), 6, 2, 2), Conv(c(64), c(128), 3, 2),
                                  C3(c(128), c(128), _n(3, depth)))
        self.p3 = nn.Sequential(Conv(c(128), c(256), 3, 2), C3(c(256), c(256), _n(6, depth)))
        self.p4 = nn.Sequential(Conv(c(256), c(512), 3, 2), C3(c(512), c(512), _n(9, depth)))
        self.p5 = nn.Sequential(Conv(c(512), c(1024), 3, 2), C3(c(1024), c(1024), _n(3, depth)),
                                SPPF(c(1024), c(1024), 5))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        p3 = self.p3(self.stem(x))
        p4 = self.p4(p3)
        return p3, p4, self.p5(p4)


class Neck(nn.Module):
    """PANet: top-down then bottom-up fusion; outputs the three maps the head reads."""

    def __init__(self, depth: float, width: float):
        super().__init__()
        c = lambda v: _ch(v, width)  # noqa: E731
        n = _n(3, depth)
        self.lat5 = Conv(c(1024), c(512), 1, 1)
        self.up = nn.Upsample(scale_factor=2, mode="nearest")
        self.td4 = C3(c(1024), c(512), n, shortcut=False)
        self.lat4 = Conv(c(512), c(256), 1, 1)
        self.out3 = C3(c(512), c(256), n, shortcut=False)
        self.down3 = Conv(c(256), c(256), 3, 2)
        self.out4 = C3(c(512), c(512), n, shortcut=False)
        self.down4 = Conv(c(512), c(512), 3, 2)
        self.out5 = C3(c(1024), c(1024), n, shortcut=False)

    def forward(self, p3, p4, p5) -> list[torch.Tensor]:
        l5 = self.lat5(p5)
        l4 = self.lat4(self.td4(torch.cat((self.up(l5), p4), 1)))
        n3 = self.out3(torch.cat((self.up(l4), p3), 1))
        n4 = self.out4(torch.cat((self.down3(n3), l4), 1))
        n5 = self.out5(torch.cat((self.down4(n4), l5), 1))
        return [n3, n4, n5]


class Detect(nn.Module):
    """One 1x1 conv per level to anchors x (box 4, objectness 1, classes C) raw logits."""

    def __init__(self, num_classes: int, in_channels: tuple[int, ...], anchors_per_level: int):
        super().__init__()
        self.no = num_classes + 5
        self.na = anchors_per_level
        self.m = nn.ModuleList(nn.Conv2d(ch, self.no * self.na, 1) for ch in in_channels)

    def init_biases(self, num_classes: int, strides=STRIDES, image_size: int = 640) -> None:
        """YOLOv5's prior (models/yolo.py, `_initialize_biases`): about 8 objects per image, class
        probability 0.6 / C. YOLOv5 writes the image as 640 px; here it is the image the model trains
        on, so each level's objectness starts at 8 objects over that image's cells (at 128 px,
        log(8 / 16^2) = -3.47 on P3, where 640 px would give log(8 / 80^2) = -6.68)."""
        for conv, s in zip(self.m, strides):
            b = conv.bias.view(self.na, -1)
            b.data[:, 4] += math.log(8 / (image_size / s) ** 2)
            b.data[:, 5:] += math.log(0.6 / (num_classes - 0.99)) if num_classes > 1 else 0.0

    def forward(self, feats: list[torch.Tensor]) -> list[torch.Tensor]:
        out = []
        for conv, f in zip(self.m, feats):
            b, _, h, w = f.shape
            # (B, A*(5+C), H, W) -> (B, A, H, W, 5+C)
            out.append(conv(f).view(b, self.na, self.no, h, w).permute(0, 1, 3, 4, 2).contiguous())
        return out


class YOLO(nn.Module):
    """`forward(x)` returns (raw head outputs per level, neck features per level).

    raw[l]: (B, A, H_l, W_l, 5+C) logits; feats[l]: (B, C_l, H_l, W_l). `img_size` only sets the
    head's initial objectness prior (see `Detect.init_biases`); loaded weights replace it.
    """

    def __init__(self, spec: ModelSpec, *, img_size: int = 640):
        super().__init__()
        depth, width = SIZES[spec.size]
        self.spec = spec
        self.backbone = Backbone(depth, width)
        self.neck = Neck(depth, width)
        self.head = Detect(spec.num_classes, spec.feature_channels, len(spec.anchors[0]))
        self.head.init_biases(spec.num_classes, image_size=img_size)
        self.register_buffer("anchors", torch.tensor(spec.anchors, dtype=torch.float32), persistent=False)
        self.strides = STRIDES

    def forward(self, x: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        feats = self.neck(*self.backbone(x))
        return self.head(feats), feats


def build_model(spec: ModelSpec, *, img_size: int = 640) -> YOLO:
    """A freshly initialised detector whose objectness prior suits `img_size`-pixel images."""
    model = YOLO(spec, img_size=img_size)
    if spec.activation != DEFAULT_ACTIVATION:
        for module in model.modules():
            if isinstance(module, Conv):
                module.act = ACTIVATION_MODULES[spec.activation]()
    if spec.pruned:
        _shrink(model, spec.channels)
    return model


def _shrink(model: YOLO, channels: tuple[tuple[str, int, int], ...]) -> None:
    """Give every convolution (and the BatchNorm after it) the pruned widths in `channels`, fresh weights
    that a checkpoint's replace. Each width is checked against the size's own first, so a checkpoint
    can never make the model larger than its size."""
    convs = {name: m for name, m in model.named_modules() if isinstance(m, nn.Conv2d)}
    if {path for path, _, _ in channels} != set(convs):
        raise ValueError(f"channels must name every convolution of a YOLO-{model.spec.size}, each once")
    for path, out, c_in in channels:
        old = convs[path]
        if out > old.out_channels or c_in > old.in_channels:
            raise ValueError(f"channels: {path} is {out}x{c_in}, wider than a YOLO-{model.spec.size}'s "
                             f"{old.out_channels}x{old.in_channels}")
        parent_path, _, leaf = path.rpartition(".")
        parent = model.get_submodule(parent_path)
        setattr(parent, leaf, nn.Conv2d(c_in, out, old.kernel_size, old.stride, old.padding,
                                        bias=old.bias is not None))
        if isinstance(parent, Conv):
            parent.bn = nn.BatchNorm2d(out, eps=parent.bn.eps, momentum=parent.bn.momentum)


def conv_widths(model: nn.Module) -> tuple[tuple[str, int, int], ...]:
    """Every convolution of `model` as (path, out channels, in channels): a pruned model's `ModelSpec.channels`."""
    return tuple((name, m.out_channels, m.in_channels) for name, m in model.named_modules()
                 if isinstance(m, nn.Conv2d))


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
