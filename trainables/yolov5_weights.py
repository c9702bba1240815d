"""Ultralytics YOLOv5 weights (v6.0 and later: 6x6 stem, SPPF; sizes n..x, any class count) as an
EdgeSweep checkpoint, so they can be a sweep's `student.init` or a teacher's `checkpoint`.

YOLOv5's model is an `nn.Sequential` of 25 numbered layers (`models/yolov5s.yaml`); ours names the
same blocks by role. Inside a block the names already agree (Conv: conv, bn; C3: cv1, cv2, cv3,
m.N; SPPF: cv1, cv2; Detect: m.0-2), so the import renames the layer prefix and nothing else: the
same values give the same raw outputs. Detect's `anchors` buffer (in grid cells) becomes the
model spec's anchors in pixels.

An Ultralytics `.pt` pickles their classes (`models.yolo.DetectionModel`, ...). It is read with
torch's own weights-only unpickler, every class or function the file names standing in as an
inert placeholder: tensors and plain containers are rebuilt, nothing from the file runs, and
nothing from the `yolov5` package is needed. A plain `state_dict` file loads the same way.
"""
from __future__ import annotations

import re
from pathlib import Path

import torch

from detection.anchors import STRIDES
from trainables.checkpoint import FORMAT, CheckpointError, save_checkpoint
from trainables.models.family import SIZES
from trainables.models.yolo import ModelSpec, build_model

# YOLOv5 v6.0 layer index -> our module path (Upsample and Concat layers 11, 12, 15, 16, 19, 22 hold no weights)
LAYERS = {0: "backbone.stem.0", 1: "backbone.stem.1", 2: "backbone.stem.2", 3: "backbone.p3.0", 4: "backbone.p3.1",
          5: "backbone.p4.0", 6: "backbone.p4.1", 7: "backbone.p5.0", 8: "backbone.p5.1", 9: "backbone.p5.2",
          10: "neck.lat5", 13: "neck.td4", 14: "neck.lat4", 17: "neck.out3", 18: "neck.down3", 20: "neck.out4",
          21: "neck.down4", 23: "neck.out5", 24: "head"}
DETECT = 24
STEM_CHANNELS = {16: "n", 32: "s", 48: "m", 64: "l", 80: "x"}  # layer 0's output channels: 64 x width


class _Placeholder:
    """Stands in for any class or function an untrusted pickle names: it keeps what it is given."""

    _global = "?"

    def __init__(self, *args, **kwargs):
        self.args = args

    def __setstate__(self, state):
        self.state = state


def _placeholders(path: Path) -> list[tuple[type, str]]:
    names = torch.serialization.get_unsafe_globals_in_checkpoint(str(path))
    return [(type(f"Placeholder[{n}]", (_Placeholder,), {"_global": n}), n) for n in names]


def _module_state(obj, prefix: str = "") -> dict[str, torch.Tensor]:
    """The state dict of an unpickled nn.Module made of placeholders: its parameters and persistent
    buffers by dotted name, found in the `_parameters`, `_buffers` and `_modules` it pickled."""
    state = getattr(obj, "state", None)
    if isinstance(state, tuple) and len(state) == 2:
        state = state[0]
    if not isinstance(state, dict):
        return {}
    out = {}
    skip = state.get("_non_persistent_buffers_set") or set()
    for kind in ("_parameters", "_buffers"):
        for name, value in (state.get(kind) or {}).items():
            if isinstance(value, torch.Tensor) and name not in skip:
                out[prefix + name] = value
    for name, child in (state.get("_modules") or {}).items():
        out.update(_module_state(child, f"{prefix}{name}."))
    return out


