"""Letterbox pre-processing shared by training, evaluation and the board.

The torch evaluator and the numpy-only runner on the board both call these functions, so an
exported model sees exactly the pixels the trained model saw. The arithmetic follows YOLOv5's
`letterbox(auto=False, scaleup=True)`: the long side is scaled to `size` (rounded with Python's
`round`), the padding is split in half, and the returned pad is the *unrounded* half padding
(e.g. 3.5). When the total padding is odd the image sits at `round(pad - 0.1)`, half a pixel off
the returned pad; YOLOv5 has the same offset, and because targets are made and predictions are
mapped back with the same pad, it cancels out.
"""
from __future__ import annotations

import numpy as np
from PIL import Image

PAD_VALUE = 114  # YOLOv5's grey border


def _check_image(image: np.ndarray) -> None:
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        shape = getattr(image, "shape", None)
        dtype = getattr(image, "dtype", type(image).__name__)
        raise ValueError(f"expected an (H, W, 3) uint8 RGB image, got shape {shape} dtype {dtype}")


def resize_long_side(image: np.ndarray, size: int) -> tuple[np.ndarray, float]:
    """Scale `image` (PIL bilinear) so its long side is `size`; return (resized, scale).

    Split out of `letterbox` because mosaic augmentation tiles resized but unpadded images.
    """
    _check_image(image)
    if size < 1:
        raise ValueError(f"size must be >= 1, got {size}")
    height, width = image.shape[:2]
    scale = min(size / height, size / width)
    new_w, new_h = int(round(width * scale)), int(round(height * scale))
    if (new_w, new_h) != (width, height):
        image = np.asarray(Image.fromarray(image).resize((new_w, new_h), Image.Resampling.BILINEAR))
    return image, scale


def letterbox(image: np.ndarray, size: int, *, pad_value: int = PAD_VALUE
              ) -> tuple[np.ndarray, float, tuple[float, float]]:
    """Resize keeping the aspect ratio and pad to (size, size, 3).

    Returns (padded uint8 image, scale, (pad_x, pad_y)); a point (x, y) of the original image lands
    at (x * scale + pad_x, y * scale + pad_y).
    """
    resized, scale = resize_long_side(image, size)
    new_h, new_w = resized.shape[:2]
    pad_x, pad_y = (size - new_w) / 2, (size - new_h) / 2
    top, left = int(round(pad_y - 0.1)), int(round(pad_x - 0.1))
    out = np.full((size, size, 3), pad_value, dtype=np.uint8)
    out[top:top + new_h, left:left + new_w] = resized
    return out, scale, (pad_x, pad_y)


def to_input(images: np.ndarray) -> np.ndarray:
    """(H, W, 3) or (B, H, W, 3) uint8 -> contiguous (B, 3, H, W) float32 in [0, 1], the model's input."""
    images = np.asarray(images)
    if images.ndim == 3:
        images = images[None]
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[3] != 3:
        raise ValueError(f"expected (H, W, 3) or (B, H, W, 3) uint8 images, got shape {images.shape} "
                         f"dtype {images.dtype}")
    batch = np.ascontiguousarray(images.transpose(0, 3, 1, 2), dtype=np.float32)
    batch /= np.float32(255)
    return batch


def boxes_to_original(boxes: np.ndarray, scale: float, pad: tuple[float, float],
                      shape_hw: tuple[int, int]) -> np.ndarray:
    """Undo `letterbox` for (N, 4) xyxy boxes and clip them to the original (height, width)."""
    boxes = np.asarray(boxes, dtype=np.float32)
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f"boxes must have shape (N, 4), got {boxes.shape}")
    if scale <= 0:
        raise ValueError(f"scale must be > 0, got {scale}")
    pad_x, pad_y = pad
    height, width = shape_hw
    out = (boxes - np.array([pad_x, pad_y, pad_x, pad_y], dtype=np.float32)) / np.float32(scale)
    np.clip(out[:, 0::2], 0, width, out=out[:, 0::2])
    np.clip(out[:, 1::2], 0, height, out=out[:, 1::2])
    return out
