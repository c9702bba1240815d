"""A val split as plain bytes, to score artifacts on a machine that has none of its files (a board).

The driver packs the split once per sweep (the image files as they are, and the COCO ground truth
of exactly those images); Ray's object store carries it to the board, which writes it once into its
own cache under the pack's hash and loads it there as an ordinary `CocoDataset`.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from detection.coco import CocoDataset, DatasetError, SplitSpec

ANNOTATIONS = "instances.json"


@dataclass(frozen=True)
class PackedSplit:
    annotations: bytes = field(repr=False)  # COCO instances json of exactly these images
    images: dict[str, bytes] = field(repr=False)  # file_name -> the file's bytes
    sha256: str = ""

    @classmethod
    def of(cls, data: CocoDataset) -> "PackedSplit":
        """The images of `data` (its subset, as chosen) and their ground truth."""
        dataset = data.coco.dataset
        images = {image["file_name"]: data.image_path(i).read_bytes()
                  for i, image in enumerate(data.coco.imgs[j] for j in data.image_ids)}
        annotations = json.dumps({k: v for k, v in dataset.items()}, sort_keys=True).encode()
        digest = hashlib.sha256(annotations)
        for name in sorted(images):
            digest.update(name.encode())
            digest.update(hashlib.sha256(images[name]).digest())
        return cls(annotations=annotations, images=images, sha256=digest.hexdigest())

    def unpack(self, cache_root: Path) -> CocoDataset:
        """The split, written once under `cache_root/<hash>/` (later calls only load it)."""
        root = Path(cache_root) / f"val-{self.sha256[:16]}"
        if not (root / ANNOTATIONS).exists():
            root.parent.mkdir(parents=True, exist_ok=True)
            staging = Path(tempfile.mkdtemp(prefix=".val-", dir=root.parent))
            for name, content in self.images.items():
                relative = PurePosixPath(name)
                if relative.is_absolute() or ".." in relative.parts:
                    raise DatasetError(f"packed split: image file name {name!r} leaves its directory")
                path = staging / "images" / relative
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(content)
            (staging / ANNOTATIONS).write_bytes(self.annotations)
            try:
                os.replace(staging, root)  # complete or absent, never half-written
            except OSError:  # another process unpacked it first
                shutil.rmtree(staging, ignore_errors=True)
        return CocoDataset(SplitSpec(root / "images", root / ANNOTATIONS))
