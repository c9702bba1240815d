"""What an artifact's outputs hold, as the artifact itself says, and the one host-side decode.

An exported file describes its outputs in its own metadata (ONNX `metadata_props`, a TFLite metadata
buffer) under `METADATA_KEY`, so every reader (`eval`, `detect`, the board's scoring and timing) turns
them into the same (1, N, 5+C) predictions: cx, cy, w, h in input pixels, objectness, class
probabilities. Three layouts:

- `joined`: one (1, N, 5+C) tensor, decoded in the graph (a file without a description is this: a
  user's ONNX detector, or one exported before the description existed);
- `split`: boxes (1, N, 4) and scores (1, N, 1+C) decoded in the graph, each with its own int8 scale;
- `raw`: the head convs' outputs per level, (1, H_l, W_l, A*(5+C)) NHWC logits, decoded here in numpy
  (`detection.postprocess.decode`): NPUs run convolutions, not box arithmetic.

numpy only: the board runs this.
"""
from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from detection.postprocess import decode

METADATA_KEY = "edgesweep.outputs"
LAYOUTS = ("joined", "split", "raw")


class OutputsError(ValueError):
    """An artifact whose outputs do not match what it says it holds."""


@dataclass(frozen=True)
class OutputLayout:
    """The artifact's outputs in order (`names`) and what they hold; `anchors` (levels, A, 2) in input
    pixels and `strides` per level for `raw`."""

    layout: str
    names: tuple[str, ...]
    anchors: tuple[tuple[tuple[float, float], ...], ...] = ()
    strides: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if self.layout not in LAYOUTS:
            raise OutputsError(f"output layout must be one of {', '.join(LAYOUTS)}, got {self.layout!r}")
        expected = {"joined": 1, "split": 2, "raw": len(self.strides)}[self.layout]
        if len(self.names) != expected or (self.layout == "raw" and len(self.anchors) != expected):
            raise OutputsError(f"a {self.layout} layout has {expected} outputs (and as many anchor rows for raw); "
                               f"got names {self.names}, {len(self.anchors)} anchor rows")

    def to_json(self) -> str:
        return json.dumps({"layout": self.layout, "names": list(self.names), "anchors": self.anchors,
                           "strides": list(self.strides)})

    @classmethod
    def from_json(cls, text: str | None, default_names: Sequence[str] = ("predictions",)) -> OutputLayout:
        """The layout an artifact's metadata states; None (no metadata) is a joined output."""
        if text is None:
            return cls("joined", tuple(default_names[:1]))
        try:
            data = json.loads(text)
            return cls(data["layout"], tuple(data["names"]),
                       tuple(tuple(tuple(float(v) for v in pair) for pair in level) for level in data["anchors"]),
                       tuple(int(s) for s in data["strides"]))
        except (ValueError, KeyError, TypeError) as e:
            raise OutputsError(f"unreadable {METADATA_KEY} metadata {text[:200]!r}: {e}") from e

    def check(self, available: Sequence[str]) -> None:
        """Raise OutputsError unless the artifact has every output this layout names."""
        missing = [name for name in self.names if name not in available]
        if missing:
            raise OutputsError(f"the artifact says it outputs {', '.join(self.names)} but has no {', '.join(missing)} "
                               f"(it has {', '.join(available)})")

    def predictions(self, outputs: dict[str, np.ndarray]) -> np.ndarray:
        """The artifact's float outputs by name -> (1, N, 5+C) float32 decoded predictions."""
        self.check(list(outputs))
        tensors = [np.asarray(outputs[name], dtype=np.float32) for name in self.names]
        if self.layout == "joined":
            return tensors[0]
        if self.layout == "split":
            return np.concatenate(tensors, axis=-1)
        anchors = np.asarray(self.anchors, dtype=np.float32)
        per_anchor = anchors.shape[1]
        raw = []
        for maps in tensors:  # (B, H, W, A*(5+C)) -> (B, A, H, W, 5+C)
            batch, height, width, channels = maps.shape
            raw.append(maps.reshape(batch, height, width, per_anchor, channels // per_anchor).transpose(0, 3, 1, 2, 4))
        return decode(raw, anchors, self.strides)
