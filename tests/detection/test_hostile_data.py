"""Hostile data files: each one that used to end in a traceback (issue 31) is refused naming its file,
and its line for a YOLO label, or, where `bad_images: skip` says skip, skipped with a warning naming it.

Every case writes a real file and reads it with the real readers (`CocoDataset`, `read_data_yaml`)."""
from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path

import pytest
from PIL import Image

from detection.coco import CocoDataset, DatasetError, SplitSpec
from detection.yolo_format import YoloFormatError, read_data_yaml

VALID_COCO = {"images": [{"id": 1, "file_name": "a.png", "height": 32, "width": 32}],
              "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 1, 5, 5]}],
              "categories": [{"id": 1, "name": "box"}]}
DEEP = 100_000  # JSON nested this deep overflows Python's recursion limit in json.load


def write_coco(root: Path, text: str) -> SplitSpec:
    (root / "images").mkdir(exist_ok=True)
    Image.new("RGB", (32, 32)).save(root / "images" / "a.png")
    (root / "instances.json").write_text(text)
    return SplitSpec(root / "images", root / "instances.json")


def coco_with(**change) -> str:
    """VALID_COCO with `section_index_key=value` set, as JSON text."""
    raw = json.loads(json.dumps(VALID_COCO))
    for where, value in change.items():
        section, key = where.split("__")
        raw[section][0][key] = value
    return json.dumps(raw)


@pytest.mark.parametrize("text, expected", [
    (coco_with(images__file_name=5), "has file_name 5"),
    (json.dumps(VALID_COCO).replace("[1, 1, 5, 5]", f"[1, 1, {'9' * 400}, 5]"), "four finite numbers"),
    (json.dumps(VALID_COCO).replace('"height": 32', f'"height": {"9" * 400}'), "both must be numbers"),
    (coco_with(annotations__image_id=[1]), "has image_id [1]; ids must be integers"),
    (coco_with(annotations__category_id={"id": 1}), "category_id {'id': 1}; ids must be integers"),
    (coco_with(categories__name=None), "a category name is a non-empty string"),
    ("[" * DEEP + "]" * DEEP, "nested too deeply"),
    (json.dumps({**VALID_COCO, "categories": [], "annotations": []}), "has no categories"),
], ids=["file_name-number", "bbox-400-digits", "height-400-digits", "image_id-list", "category_id-object",
        "category-name-null", "nested-100000-deep", "no-categories"])
def test_a_hostile_coco_file_is_refused_naming_the_file_and_what_is_wrong(tmp_path, text, expected):
    spec = write_coco(tmp_path, text)
    with pytest.raises(DatasetError) as refused:
        CocoDataset(spec)
    assert str(spec.annotations) in str(refused.value)
    assert expected in str(refused.value)


@pytest.fixture
def yolo(tmp_path) -> Path:
    """A one-image YOLO split: images/train/a.png with labels/train/a.txt, and its data.yaml."""
    (tmp_path / "images" / "train").mkdir(parents=True)
    (tmp_path / "labels" / "train").mkdir(parents=True)
    Image.new("RGB", (32, 32)).save(tmp_path / "images" / "train" / "a.png")
    (tmp_path / "labels" / "train" / "a.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    (tmp_path / "data.yaml").write_text("train: images/train\nval: images/train\nnames: [a, b]\n")
    return tmp_path


def open_yolo(root: Path, bad_images: str) -> CocoDataset:
    return CocoDataset(SplitSpec(root / "images" / "train", root / "data.yaml", bad_images=bad_images))


@pytest.mark.parametrize("label, expected", [
    (b"0 0.5 0.5 0.2 0.2\n1 nan 0.5 0.2 0.2\n", ":2: box nan 0.5 0.2 0.2 has a coordinate that is not a finite"),
    (b"0 0.5 0.5 0.2 0.2\n0 0.5 0.5 \xff\xfe 0.2\n", ":2: not UTF-8 text"),
], ids=["nan-coordinate", "not-utf8"])
def test_a_bad_label_file_is_named_with_its_line_and_refused_or_skipped_with_a_warning(yolo, caplog, label,
                                                                                      expected):
    labels = yolo / "labels" / "train" / "a.txt"
    labels.write_bytes(label)
    with pytest.raises(YoloFormatError, match=f"{labels}{expected}"):
        open_yolo(yolo, "fail")
    skipped = open_yolo(yolo, "skip")
    assert any(f"{labels}{expected}" in reason for _, reason in skipped.skipped)
    assert f"{labels}{expected}" in caplog.text


def test_a_nan_label_never_reaches_training(yolo):
    (yolo / "labels" / "train" / "a.txt").write_text("0 0.5 0.5 0.2 0.2\n1 0.5 nan 0.2 0.2\n")
    boxes, classes = open_yolo(yolo, "skip").annotations(0)
    assert classes.tolist() == [0] and boxes.shape == (1, 4)


def png_header_claiming(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height pixels and carries none: PIL refuses to open it as a
    decompression bomb above twice its MAX_IMAGE_PIXELS."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


def test_an_image_claiming_400_megapixels_is_skipped_with_a_warning_naming_it(yolo, caplog):
    bomb = yolo / "images" / "train" / "b.png"
    bomb.write_bytes(png_header_claiming(20_000, 20_000))
    data = open_yolo(yolo, "skip")
    assert len(data) == 1 and [p for p, _ in data.skipped] == [bomb]
    assert f"{bomb} cannot be opened as an image" in caplog.text and "decompression bomb" in caplog.text


@pytest.mark.parametrize("text, expected", [
    ("train: images/train\nval: images/train\nnames: {0: a, '1': b}\n", "names must map 0..1 to class names"),
    ("train: images/train\nval: images/train\nnames: {0: a, b: c}\n", "names must map 0..1 to class names"),
    ("train: images/train\nval: images/train\nnames: [a, null]\n", "names[1] is None"),
    ("train: images/train\nval: images/train\nnames: [a]\npath: [x]\n", "path must be a directory"),
    ("[" * DEEP, "nested too deeply"),
], ids=["names-int-and-str-keys", "names-str-key", "name-null", "path-list", "nested-100000-deep"])
def test_a_bad_data_yaml_is_refused_naming_the_file(yolo, text, expected):
    (yolo / "data.yaml").write_text(text)
    with pytest.raises(YoloFormatError) as refused:
        read_data_yaml(yolo / "data.yaml")
    assert str(yolo / "data.yaml") in str(refused.value) and expected in str(refused.value)


def test_a_data_yaml_that_is_not_utf8_is_refused_naming_the_file(yolo):
    (yolo / "data.yaml").write_bytes(b"train: images/\xff\nval: images/train\nnames: [a]\n")
    with pytest.raises(YoloFormatError, match="is not valid YAML"):
        read_data_yaml(yolo / "data.yaml")
