"""The YOLOv5 family's sizes as plain data (no torch), so the config check can name them.

size -> (depth multiple, width multiple), as in yolov5{n,s,m,l,x}.yaml.
"""
from __future__ import annotations

SIZES: dict[str, tuple[float, float]] = {
    "n": (0.33, 0.25),
    "s": (0.33, 0.50),
    "m": (0.67, 0.75),
    "l": (1.00, 1.00),
    "x": (1.33, 1.25),
}

# The activation after every conv. YOLOv5 uses SiLU; int8 kernels and NPUs often run the others far
# better (ReLU and ReLU6 fold into the conv's output clamp; the i.MX8M Plus NPU has no SiLU), so a
# sweep can ask whether a cheaper one wins on the board after distillation.
ACTIVATIONS = ("silu", "relu", "relu6", "hardswish")
DEFAULT_ACTIVATION = "silu"
