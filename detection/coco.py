"""Load and validate a COCO-format detection split (real COCO 2017, any data set in its format, or a
YOLO-format split read as one).

Everything a user can get wrong in a data set is checked once, at construction, and reported as a
`DatasetError` that names the file and what is wrong, so a sweep fails before it spends hours
training on a broken split. Only headers of the image files are read here (fast); pixels are
decoded on demand by `load_image`.
"""
from __future__ import annotations

import contextlib
import functools
import hashlib
import io
import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Literal

import numpy as np
from PIL import Image
from pycocotools.coco import COCO

from common.errors import UserError
from detection.yolo_format import IMAGE_OPEN_ERRORS, coco_split, is_data_yaml, read_data_yaml, skip_note

log = logging.getLogger(__name__)

REQUIRED_KEYS: dict[str, tuple[str, ...]] = {
    "images": ("id", "file_name", "height", "width"),
    "annotations": ("id", "image_id", "category_id", "bbox"),
    "categories": ("id", "name"),
}
# COCO boxes come from polygon extents and can overshoot the image by a rounding error; boxes
# overshooting by less than this are clipped, anything further out is a broken annotation.
BOX_TOLERANCE_PX = 1.0
MAX_SIDE_PX = 1 << 16  # an image side beyond this is a typo or a hostile file, not a photo to train on
ID_REFERENCES = {"annotations": ("image_id", "category_id")}  # keys besides `id` that hold an id
BAD_IMAGE_POLICIES = ("skip", "fail")


class DatasetError(UserError, ValueError):
    """A data problem the user must fix; the message names the path and what is wrong."""


@dataclass(frozen=True)
class SplitSpec:
    """Where a split lives and which part of it to use."""

    images: Path  # directory with the image files
    annotations: Path  # COCO instances json, or a YOLO-format data.yaml (see detection.yolo_format)
    subset: int | None = None  # seeded random subset of this many images
    seed: int = 0
    bad_images: Literal["skip", "fail"] = "skip"

    def __post_init__(self) -> None:
        object.__setattr__(self, "images", Path(self.images))
        object.__setattr__(self, "annotations", Path(self.annotations))
        if self.subset is not None and (isinstance(self.subset, bool) or not isinstance(self.subset, int)
                                        or self.subset < 1):
            raise ValueError(f"subset must be a positive integer or None, got {self.subset!r}")
        if self.bad_images not in BAD_IMAGE_POLICIES:
            raise ValueError(f"bad_images must be one of {BAD_IMAGE_POLICIES}, got {self.bad_images!r}")


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_finite_number(value: object) -> bool:
    """A JSON number a float can hold: not a bool, NaN, infinity or a 400-digit integer."""
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return False
    try:
        return math.isfinite(float(value))
    except OverflowError:
        return False


def _first_duplicate(values) -> object | None:
    seen = set()
    for value in values:
        if value in seen:
            return value
        seen.add(value)
    return None


def _read_json(path: Path) -> dict:
    if not path.is_file():
        raise DatasetError(f"annotations file {path} does not exist")
    try:
        with path.open("rb") as f:
            raw = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DatasetError(f"annotations file {path} is not valid JSON: {e}") from e
    except RecursionError:
        raise DatasetError(f"annotations file {path} is nested too deeply to be a COCO file "
                           f"(arrays or objects inside each other thousands of levels deep)") from None
    if not isinstance(raw, dict):
        raise DatasetError(f"annotations file {path} is not a COCO file: the top level is a "
                           f"{type(raw).__name__}, expected an object with keys {', '.join(REQUIRED_KEYS)}")
    return raw


