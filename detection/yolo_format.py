"""YOLO-format data sets (Ultralytics' `data.yaml`, one `class cx cy w h` text file per image), read
as COCO: each split becomes a COCO instances dict in memory, so training, pycocotools scoring and
every check of `detection.coco` treat it exactly like a COCO file.

The layout is Ultralytics': `data.yaml` names `train` and `val` image directories (relative to its
`path`, which is relative to the yaml's own directory; default: that directory) and `names` (a list,
or a mapping from class index to name); an image `.../images/<split>/a.jpg` has its labels in
`.../labels/<split>/a.txt`, coordinates normalised to [0, 1]. A missing label file is an image
without objects. Category ids are the class index + 1 (COCO's ids start at 1).
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path

import yaml
from PIL import Image

from common.errors import UserError

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
COORD_TOLERANCE = 1e-3  # normalised coordinates may overshoot [0, 1] by a rounding error
# What PIL raises on a file it cannot open as an image; a header claiming more than twice
# PIL's MAX_IMAGE_PIXELS (a decompression bomb) raises an error that is not an OSError.
IMAGE_OPEN_ERRORS = (OSError, ValueError, Image.DecompressionBombError)


class YoloFormatError(UserError, ValueError):
    """A YOLO-format data set that cannot be read; the message names the file (and line) and what is wrong."""


@dataclass(frozen=True)
class YoloDataYaml:
    path: Path  # the data.yaml itself
    train: Path  # image directories
    val: Path
    names: tuple[str, ...]


def is_data_yaml(path: Path) -> bool:
    return Path(path).suffix in (".yaml", ".yml")


def read_data_yaml(path: Path) -> YoloDataYaml:
    """The splits and class names of an Ultralytics `data.yaml`; missing directories are named."""
    path = Path(path)
    if not path.is_file():
        raise YoloFormatError(f"YOLO data file {path} does not exist")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise YoloFormatError(f"YOLO data file {path} is not valid YAML: {e}") from None
    except RecursionError:
        raise YoloFormatError(f"YOLO data file {path} is nested too deeply to be a data.yaml") from None
    if not isinstance(raw, dict):
        raise YoloFormatError(f"YOLO data file {path}: expected a mapping with train, val and names")
    missing = [k for k in ("train", "val", "names") if k not in raw]
    if missing:
        raise YoloFormatError(f"YOLO data file {path} lacks {', '.join(missing)} (an Ultralytics data.yaml has "
                              f"train: and val: image directories and names:)")
    if not isinstance(raw.get("path") or ".", str):
        raise YoloFormatError(f"YOLO data file {path}: path must be a directory, got {raw['path']!r:.80}")
    root = (path.parent / (raw.get("path") or ".")).resolve()
    names = raw["names"]
    if isinstance(names, dict):
        keys = list(names)
        if not all(isinstance(k, int) and not isinstance(k, bool) for k in keys) \
                or sorted(keys) != list(range(len(keys))):
            raise YoloFormatError(f"YOLO data file {path}: names must map 0..{len(names) - 1} to class names, "
                                  f"got keys {', '.join(repr(k) for k in keys):.200}")
        names = [names[i] for i in range(len(names))]
    if not isinstance(names, list) or not names:
        raise YoloFormatError(f"YOLO data file {path}: names must be a non-empty list or index -> name mapping")
    for i, name in enumerate(names):
        if not isinstance(name, (str, int, float)) or isinstance(name, bool) or not str(name).strip():
            raise YoloFormatError(f"YOLO data file {path}: names[{i}] is {name!r:.80}; a class name is a "
                                  f"non-empty string")
    splits = {}
    for split in ("train", "val"):
        value = raw[split]
        if not isinstance(value, str):
            raise YoloFormatError(f"YOLO data file {path}: {split} must be one image directory, got {value!r} "
                                  f"(lists and .txt file lists are not read)")
        directory = root / value
        if not directory.is_dir():
            raise YoloFormatError(f"YOLO data file {path}: {split} directory {directory} does not exist")
        splits[split] = directory
    return YoloDataYaml(path=path, train=splits["train"], val=splits["val"], names=tuple(str(n) for n in names))


def skip_note(path: Path, reason: str) -> str:
    """One skipped file as a warning names it: a label line's reason starts with its file and line already."""
    return reason if reason.startswith(str(path)) else f"{path} {reason}"


