"""Detections drawn on an image (boxes, class names, scores), numpy and PIL only: the same pictures
on the board, in a trial's MLflow run and from `detect`."""
from __future__ import annotations

import io
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw

# tab10, so neighbouring classes differ
COLOURS = ((31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75),
           (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207))


def draw_detections(image: np.ndarray, dets: np.ndarray, names: Sequence[str]) -> np.ndarray:
    """A copy of the (H, W, 3) uint8 `image` with each detection row [x1, y1, x2, y2, score, class]
    (original-image pixels) drawn as a box labelled "name 0.87"."""
    canvas = Image.fromarray(np.asarray(image, dtype=np.uint8))
    draw = ImageDraw.Draw(canvas)
    width = max(1, round(max(canvas.size) / 160))
    for x1, y1, x2, y2, score, cls in np.asarray(dets, dtype=np.float32).reshape(-1, 6):
        colour = COLOURS[int(cls) % len(COLOURS)]
        name = names[int(cls)] if int(cls) < len(names) else f"class {int(cls)}"
        draw.rectangle((x1, y1, x2, y2), outline=colour, width=width)
        label = f"{name} {score:.2f}"
        left, top, right, bottom = draw.textbbox((x1, y1), label)
        above = max(0.0, y1 - (bottom - top) - 2)
        draw.rectangle((x1, above, x1 + (right - left) + 2, above + (bottom - top) + 2), fill=colour)
        draw.text((x1 + 1, above), label, fill=(255, 255, 255))
    return np.asarray(canvas)


def png_bytes(image: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(image).save(out, format="PNG")
    return out.getvalue()
