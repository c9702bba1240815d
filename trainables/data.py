"""The torch training data pipeline: letterboxed, augmented images with YOLO targets.

Training must resume from a checkpoint and end with bit-identical weights, so nothing here
depends on history, global RNGs or the number of loader workers: item i of epoch e is augmented
with `np.random.default_rng([seed, e, i])`, and epoch e is shuffled by a `torch.Generator` seeded
from (seed, e). Pre-processing is `detection.letterbox`, the same code evaluation and the board use.
"""
from __future__ import annotations

import logging
import weakref
from typing import Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from detection.anchors import STRIDES
from detection.coco import CocoDataset
from detection.letterbox import letterbox, resize_long_side, to_input
from trainables.augment import AugmentConfig, hflip, hsv_jitter, mosaic4, random_affine

log = logging.getLogger(__name__)

# (image resized so its long side is img_size, boxes in its pixels, classes)
_Resized = tuple[np.ndarray, np.ndarray, np.ndarray]

# Decoded, resized training images per split object and image size. A trainer process trains one
# trial after another on the same (memoised) split, so only its first trial decodes the images;
# the cache goes when the split object does.
_RESIZED: "weakref.WeakKeyDictionary[CocoDataset, dict[int, list[_Resized]]]" = weakref.WeakKeyDictionary()


class DetectionDataset(Dataset):
    """COCO split -> (image (3, S, S) float32 in [0, 1], targets (n, 5) [class, cx, cy, w, h] normalised, index).

    With `augment` None (or all off) an item is exactly `letterbox` + `to_input` of the image, as in
    evaluation. Otherwise, like YOLOv5: mosaic (with probability `augment.mosaic`) or letterbox, then
    random scale/translate, HSV jitter and horizontal flip.
    """

    def __init__(self, data: CocoDataset, img_size: int, augment: AugmentConfig | None, *, seed: int = 0,
                 cache_images: bool = False):
        stride = max(STRIDES)
        if isinstance(img_size, bool) or not isinstance(img_size, int) or img_size < stride or img_size % stride:
            raise ValueError(f"img_size must be a positive multiple of the largest stride {stride}, got {img_size!r}")
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
        self.data = data
        self.img_size = img_size
        self.augment = augment if augment is not None and augment.enabled else None
        self.seed = seed
        self.epoch = 0
        self._cache: list[_Resized] | None = None
        if cache_images:
            # Filled eagerly: loader workers are re-created every epoch, so a cache filled lazily
            # inside a worker would be thrown away with it.
            by_size = _RESIZED.setdefault(data, {})
            if img_size not in by_size:
                by_size[img_size] = [self._load_resized(j) for j in range(len(data))]
                megabytes = sum(image.nbytes for image, _, _ in by_size[img_size]) / 2**20
                log.info("cached %d images resized to %d px (%.1f MiB)", len(data), img_size, megabytes)
            self._cache = by_size[img_size]

    def __len__(self) -> int:
        return len(self.data)

    def set_epoch(self, epoch: int) -> None:
        """Select the augmentation randomness of `epoch`; call before creating that epoch's loader."""
        if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0:
            raise ValueError(f"epoch must be a non-negative integer, got {epoch!r}")
        self.epoch = epoch

    def _load_resized(self, j: int) -> _Resized:
        image, scale = resize_long_side(self.data.load_image(j), self.img_size)
        boxes, classes = self.data.annotations(j)
        boxes = boxes * np.float32(scale)
        for array in (image, boxes, classes):  # cached items are shared by every epoch: never edit in place
            array.setflags(write=False)
        return image, boxes, classes

    def _resized(self, j: int) -> _Resized:
        return self._cache[j] if self._cache is not None else self._load_resized(j)

    def load_item(self, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Item i of the current epoch in numpy: (S, S, 3) uint8 image, (n, 4) xyxy pixel boxes, (n,) classes."""
        if not 0 <= i < len(self):
            raise IndexError(f"item {i} out of range for a data set of {len(self)} images")
        size, aug = self.img_size, self.augment
        rng = np.random.default_rng([self.seed, self.epoch, i])
        if aug is not None and aug.mosaic > 0 and rng.random() < aug.mosaic:
            order = [i, *rng.integers(0, len(self), size=3).tolist()]
            rng.shuffle(order)
            canvas, boxes, classes = mosaic4([self._resized(j) for j in order], size, rng)
            image, boxes, classes = random_affine(canvas, boxes, classes, rng, scale=aug.scale,
                                                  translate=aug.translate, output_hw=(size, size))
        else:
            resized, boxes, classes = self._resized(i)
            image, _, (pad_x, pad_y) = letterbox(resized, size)
            boxes = boxes + np.array([pad_x, pad_y, pad_x, pad_y], dtype=np.float32)
            if aug is not None:
                image, boxes, classes = random_affine(image, boxes, classes, rng, scale=aug.scale,
                                                      translate=aug.translate)
        if aug is not None:
            image = hsv_jitter(image, rng, hue=aug.hsv_h, saturation=aug.hsv_s, value=aug.hsv_v)
            if rng.random() < aug.fliplr:
                image, boxes = hflip(image, boxes)
        return image, boxes.astype(np.float32), classes.astype(np.int64)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        image, boxes, classes = self.load_item(i)
        centre_size = np.concatenate(((boxes[:, :2] + boxes[:, 2:]) / 2, boxes[:, 2:] - boxes[:, :2]), axis=1)
        targets = np.concatenate((classes[:, None].astype(np.float32), centre_size / np.float32(self.img_size)),
                                 axis=1)
        return torch.from_numpy(to_input(image)[0]), torch.from_numpy(targets), i


def collate(batch: Sequence[tuple[torch.Tensor, torch.Tensor, int]]) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    """Stack images; concatenate targets as (M, 6) [batch_index, class, cx, cy, w, h]; keep the indices."""
    images = torch.stack([image for image, _, _ in batch])
    targets = torch.cat([torch.cat((torch.full((len(t), 1), float(k), dtype=t.dtype), t), dim=1)
                         for k, (_, t, _) in enumerate(batch)])
    return images, targets, [index for _, _, index in batch]


def epoch_seed(seed: int, epoch: int) -> int:
    """A 64-bit seed for epoch `epoch` of a run seeded with `seed` (well mixed, unlike seed + epoch)."""
    return int(np.random.SeedSequence([seed, epoch]).generate_state(1, dtype=np.uint64)[0])


def make_loader(dataset: Dataset, *, batch_size: int, shuffle: bool, workers: int, seed: int,
                epoch: int = 0) -> DataLoader:
    """A loader for one epoch; make a new one each epoch.

    Sets the dataset's epoch (if it has one) and shuffles with a generator seeded from (seed, epoch).
    The generator is also handed to the DataLoader, which draws its worker base seed from it instead
    of from torch's global RNG, so building a loader never disturbs the model's randomness.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if workers < 0:
        raise ValueError(f"workers must be >= 0, got {workers}")
    if hasattr(dataset, "set_epoch"):
        dataset.set_epoch(epoch)
    generator = torch.Generator()
    generator.manual_seed(epoch_seed(seed, epoch))
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, num_workers=workers, collate_fn=collate,
                      generator=generator, persistent_workers=False, pin_memory=False, drop_last=False)