def read_yolov5(path: Path) -> dict[str, torch.Tensor]:
    """The `model.N....` state dict of an Ultralytics YOLOv5 `.pt` (its EMA weights when present) or
    of a plain state-dict file, without running anything the file names."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"YOLOv5 weights not found: {path}")
    try:
        with torch.serialization.safe_globals(_placeholders(path)):
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - a file torch cannot read safely is refused, whatever the reason
        lines = [line for line in str(e).splitlines() if line.strip()]
        reason = next((line for line in lines if "GLOBAL" in line), lines[0] if lines else type(e).__name__)
        raise CheckpointError(f"{path}: refused, it cannot be read as weights alone ({reason.strip()}); EdgeSweep "
                              f"never runs code from a weights file") from e
    if isinstance(obj, dict) and obj.get("format") == FORMAT:
        raise CheckpointError(f"{path} is already an EdgeSweep checkpoint: use it as it is")
    if isinstance(obj, dict) and all(isinstance(v, torch.Tensor) for v in obj.values()) and obj:
        weights = dict(obj)
    elif isinstance(obj, dict):
        model = obj.get("ema") if obj.get("ema") is not None else obj.get("model")
        weights = _module_state(model) if isinstance(model, _Placeholder) else {}
    else:
        weights = _module_state(obj) if isinstance(obj, _Placeholder) else {}
    weights = {k: v for k, v in weights.items() if k.startswith("model.")}
    if not weights:
        raise CheckpointError(f"{path} holds no YOLOv5 model: expected an Ultralytics checkpoint (a dict with "
                              f"'model' or 'ema') or a state dict with model.0.conv.weight ... model.24.m.2.bias")
    return {k: v.float() if v.is_floating_point() else v for k, v in weights.items()}


def spec_of(weights: dict[str, torch.Tensor], path: Path) -> ModelSpec:
    """Size, class count and anchors of a YOLOv5 state dict, read from its shapes; P6 and pre-v6.0
    layouts are refused by name."""
    if "model.0.conv.weight" not in weights or weights["model.0.conv.weight"].shape[-1] != 6:
        found = tuple(weights["model.0.conv.weight"].shape) if "model.0.conv.weight" in weights else "no model.0.conv"
        raise CheckpointError(f"{path}: layer 0 is {found}, not the 6x6 stem conv of YOLOv5 v6.0 and later "
                              f"(v5.0 and earlier start with Focus and are not supported)")
    if any(k.startswith("model.33.") for k in weights) or f"model.{DETECT}.m.0.weight" not in weights:
        raise CheckpointError(f"{path}: no Detect head at layer {DETECT}; only the P3-P5 models yolov5n/s/m/l/x "
                              f"(v6.0 and later) are supported, not P6 models such as yolov5s6")
    width = int(weights["model.0.conv.weight"].shape[0])
    if width not in STEM_CHANNELS:
        raise CheckpointError(f"{path}: its stem has {width} channels; YOLOv5 n/s/m/l/x have "
                              f"{', '.join(f'{c} ({s})' for c, s in STEM_CHANNELS.items())}")
    size = STEM_CHANNELS[width]
    bottlenecks = len({m.group(1) for k in weights if (m := re.match(r"model\.2\.m\.(\d+)\.", k))})
    if bottlenecks != max(round(3 * SIZES[size][0]), 1):
        raise CheckpointError(f"{path}: width says YOLOv5{size} but layer 2 has {bottlenecks} bottleneck(s), "
                              f"which no YOLOv5 n..x of v6.0 has")
    anchors = weights.get(f"model.{DETECT}.anchors")  # (levels, anchors, 2), in grid cells of each level
    if anchors is None or anchors.ndim != 3 or anchors.shape[0] != len(STRIDES) or anchors.shape[2] != 2 \
            or not anchors.shape[1] or not torch.isfinite(anchors).all():
        found = "none" if anchors is None else f"shape {tuple(anchors.shape)}"
        raise CheckpointError(f"{path}: its Detect head has no usable model.{DETECT}.anchors ({found}; expected "
                              f"finite ({len(STRIDES)}, anchors per level, 2) in grid cells)")
    outputs = int(weights[f"model.{DETECT}.m.0.weight"].shape[0])
    num_classes = outputs // anchors.shape[1] - 5
    if num_classes < 1 or outputs % anchors.shape[1]:
        raise CheckpointError(f"{path}: its Detect head has {outputs} outputs per cell, which is not "
                              f"{anchors.shape[1]} anchors x (5 + classes) for any class count >= 1")
    pixels = tuple(tuple(tuple(_number(float(v) * s) for v in a) for a in level)
                   for level, s in zip(anchors.tolist(), STRIDES))
    return ModelSpec(size=size, num_classes=num_classes, anchors=pixels)


def _number(v: float) -> int | float:
    return int(round(v)) if abs(v - round(v)) < 1e-4 else v


def to_edgesweep(weights: dict[str, torch.Tensor], spec: ModelSpec, path: Path) -> dict[str, torch.Tensor]:
    """Our model's state dict from a YOLOv5 one: the layer prefix renamed, every tensor checked."""
    ours = build_model(spec).state_dict()
    out = {}
    for key, value in weights.items():
        index, rest = key.split(".", 2)[1:]
        if int(index) not in LAYERS or rest in ("anchors", "anchor_grid"):
            continue
        name = f"{LAYERS[int(index)]}.{rest}"
        if name not in ours or ours[name].shape != value.shape:
            expected = str(tuple(ours[name].shape)) if name in ours else "no such weight"
            raise CheckpointError(f"{path}: {key} {tuple(value.shape)} does not fit YOLOv5{spec.size}'s {name} "
                                  f"{expected}")
        out[name] = value.to(ours[name].dtype)
    missing = [k for k in ours if k not in out]
    if missing:
        raise CheckpointError(f"{path}: no weights for {len(missing)} of YOLOv5{spec.size}'s tensors, e.g. "
                              f"{', '.join(missing[:3])}")
    return out


def import_yolov5(path: Path, out: Path) -> ModelSpec:
    """Write `out`, an EdgeSweep checkpoint holding the YOLOv5 weights of `path`; returns its spec."""
    weights = read_yolov5(path)
    spec = spec_of(weights, Path(path))
    state = to_edgesweep(weights, spec, Path(path))
    model = build_model(spec)
    model.load_state_dict(state)
    save_checkpoint(out, {"model_spec": spec.to_dict(), "model": model.state_dict(),
                          "imported_from": {"file": str(path), "layout": "ultralytics-yolov5-v6"}})
    return spec
