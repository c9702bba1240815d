"""Where data sets live: the embedded default (generated on first use), a COCO-format directory or
a YOLO-format data.yaml.

`DataConfig` is the sweep file's `data:` section (parsed by `orchestrator.config`); this module
finds its splits on disk, generating the default one the first time, and hands them on as
`detection.coco.SplitSpec`s.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

from pydantic import Field

from common import atomic
from common.errors import UserError
from common.locking import lock_exclusive
from detection.coco import SplitSpec
from detection.yolo_format import is_data_yaml, read_data_yaml

log = logging.getLogger(__name__)

# Known layouts: (train annotations, train images, val annotations, val images), relative to a root.
LAYOUTS = (
    ("instances_train.json", "train", "instances_val.json", "val"),  # `data synth` output
    ("annotations/instances_train2017.json", "train2017", "annotations/instances_val2017.json", "val2017"),  # COCO 2017
)
YOLO_DATA_YAML = "data.yaml"  # a YOLO-format data set's file, in a directory given as its root


class LayoutError(UserError, FileNotFoundError):
    """A data set directory in none of the known layouts; the message says what it lacks."""


@dataclass(frozen=True)
class EmbeddedDefault:
    """The generated default data set: small enough to train on a 2-core laptop CPU in minutes."""

    __pydantic_config__ = {"extra": "forbid"}  # the sweep file's `data.synth`
    train: Annotated[int, Field(ge=1, description="training images")] = 2000
    val: Annotated[int, Field(ge=1, description="val images")] = 300
    size: Annotated[int, Field(ge=32, description="image side in pixels")] = 128
    seed: Annotated[int, Field(ge=0, description="generator seed (same seed, same bytes)")] = 0


@dataclass(frozen=True)
class SplitPaths:
    images: Path  # directory of image files
    annotations: Path  # COCO instances json


@dataclass(frozen=True)
class DataConfig:
    source: str = "default"  # "default" (generated), "coco" or "yolo" (a data set on disk)
    synth: EmbeddedDefault = EmbeddedDefault()
    root: Path | None = None  # coco: a directory in one of LAYOUTS; yolo: a data.yaml or its directory
    train: SplitPaths | None = None  # coco: resolved from root, or given explicitly
    val: SplitPaths | None = None
    train_subset: int | None = None  # seeded random subsets (None: every image)
    val_subset: int | None = None
    calibration_images: int = 64  # training images that calibrate int8 formats
    bad_images: str = "skip"  # unreadable images: skip them (logged) or fail


@dataclass(frozen=True)
class DataSplits:
    train: SplitSpec
    val: SplitSpec


def cache_dir() -> Path:
    """Generated data, trained teachers and students are cached here (`EDGESWEEP_CACHE` overrides),
    private to the user: later runs load its checkpoints."""
    return atomic.private_dir(Path(os.environ.get("EDGESWEEP_CACHE", Path.home() / ".cache" / "edgesweep")))


def find_layout(root: Path) -> tuple[SplitPaths, SplitPaths]:
    """The (train, val) paths of a data set: a directory in one of the LAYOUTS, or a YOLO-format
    `data.yaml` (or a directory holding one). A partial layout is reported with the files it lacks."""
    root = Path(root)
    if is_data_yaml(root) or (root / YOLO_DATA_YAML).is_file():
        data_yaml = root if is_data_yaml(root) else root / YOLO_DATA_YAML
        found = read_data_yaml(data_yaml)  # names the file or directory it misses
        return SplitPaths(found.train, data_yaml), SplitPaths(found.val, data_yaml)
    if not root.is_dir():
        raise LayoutError(f"data set directory not found: {root}")
    best: list[str] | None = None
    for train_ann, train_img, val_ann, val_img in LAYOUTS:
        wanted = {train_ann: "file", train_img: "dir", val_ann: "file", val_img: "dir"}
        missing = [p for p, kind in wanted.items()
                   if not ((root / p).is_file() if kind == "file" else (root / p).is_dir())]
        if not missing:
            return SplitPaths(root / train_img, root / train_ann), SplitPaths(root / val_img, root / val_ann)
        if len(missing) < len(wanted) and (best is None or len(missing) < len(best)):
            best = missing
    if best is not None:
        raise LayoutError(f"{root} lacks {', '.join(best)}")
    layouts = "; ".join(f"{a} + {b}/ + {c} + {d}/" for a, b, c, d in LAYOUTS)
    raise LayoutError(f"no COCO-format splits found in {root}; expected one of these layouts: {layouts}, "
                      f"or a YOLO-format {YOLO_DATA_YAML} (or give data.train and data.val explicitly)")


def splits_in(root: Path, *, train_subset: int | None = None, val_subset: int | None = None, seed: int = 0,
              bad_images: str = "skip") -> DataSplits:
    """The train and val splits of a data set directory in one of the known layouts."""
    train, val = find_layout(root)
    return DataSplits(train=SplitSpec(train.images, train.annotations, train_subset, seed, bad_images),
                      val=SplitSpec(val.images, val.annotations, val_subset, seed, bad_images))


def embedded_default(data: EmbeddedDefault = EmbeddedDefault()) -> Path:
    """The generated default data set, made on first use and reused afterwards. A file lock makes
    concurrent first users (two teachers starting at once) wait for one generation instead of
    reading images another is still writing."""
    from detection.synth import FORMAT_VERSION, SynthConfig, generate  # noqa: PLC0415 - only when generating

    root = cache_dir() / "data" / f"synth-v{FORMAT_VERSION}-{data.size}px-{data.train}-{data.val}-s{data.seed}"
    done = root / ".complete"
    if done.exists():
        return root
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".lock", "w") as lock:
        lock_exclusive(lock.fileno(), root / ".lock")
        if not done.exists():
            log.info("generating the embedded default data set in %s", root)
            generate(root, train=data.train, val=data.val, seed=data.seed, config=SynthConfig(size=data.size))
            atomic.write_text(done, "ok\n")  # last, and whole: its presence says the set is complete
    return root


def data_splits(data: DataConfig, *, seed: int) -> DataSplits:
    """The sweep's train and val splits, generating the default data set on first use."""
    common = dict(seed=seed, bad_images=data.bad_images)
    if data.source == "default":
        return splits_in(embedded_default(data.synth), train_subset=data.train_subset, val_subset=data.val_subset,
                         **common)
    return DataSplits(
        train=SplitSpec(data.train.images, data.train.annotations, data.train_subset, **common),
        val=SplitSpec(data.val.images, data.val.annotations, data.val_subset, **common))
