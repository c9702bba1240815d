"""The module that gets exported: detector plus box decode for one fixed input size.

By default the board runs the decode inside the artifact and only NMS in numpy, so the graph ends
in decoded predictions (1, N, 5+C): cx, cy, w, h in input pixels, objectness, class probabilities
(1 for a one-class model, see `detection.postprocess.class_probabilities`). Its `ArtifactShape`
may split that into boxes and scores, end the graph at the head convs (the host decodes), or take
an NHWC image; `output_layout` says which, and the exported file carries it (`detection.outputs`).
The arithmetic is `trainables.postprocess.decode` (tests hold the two equal) with two changes for
converters: the grids are constants of the fixed input size instead of `arange`/`meshgrid`, and
the square is a product, because LiteRT's converter refuses `tfl.pow` ("failed to legalize").
Keeping the decode in its own submodule gives its ops a recognisable name (`/decode/...` in ONNX,
`GridDecode` in TFLite op scopes), which is how quantizers are told to leave it in float.
"""
from __future__ import annotations

import torch
from torch import nn

from detection.outputs import OutputLayout
from trainables.export.registry import ArtifactShape
from trainables.models.yolo import YOLO
from trainables.postprocess import class_probabilities

# Attribute name of the decode submodule in `ExportGraph`; quantizers match it to keep the decode in float.
DECODE_MODULE = "decode"


class GridDecode(nn.Module):
    """Head logits per level (B, A, H_l, W_l, 5+C) -> (B, N, 5+C) decoded, rows ordered level, anchor, y, x."""

    def __init__(self, anchors: torch.Tensor, strides: tuple[int, ...], img_size: int, *, split: bool = False):
        """`split`: return (boxes (B, N, 4), scores (B, N, 1+C)) instead of one tensor."""
        super().__init__()
        self.split = split
        self.strides = tuple(int(s) for s in strides)
        for level, stride in enumerate(self.strides):
            cells = img_size // stride
            grid_y, grid_x = torch.meshgrid(torch.arange(cells, dtype=torch.float32),
                                            torch.arange(cells, dtype=torch.float32), indexing="ij")
            self.register_buffer(f"grid{level}", torch.stack((grid_x, grid_y), dim=-1), persistent=False)
            self.register_buffer(f"anchor{level}", anchors[level].detach().float().view(1, -1, 1, 1, 2).clone(),
                                 persistent=False)

    def forward(self, raw: list[torch.Tensor]) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        boxes, scores = [], []
        for level, (logits, stride) in enumerate(zip(raw, self.strides)):
            batch, outputs = logits.shape[0], logits.shape[-1]
            y = logits.sigmoid()
            xy = (y[..., 0:2] * 2 - 0.5 + getattr(self, f"grid{level}")) * float(stride)
            doubled = y[..., 2:4] * 2
            wh = doubled * doubled * getattr(self, f"anchor{level}")
            boxes.append(torch.cat((xy, wh), dim=-1).reshape(batch, -1, 4))
            scores.append(torch.cat((y[..., 4:5], class_probabilities(y)), dim=-1).reshape(batch, -1, outputs - 4))
        if self.split:
            return torch.cat(boxes, dim=1), torch.cat(scores, dim=1)
        return torch.cat([torch.cat(level, dim=-1) for level in zip(boxes, scores)], dim=1)


class ExportGraph(nn.Module):
    """(1, 3, S, S) float32 image in [0, 1] -> (1, N, 5+C) decoded predictions, or as `shape` says:
    a (1, S, S, 3) image; boxes and scores; the head convs' (1, H_l, W_l, A*(5+C)) logits per level."""

    def __init__(self, detector: YOLO, img_size: int, shape: ArtifactShape = ArtifactShape()):
        super().__init__()
        self.shape = shape
        max_stride = max(detector.strides)
        if img_size < max_stride or img_size % max_stride:
            raise ValueError(f"img_size must be a positive multiple of the model's largest stride {max_stride}, "
                             f"got {img_size}")
        self.img_size = img_size
        self.num_classes = detector.spec.num_classes
        self.detector = detector.eval()
        # named DECODE_MODULE
        self.decode = GridDecode(detector.anchors, detector.strides, img_size, split=shape.outputs == "split")

    def forward(self, images: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, ...]:
        if self.shape.nhwc:
            images = images.permute(0, 3, 1, 2)
        if self.shape.decode == "host":
            feats = self.detector.neck(*self.detector.backbone(images))
            return tuple(conv(f).permute(0, 2, 3, 1) for conv, f in zip(self.detector.head.m, feats))
        raw, _ = self.detector(images)
        return self.decode(raw)

    def example_input(self) -> torch.Tensor:
        """A dummy batch of the exported shape, for tracing."""
        side = self.img_size
        return torch.zeros(1, side, side, 3) if self.shape.nhwc else torch.zeros(1, 3, side, side)

    def output_layout(self) -> OutputLayout:
        """What the graph's outputs hold, in order, as the exported file states it."""
        if self.shape.decode == "host":
            levels = len(self.detector.strides)
            return OutputLayout("raw", tuple(f"p{3 + level}" for level in range(levels)),
                                anchors=tuple(tuple(map(tuple, level)) for level in self.detector.anchors.tolist()),
                                strides=tuple(int(s) for s in self.detector.strides))
        if self.shape.outputs == "split":
            return OutputLayout("split", ("boxes", "scores"))
        return OutputLayout("joined", ("predictions",))