def _check_structure(raw: dict, path: Path) -> None:
    """Every section exists and every entry has its required keys, with ids that are integers."""
    missing = [key for key in REQUIRED_KEYS if key not in raw]
    if missing:
        raise DatasetError(f"annotations file {path} is not a COCO instances file: missing top-level "
                           f"key(s) {', '.join(missing)} (required: {', '.join(REQUIRED_KEYS)})")
    for section, keys in REQUIRED_KEYS.items():
        entries = raw[section]
        if not isinstance(entries, list):
            raise DatasetError(f"annotations file {path}: '{section}' must be a list, "
                               f"got {type(entries).__name__}")
        for n, entry in enumerate(entries):
            if not isinstance(entry, dict):
                raise DatasetError(f"annotations file {path}: {section}[{n}] must be an object, "
                                   f"got {type(entry).__name__}")
            absent = [k for k in keys if k not in entry]
            if absent:
                raise DatasetError(f"annotations file {path}: {section}[{n}] (id {entry.get('id')!r}) is "
                                   f"missing key(s) {', '.join(absent)} (required: {', '.join(keys)})")
            for key in ("id", *ID_REFERENCES.get(section, ())):
                if not _is_int(entry[key]):
                    raise DatasetError(f"annotations file {path}: {section}[{n}] has {key} {entry[key]!r:.80}; "
                                       f"ids must be integers")
        if section != "annotations":
            duplicate = _first_duplicate(entry["id"] for entry in entries)
            if duplicate is not None:
                raise DatasetError(f"annotations file {path}: '{section}' contains id {duplicate} more than once")
    if not raw["categories"]:
        raise DatasetError(f"annotations file {path} has no categories: a detector needs at least one class "
                           f"(categories: [{{id: 1, name: ...}}, ...])")
    for n, cat in enumerate(raw["categories"]):
        if not isinstance(cat["name"], str) or not cat["name"].strip():
            raise DatasetError(f"annotations file {path}: categories[{n}] (id {cat['id']}) has name "
                               f"{cat['name']!r:.80}; a category name is a non-empty string")
    for n, image in enumerate(raw["images"]):
        h, w, file_name = image["height"], image["width"], image["file_name"]
        if not (_is_finite_number(h) and _is_finite_number(w) and 0 < h <= MAX_SIDE_PX and 0 < w <= MAX_SIDE_PX):
            raise DatasetError(f"annotations file {path}: images[{n}] (id {image['id']}) has height "
                               f"{h!r:.80} and width {w!r:.80}; both must be numbers in (0, {MAX_SIDE_PX}]")
        if not isinstance(file_name, str) or not file_name.strip() or "\0" in file_name:
            raise DatasetError(f"annotations file {path}: images[{n}] (id {image['id']}) has file_name "
                               f"{file_name!r:.80}; expected a file name relative to the images directory")
        if _leaves_directory(file_name):
            raise DatasetError(f"annotations file {path}: images[{n}] (id {image['id']}) has file_name "
                               f"{file_name!r:.200}, which points outside the images directory (absolute, or "
                               f"climbing with '..'); a data set reads only its own images")
    for n, ann in enumerate(raw["annotations"]):
        bbox = ann["bbox"]
        if not (isinstance(bbox, list) and len(bbox) == 4 and all(_is_finite_number(v) for v in bbox)):
            raise DatasetError(f"annotations file {path}: annotation id {ann['id']} has bbox {bbox!r:.200}; "
                               f"expected [x, y, width, height] with four finite numbers")


def _leaves_directory(file_name: str) -> bool:
    """Whether a COCO file_name escapes the images directory it is read from: an absolute path (POSIX
    or Windows) or one with a '..' part."""
    posix, windows = PurePosixPath(file_name), PureWindowsPath(file_name)
    return posix.is_absolute() or bool(windows.drive or windows.root) or ".." in windows.parts


