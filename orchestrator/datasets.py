"""Where data sets live: the embedded default (generated on first use) or a COCO-format directory."""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from detection.coco import SplitSpec

log = logging.getLogger(__name__)

# The embedded default: small enough to train on a 2-core laptop CPU in minutes.
DEFAULT_SYNTH = {"train": 2000, "val": 300, "size": 128, "seed": 0}

# Known layouts: (train annotations, train images, val annotations, val images), relative to a root.
LAYOUTS = (
    ("instances_train.json", "train", "instances_val.json", "val"),  # `data synth` output
    ("annotations/instances_train2017.json", "train2017", "annotations/instances_val2017.json", "val2017"),  # COCO 2017
)


@dataclass(frozen=True)
class DataSplits:
    train: SplitSpec
    val: SplitSpec


def cache_dir() -> Path:
    """Generated data and trained teachers are cached here (`EDGESWEEP_CACHE` overrides)."""
    return Path(os.environ.get("EDGESWEEP_CACHE", Path.home() / ".cache" / "edgesweep"))


def splits_in(root: Path, *, train_subset: int | None = None, val_subset: int | None = None,
              seed: int = 0) -> DataSplits:
    """The train and val splits of a data set directory in one of the known layouts."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"data set directory not found: {root}")
    for train_ann, train_img, val_ann, val_img in LAYOUTS:
        if (root / train_ann).is_file() and (root / val_ann).is_file():
            return DataSplits(
                train=SplitSpec(images=root / train_img, annotations=root / train_ann, subset=train_subset, seed=seed),
                val=SplitSpec(images=root / val_img, annotations=root / val_ann, subset=val_subset, seed=seed))
    expected = "; ".join(f"{a} + {b}/" for a, b, _, _ in LAYOUTS)
    raise FileNotFoundError(f"no COCO-format splits found in {root}: expected {expected} "
                            f"(or give annotation and image paths explicitly in the config)")


def embedded_default(*, train: int = DEFAULT_SYNTH["train"], val: int = DEFAULT_SYNTH["val"],
                     size: int = DEFAULT_SYNTH["size"], seed: int = DEFAULT_SYNTH["seed"]) -> Path:
    """The generated default data set, made on first use and reused afterwards."""
    from detection.synth import FORMAT_VERSION, SynthConfig, generate  # noqa: PLC0415 - only when generating

    root = cache_dir() / "data" / f"synth-v{FORMAT_VERSION}-{size}px-{train}-{val}-s{seed}"
    done = root / ".complete"
    if not done.exists():
        log.info("generating the embedded default data set in %s", root)
        generate(root, train=train, val=val, seed=seed, config=SynthConfig(size=size))
        done.write_text("ok\n")
    return root