def label_file(image: Path) -> Path:
    """Ultralytics' rule: the last `images` directory of the path becomes `labels`, the suffix `.txt`."""
    parts = list(image.parts)
    for i in range(len(parts) - 2, -1, -1):
        if parts[i] == "images":
            parts[i] = "labels"
            break
    else:
        raise YoloFormatError(f"image {image} is not under an 'images' directory, so its labels cannot be found "
                              f"(YOLO layout: .../images/<split>/x.jpg with .../labels/<split>/x.txt)")
    return Path(*parts).with_suffix(".txt")


def _label_lines(labels: Path) -> tuple[list[str], str | None]:
    """The lines of a label file, or none and why: a file that is not UTF-8 text is named with the
    line of its first bad byte."""
    data = labels.read_bytes()
    try:
        return data.decode("utf-8").splitlines(), None
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        return [], f"{labels}:{line}: not UTF-8 text ({e.reason} at byte {e.start}), so none of its boxes is read"


def _boxes(labels: Path, width: int, height: int, classes: int) -> tuple[list[tuple[int, list[float]]], list[str]]:
    """(class index, COCO [x, y, w, h] in pixels) per valid line, and a reason per bad line."""
    lines, unreadable = _label_lines(labels)
    boxes, bad = [], [unreadable] if unreadable else []
    for n, line in enumerate(lines, start=1):
        fields = line.split()
        if not fields:
            continue
        where = f"{labels}:{n}"
        if len(fields) != 5:
            bad.append(f"{where}: expected 5 columns 'class cx cy w h', got {len(fields)}")
            continue
        try:
            cls, (cx, cy, w, h) = int(fields[0]), (float(v) for v in fields[1:])
        except ValueError:
            bad.append(f"{where}: expected an integer class and four numbers, got {line.strip()!r}")
            continue
        if not 0 <= cls < classes:
            bad.append(f"{where}: class {fields[0]:.20} is outside names (0..{classes - 1})")
            continue
        if not all(math.isfinite(v) for v in (cx, cy, w, h)):
            bad.append(f"{where}: box {cx:g} {cy:g} {w:g} {h:g} has a coordinate that is not a finite number")
            continue
        tol = COORD_TOLERANCE
        x1, y1, x2, y2 = cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2
        if min(w, h) < 0 or min(x1, y1) < -tol or max(x2, y2) > 1 + tol:
            bad.append(f"{where}: box {cx:g} {cy:g} {w:g} {h:g} is not inside the image (normalised to [0, 1])")
            continue
        x1, y1, x2, y2 = (min(max(v, 0.0), 1.0) for v in (x1, y1, x2, y2))
        boxes.append((cls, [x1 * width, y1 * height, (x2 - x1) * width, (y2 - y1) * height]))
    return boxes, bad


def coco_split(images_dir: Path, names: tuple[str, ...], *, bad_labels: str = "fail",
               source: Path | None = None) -> tuple[dict, list[tuple[Path, str]]]:
    """A COCO instances dict of one YOLO split, and the (path, reason) of what was skipped.

    A bad label line stops with its file and line under `bad_labels="fail"`; under "skip" it is left
    out and counted (as is an image whose header cannot be read)."""
    images_dir = Path(images_dir)
    files = sorted(p for p in images_dir.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise YoloFormatError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {images_dir}"
                              f"{f' (named by {source})' if source else ''}")
    images, annotations, skipped = [], [], []
    for path in files:
        try:
            with Image.open(path) as im:
                width, height = im.size
        except IMAGE_OPEN_ERRORS as e:
            skipped.append((path, f"cannot be opened as an image ({e})"))
            continue
        image_id = len(images) + 1
        images.append({"id": image_id, "file_name": str(path.relative_to(images_dir)), "width": width,
                       "height": height})
        labels = label_file(path)
        if not labels.is_file():
            continue  # an image without objects
        boxes, bad = _boxes(labels, width, height, len(names))
        if bad and bad_labels == "fail":
            raise YoloFormatError(f"{bad[0]}{f' ({len(bad)} bad lines in this file)' if len(bad) > 1 else ''}; "
                                  f"set bad_images='skip' to leave such lines out")
        skipped += [(labels, reason) for reason in bad]
        for cls, box in boxes:
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": cls + 1,
                                "bbox": box, "area": box[2] * box[3], "iscrowd": 0})
    if skipped:
        log.warning("YOLO split %s: skipped %d bad label line(s) or image(s) (first: %s)", images_dir, len(skipped),
                    skip_note(*skipped[0]))
    categories = [{"id": i + 1, "name": name} for i, name in enumerate(names)]
    return {"images": images, "annotations": annotations, "categories": categories}, skipped