def _check_references_and_boxes(raw: dict, path: Path) -> None:
    """Annotations point at known images and categories, and their boxes lie inside their image."""
    images = {image["id"]: image for image in raw["images"]}
    category_ids = {cat["id"] for cat in raw["categories"]}
    anns = raw["annotations"]
    for key, known, section, hint in (("category_id", category_ids, "categories", f"; known ids: {sorted(category_ids)}"),
                                      ("image_id", images, "images", "")):
        unknown = [a for a in anns if a[key] not in known]
        if unknown:
            a = unknown[0]
            article = "an" if key[0] in "aeiou" else "a"
            raise DatasetError(f"annotations file {path}: {len(unknown)} annotation(s) use {article} {key} missing "
                               f"from '{section}' (first: annotation id {a['id']} with {key} {a[key]!r}{hint})")
    if not anns:
        return
    boxes = np.array([a["bbox"] for a in anns], dtype=np.float64)
    sizes = np.array([(images[a["image_id"]]["width"], images[a["image_id"]]["height"]) for a in anns],
                     dtype=np.float64)
    x, y, w, h = boxes.T
    negative = np.flatnonzero((w < 0) | (h < 0))
    if negative.size:
        a = anns[negative[0]]
        raise DatasetError(f"annotations file {path}: {negative.size} box(es) have a negative width or height "
                           f"(first: annotation id {a['id']} with bbox {a['bbox']})")
    tol = BOX_TOLERANCE_PX
    outside = np.flatnonzero((x < -tol) | (y < -tol) | (x + w > sizes[:, 0] + tol) | (y + h > sizes[:, 1] + tol))
    if outside.size:
        a = anns[outside[0]]
        image = images[a["image_id"]]
        raise DatasetError(f"annotations file {path}: {outside.size} box(es) extend more than {tol:g} px outside "
                           f"their image (first: annotation id {a['id']} with bbox [x, y, w, h] = {a['bbox']} "
                           f"in image id {image['id']} of width {image['width']} and height {image['height']})")
    # Real COCO train2017 has two boxes of height 0 (annotation ids 918 and 2206849); they carry
    # no information, so they are reported and left out of training targets rather than rejected.
    empty = np.flatnonzero((w == 0) | (h == 0))
    if empty.size:
        log.warning("annotations file %s: %d box(es) have zero width or height and are left out of training "
                    "targets (first: annotation id %s)", path, empty.size, anns[empty[0]]["id"])


def _probe_image(path: Path, height: float, width: float) -> str | None:
    """Why the file at `path` cannot serve as this image, or None if its header looks right."""
    if not path.is_file():
        return "file not found"
    try:
        with Image.open(path) as im:
            actual_w, actual_h = im.size
    except IMAGE_OPEN_ERRORS as e:
        return f"cannot be opened as an image ({e})"
    if (actual_h, actual_w) != (height, width):
        return (f"is {actual_w}x{actual_h} pixels but the annotations say {width}x{height} "
                f"(boxes would not match the pixels)")
    return None


def _to_rgb(im: Image.Image) -> np.ndarray:
    """Decode any PIL mode to (H, W, 3) uint8 RGB."""
    if im.mode.startswith("I;16"):  # 16-bit greyscale: keep the dynamic range instead of clipping at 255
        grey = (np.asarray(im, dtype=np.uint32) // 257).astype(np.uint8)
        return np.repeat(grey[:, :, None], 3, axis=2)
    if im.mode == "P" and "transparency" in im.info:
        im = im.convert("RGBA")  # PIL's documented route for palettes with transparency
    return np.array(im.convert("RGB"), dtype=np.uint8)


class CocoDataset:
    """A validated COCO split: ground truth for COCOeval plus per-image pixels and training targets.

    `coco` holds only the images of this (sub)set and their annotations, so COCOeval's defaults
    evaluate exactly `image_ids`. Missing `iscrowd`/`area` fields, which COCOeval needs, are
    filled in there with 0 and the box area.
    """

    def __init__(self, spec: SplitSpec):
        self.spec = spec
        bad_labels: list[tuple[Path, str]] = []
        if is_data_yaml(spec.annotations):  # a YOLO-format split, converted here to the same COCO dict
            raw, bad_labels = coco_split(spec.images, read_data_yaml(spec.annotations).names,
                                         bad_labels=spec.bad_images, source=spec.annotations)
            self._converted_digest = hashlib.sha256(json.dumps(raw, sort_keys=True).encode()).hexdigest()
        else:
            raw = _read_json(spec.annotations)
        _check_structure(raw, spec.annotations)
        _check_references_and_boxes(raw, spec.annotations)
        if not spec.images.is_dir():
            raise DatasetError(f"images directory {spec.images} does not exist "
                               f"(annotations: {spec.annotations})")
        if not raw["images"]:
            raise DatasetError(f"annotations file {spec.annotations} lists no images")

        self.category_ids: list[int] = sorted(cat["id"] for cat in raw["categories"])
        names = {cat["id"]: str(cat["name"]) for cat in raw["categories"]}
        self.class_names: list[str] = [names[c] for c in self.category_ids]
        self.num_classes: int = len(self.category_ids)
        self._class_of = {c: i for i, c in enumerate(self.category_ids)}

        self.skipped: list[tuple[Path, str]] = bad_labels  # unreadable images (and bad YOLO label lines)
        self.image_ids: list[int] = self._select_images(raw)
        self.coco: COCO = self._build_ground_truth(raw, set(self.image_ids))
        self._images = [self.coco.imgs[i] for i in self.image_ids]
        log.info("loaded %s: %d images (%d skipped), %d annotations, %d classes", spec.annotations,
                 len(self.image_ids), len(self.skipped), len(self.coco.anns), self.num_classes)

    def _select_images(self, raw: dict) -> list[int]:
        """The usable images of the (sub)set, sorted by id.

        A subset walks a seeded permutation and takes the first `subset` readable images, so it
        checks only about `subset` files (not all of train2017) and still has the requested size.
        """
        spec = self.spec
        by_id = {image["id"]: image for image in raw["images"]}
        ids = sorted(by_id)
        if spec.subset is not None and spec.subset > len(ids):
            raise DatasetError(f"subset of {spec.subset} images requested but {spec.annotations} has only "
                               f"{len(ids)} images")
        wanted = len(ids) if spec.subset is None else spec.subset
        order = ids if spec.subset is None else [ids[k] for k in np.random.default_rng(spec.seed).permutation(len(ids))]
        chosen: list[int] = []
        for image_id in order:
            if len(chosen) == wanted:
                break
            image = by_id[image_id]
            path = spec.images / image["file_name"]
            reason = _probe_image(path, image["height"], image["width"])
            if reason is None:
                chosen.append(image_id)
            elif spec.bad_images == "fail":
                raise DatasetError(f"image {path} (id {image_id}) {reason}; "
                                   f"set bad_images='skip' to leave such images out")
            else:
                self.skipped.append((path, reason))
        if self.skipped:
            log.warning("skipped %d unreadable image(s) of %s (first: %s)", len(self.skipped),
                        spec.annotations, skip_note(*self.skipped[0]))
        if not chosen:
            raise DatasetError(f"no readable images for {spec.annotations} in {spec.images} "
                               f"({len(self.skipped)} unreadable; first: {skip_note(*self.skipped[0])})")
        if spec.subset is not None and len(chosen) < wanted:
            raise DatasetError(f"subset of {wanted} images requested but only {len(chosen)} images of "
                               f"{spec.annotations} are readable")
        return sorted(chosen)

    def _build_ground_truth(self, raw: dict, keep: set[int]) -> COCO:
        anns = [a for a in raw["annotations"] if a["image_id"] in keep]
        filled = 0
        for a in anns:
            if "iscrowd" not in a or "area" not in a:
                filled += 1
                a.setdefault("iscrowd", 0)
                a.setdefault("area", float(a["bbox"][2] * a["bbox"][3]))
        if filled:
            log.info("%s: filled in missing iscrowd/area for %d annotation(s)", self.spec.annotations, filled)
        dataset = {key: value for key, value in raw.items() if key not in ("images", "annotations")}
        dataset["images"] = [image for image in raw["images"] if image["id"] in keep]
        dataset["annotations"] = anns
        coco = COCO()
        coco.dataset = dataset
        with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress lines
            coco.createIndex()
        return coco

    @functools.cached_property
    def annotations_digest(self) -> str:
        """sha256 of the annotations as read: a COCO file's bytes (hashed only when asked: a teacher's
        cache key needs it, a trial does not), or the COCO form of a YOLO set's labels."""
        converted = getattr(self, "_converted_digest", None)
        return converted or hashlib.sha256(self.spec.annotations.read_bytes()).hexdigest()

    def __len__(self) -> int:
        return len(self.image_ids)

    def _image(self, i: int) -> dict:
        if not 0 <= i < len(self._images):
            raise IndexError(f"image index {i} out of range for a data set of {len(self._images)} images")
        return self._images[i]

    def class_index(self, category_id: int) -> int:
        """COCO category id -> contiguous class index (position in `category_ids`)."""
        try:
            return self._class_of[category_id]
        except KeyError:
            raise DatasetError(f"category id {category_id!r} is not in {self.spec.annotations} "
                               f"(known ids: {self.category_ids})") from None

    def category_id(self, class_index: int) -> int:
        """Contiguous class index -> COCO category id, for writing detections in COCO format."""
        if not (_is_int(class_index) or isinstance(class_index, np.integer)) \
                or not 0 <= class_index < self.num_classes:
            raise DatasetError(f"class index {class_index!r} is out of range for {self.spec.annotations}, "
                               f"which has {self.num_classes} classes (0..{self.num_classes - 1})")
        return self.category_ids[int(class_index)]

    def image_path(self, i: int) -> Path:
        return self.spec.images / self._image(i)["file_name"]

    def image_size(self, i: int) -> tuple[int, int]:
        """(height, width) as recorded in the annotations."""
        image = self._image(i)
        return int(image["height"]), int(image["width"])

    def load_image(self, i: int) -> np.ndarray:
        """Decode image i to (H, W, 3) uint8 RGB, whatever its mode (greyscale, palette, RGBA, CMYK, 16-bit).

        EXIF orientation is deliberately not applied: COCO boxes refer to the stored pixels.
        """
        path = self.image_path(i)
        try:
            with Image.open(path) as im:
                pixels = _to_rgb(im)
        except IMAGE_OPEN_ERRORS as e:
            raise DatasetError(f"image {path} cannot be decoded: {e}") from e
        if pixels.shape[:2] != self.image_size(i):
            height, width = self.image_size(i)
            raise DatasetError(f"image {path} is {pixels.shape[1]}x{pixels.shape[0]} pixels but the annotations "
                               f"say {width}x{height}")
        return pixels

    def annotations(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """Training targets of image i: (N, 4) float32 xyxy pixel boxes and (N,) int64 class indices.

        Crowd regions are not objects to detect (COCOeval ignores matches to them), so they are
        left out; boxes are clipped to the image and those left without area are dropped.
        """
        image = self._image(i)
        anns = [a for a in self.coco.imgToAnns.get(image["id"], []) if not a.get("iscrowd", 0)]
        if not anns:
            return np.zeros((0, 4), dtype=np.float32), np.zeros((0,), dtype=np.int64)
        xywh = np.array([a["bbox"] for a in anns], dtype=np.float64)
        boxes = np.concatenate((xywh[:, :2], xywh[:, :2] + xywh[:, 2:]), axis=1)
        np.clip(boxes[:, 0::2], 0, image["width"], out=boxes[:, 0::2])
        np.clip(boxes[:, 1::2], 0, image["height"], out=boxes[:, 1::2])
        classes = np.array([self._class_of[a["category_id"]] for a in anns], dtype=np.int64)
        keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        return boxes[keep].astype(np.float32), classes[keep]
