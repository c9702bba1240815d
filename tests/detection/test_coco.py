from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools.cocoeval import COCOeval

from detection.coco import CocoDataset, DatasetError, SplitSpec

# COCO 2017's 80 category ids: 1..90 with gaps
COCO_CATEGORY_IDS = [*range(1, 12), *range(13, 26), 27, 28, *range(31, 45), *range(46, 66), 67, 70,
                     *range(72, 83), *range(84, 91)]


def _write_split(root: Path, images: list[dict], annotations: list[dict], categories: list[dict] | None = None,
                 write_pixels: bool = True) -> tuple[Path, Path]:
    """Write a COCO json and one grey PNG per image entry; returns (images dir, annotations path)."""
    image_dir = root / "images"
    image_dir.mkdir(parents=True, exist_ok=True)
    if write_pixels:
        for image in images:
            Image.new("RGB", (image["width"], image["height"]), (90, 90, 90)).save(image_dir / image["file_name"])
    categories = categories if categories is not None else [{"id": 1, "name": "thing"}, {"id": 3, "name": "other"}]
    ann_path = root / "instances.json"
    ann_path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": categories}))
    return image_dir, ann_path


def _images(n: int, width: int = 32, height: int = 24) -> list[dict]:
    return [{"id": 100 + k, "file_name": f"img{k:03d}.png", "width": width, "height": height} for k in range(n)]


def _ann(ann_id: int, image_id: int, bbox: list[float], category_id: int = 1, **extra) -> dict:
    return {"id": ann_id, "image_id": image_id, "category_id": category_id, "bbox": bbox, **extra}


def _load(root: Path, images, annotations, categories=None, **spec_kwargs) -> CocoDataset:
    image_dir, ann_path = _write_split(root, images, annotations, categories)
    return CocoDataset(SplitSpec(images=image_dir, annotations=ann_path, **spec_kwargs))


def test_category_ids_with_gaps_round_trip_to_contiguous_indices(tmp_path):
    categories = [{"id": c, "name": f"cat{c}"} for c in reversed(COCO_CATEGORY_IDS)]  # file order is irrelevant
    images = _images(1)
    anns = [_ann(1, 100, [1, 1, 5, 5], category_id=90), _ann(2, 100, [2, 2, 5, 5], category_id=13)]
    data = _load(tmp_path, images, anns, categories)
    assert data.num_classes == 80 and data.category_ids == COCO_CATEGORY_IDS
    assert data.class_names[0] == "cat1" and data.class_names[79] == "cat90"
    for k in range(80):
        assert data.class_index(data.category_id(k)) == k
    assert data.class_index(90) == 79 and data.class_index(13) == 11
    _, classes = data.annotations(0)
    assert classes.tolist() == [79, 11] and classes.dtype == np.int64
    with pytest.raises(DatasetError, match="category id 12"):
        data.class_index(12)
    with pytest.raises(DatasetError, match="class index 80"):
        data.category_id(80)


def test_annotations_are_xyxy_pixels_and_crowd_boxes_are_excluded(tmp_path):
    anns = [_ann(1, 100, [2, 3, 10, 5]), _ann(2, 100, [0, 0, 20, 20], iscrowd=1),
            _ann(3, 100, [4, 4, 8, 8], category_id=3, iscrowd=0)]
    data = _load(tmp_path, _images(1), anns)
    boxes, classes = data.annotations(0)
    np.testing.assert_array_equal(boxes, [[2, 3, 12, 8], [4, 4, 12, 12]])
    assert boxes.dtype == np.float32 and classes.tolist() == [0, 1]
    assert {a["id"] for a in data.coco.loadAnns(data.coco.getAnnIds())} == {1, 2, 3}  # COCOeval still sees the crowd


def test_images_without_annotations_are_valid_negatives(tmp_path):
    data = _load(tmp_path, _images(2), [_ann(1, 101, [1, 1, 4, 4])])
    assert len(data) == 2
    boxes, classes = data.annotations(0)
    assert boxes.shape == (0, 4) and classes.shape == (0,)
    assert boxes.dtype == np.float32 and classes.dtype == np.int64


@pytest.mark.parametrize("mode, expected", [
    ("L", (77, 77, 77)),
    ("RGBA", (10, 20, 30)),
    ("P", (200, 100, 50)),
    ("P+transparency", (200, 100, 50)),
    ("I;16", (1000 // 257,) * 3),
])
def test_non_rgb_png_modes_load_as_rgb(tmp_path, mode, expected):
    images = _images(1, width=7, height=5)
    image_dir, ann_path = _write_split(tmp_path, images, [], write_pixels=False)
    if mode == "L":
        pixels = Image.new("L", (7, 5), 77)
    elif mode == "RGBA":
        pixels = Image.new("RGBA", (7, 5), (10, 20, 30, 128))
    elif mode.startswith("P"):
        pixels = Image.new("P", (7, 5), 3)
        pixels.putpalette([0, 0, 0] * 3 + [200, 100, 50] + [0, 0, 0] * 252)
        if mode == "P+transparency":
            pixels.info["transparency"] = 0
    else:
        pixels = Image.fromarray(np.full((5, 7), 1000, dtype=np.uint16))
    pixels.save(image_dir / images[0]["file_name"])
    with Image.open(image_dir / images[0]["file_name"]) as reopened:
        assert reopened.mode == mode.split("+")[0]  # the file really is in that mode
        assert ("transparency" in reopened.info) == mode.endswith("transparency")
    loaded = CocoDataset(SplitSpec(images=image_dir, annotations=ann_path)).load_image(0)
    assert loaded.shape == (5, 7, 3) and loaded.dtype == np.uint8
    assert (loaded == np.array(expected, dtype=np.uint8)).all()


def test_cmyk_image_loads_as_rgb(tmp_path):
    images = [{"id": 1, "file_name": "cmyk.tif", "width": 6, "height": 4}]
    image_dir, ann_path = _write_split(tmp_path, images, [], write_pixels=False)
    Image.new("CMYK", (6, 4), (0, 255, 255, 0)).save(image_dir / "cmyk.tif")
    loaded = CocoDataset(SplitSpec(images=image_dir, annotations=ann_path)).load_image(0)
    assert loaded.shape == (4, 6, 3)
    assert (loaded == np.array([255, 0, 0], dtype=np.uint8)).all()


def test_load_image_returns_the_stored_pixels(tmp_path):
    images = _images(1, width=9, height=6)
    image_dir, ann_path = _write_split(tmp_path, images, [], write_pixels=False)
    pixels = np.random.default_rng(0).integers(0, 256, (6, 9, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(image_dir / images[0]["file_name"])
    data = CocoDataset(SplitSpec(images=image_dir, annotations=ann_path))
    np.testing.assert_array_equal(data.load_image(0), pixels)
    assert data.image_size(0) == (6, 9) and data.image_path(0) == image_dir / "img000.png"


_GOOD_IMAGES = _images(1)


@pytest.mark.parametrize("content, message", [
    ("{not json", "not valid JSON"),
    (json.dumps([1, 2]), "not a COCO file"),
    (json.dumps({"images": _GOOD_IMAGES, "annotations": []}), "missing top-level key.*categories"),
    (json.dumps({"images": [{"id": 1, "file_name": "a.png", "width": 4}], "annotations": [], "categories": []}),
     r"images\[0\].*missing key.*height"),
    (json.dumps({"images": _GOOD_IMAGES, "annotations": [{"id": 5, "image_id": 100, "category_id": 1}],
                 "categories": [{"id": 1, "name": "a"}]}), "missing key.*bbox"),
    (json.dumps({"images": _GOOD_IMAGES, "annotations": [_ann(5, 100, [1, 2, 3])],
                 "categories": [{"id": 1, "name": "a"}]}), "annotation id 5 has bbox"),
    (json.dumps({"images": _GOOD_IMAGES, "annotations": [_ann(5, 100, [1, 1, 3, 3]), _ann(6, 100, [20, 1, 30, 3])],
                 "categories": [{"id": 1, "name": "a"}]}), "1 box.*outside.*annotation id 6"),
    (json.dumps({"images": _GOOD_IMAGES, "annotations": [_ann(7, 100, [5, 5, -2, 3]), _ann(8, 100, [5, 5, 2, -1])],
                 "categories": [{"id": 1, "name": "a"}]}), "2 box.*negative width or height.*annotation id 7"),
    (json.dumps({"images": _GOOD_IMAGES, "annotations": [_ann(9, 100, [1, 1, 3, 3], category_id=4)],
                 "categories": [{"id": 1, "name": "a"}]}), "category_id.*annotation id 9.*category_id 4"),
    (json.dumps({"images": _GOOD_IMAGES, "annotations": [_ann(9, 55, [1, 1, 3, 3])],
                 "categories": [{"id": 1, "name": "a"}]}), "image_id.*annotation id 9 with image_id 55"),
    (json.dumps({"images": _GOOD_IMAGES * 2, "annotations": [], "categories": []}), "id 100 more than once"),
])
def test_malformed_annotation_file_raises_dataset_error_naming_the_file(tmp_path, content, message):
    image_dir, _ = _write_split(tmp_path, _GOOD_IMAGES, [])
    bad = tmp_path / "bad_instances.json"
    bad.write_text(content)
    with pytest.raises(DatasetError, match=message) as excinfo:
        CocoDataset(SplitSpec(images=image_dir, annotations=bad))
    assert str(bad) in str(excinfo.value)


def test_missing_annotation_file_is_named(tmp_path):
    missing = tmp_path / "nope.json"
    with pytest.raises(DatasetError, match="does not exist") as excinfo:
        CocoDataset(SplitSpec(images=tmp_path, annotations=missing))
    assert str(missing) in str(excinfo.value)


def test_missing_image_directory_is_named(tmp_path):
    _, ann_path = _write_split(tmp_path, _images(1), [])
    missing = tmp_path / "val2017"
    with pytest.raises(DatasetError, match="images directory") as excinfo:
        CocoDataset(SplitSpec(images=missing, annotations=ann_path))
    assert str(missing) in str(excinfo.value)


def test_box_overshooting_by_rounding_is_clipped(tmp_path):
    data = _load(tmp_path, _images(1), [_ann(1, 100, [-0.4, 20.0, 32.9, 4.5])])  # image is 32 x 24
    boxes, _ = data.annotations(0)
    np.testing.assert_allclose(boxes, [[0.0, 20.0, 32.0, 24.0]])


def test_zero_height_box_is_reported_and_left_out_of_targets(tmp_path, caplog):
    # COCO train2017 has two such boxes; the split must still load
    anns = [_ann(918, 100, [5.0, 6.0, 1.03, 0.0]), _ann(2, 100, [1, 1, 4, 4])]
    with caplog.at_level(logging.WARNING, logger="detection.coco"):
        data = _load(tmp_path, _images(1), anns)
    assert "1 box(es) have zero width or height" in caplog.text and "918" in caplog.text
    boxes, _ = data.annotations(0)
    np.testing.assert_array_equal(boxes, [[1, 1, 5, 5]])


def test_corrupt_image_is_skipped_and_counted_in_skip_mode(tmp_path, caplog):
    images = _images(3)
    image_dir, ann_path = _write_split(tmp_path, images, [_ann(1, 101, [1, 1, 4, 4])])
    (image_dir / "img001.png").write_bytes(b"this is not a png")
    (image_dir / "img002.png").unlink()
    with caplog.at_level(logging.WARNING, logger="detection.coco"):
        data = CocoDataset(SplitSpec(images=image_dir, annotations=ann_path, bad_images="skip"))
    assert data.image_ids == [100]
    assert [path.name for path, _ in data.skipped] == ["img001.png", "img002.png"]
    assert "cannot be opened" in data.skipped[0][1] and "not found" in data.skipped[1][1]
    assert "skipped 2 unreadable image(s)" in caplog.text
    assert data.coco.getImgIds() == [100] and data.coco.getAnnIds() == []  # ground truth follows the skip


def test_corrupt_image_raises_in_fail_mode(tmp_path):
    image_dir, ann_path = _write_split(tmp_path, _images(2), [])
    (image_dir / "img001.png").write_bytes(b"\x89PNG garbage")
    with pytest.raises(DatasetError, match="img001.png.*cannot be opened"):
        CocoDataset(SplitSpec(images=image_dir, annotations=ann_path, bad_images="fail"))


def test_image_whose_size_differs_from_the_annotations_is_skipped(tmp_path):
    images = _images(2)
    image_dir, ann_path = _write_split(tmp_path, images, [])
    Image.new("RGB", (24, 32)).save(image_dir / "img000.png")  # rotated relative to the json's 32 x 24
    data = CocoDataset(SplitSpec(images=image_dir, annotations=ann_path))
    assert data.image_ids == [101] and "24x32" in data.skipped[0][1]


def test_every_image_unreadable_raises(tmp_path):
    image_dir, ann_path = _write_split(tmp_path, _images(2), [], write_pixels=False)
    with pytest.raises(DatasetError, match="no readable images") as excinfo:
        CocoDataset(SplitSpec(images=image_dir, annotations=ann_path))
    assert str(ann_path) in str(excinfo.value)


def test_image_that_fails_to_decode_raises_dataset_error_naming_it(tmp_path):
    images = _images(1, width=64, height=64)
    image_dir, ann_path = _write_split(tmp_path, images, [], write_pixels=False)
    path = image_dir / images[0]["file_name"]
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(path)
    path.write_bytes(path.read_bytes()[:200])  # header intact, pixel data cut short
    data = CocoDataset(SplitSpec(images=image_dir, annotations=ann_path))  # the header check passes
    with pytest.raises(DatasetError, match="cannot be decoded") as excinfo:
        data.load_image(0)
    assert str(path) in str(excinfo.value)


def test_seeded_subsets_are_reproducible_sorted_and_differ_by_seed(tmp_path):
    images = _images(30)
    anns = [_ann(k, image["id"], [1, 1, 4, 4]) for k, image in enumerate(images)]
    image_dir, ann_path = _write_split(tmp_path, images, anns)

    def subset(seed: int) -> CocoDataset:
        return CocoDataset(SplitSpec(images=image_dir, annotations=ann_path, subset=10, seed=seed))

    first, again, other = subset(0), subset(0), subset(1)
    assert len(first) == 10 and first.image_ids == again.image_ids == sorted(first.image_ids)
    assert other.image_ids != first.image_ids
    assert first.coco.getImgIds() == first.image_ids  # COCOeval's default image set is the subset
    assert sorted(a["image_id"] for a in first.coco.dataset["annotations"]) == first.image_ids
    with pytest.raises(DatasetError, match="subset of 31 images.*only 30"):
        CocoDataset(SplitSpec(images=image_dir, annotations=ann_path, subset=31))


def test_subset_keeps_its_size_when_a_chosen_image_is_unreadable(tmp_path):
    image_dir, ann_path = _write_split(tmp_path, _images(12), [])
    full = CocoDataset(SplitSpec(images=image_dir, annotations=ann_path, subset=5, seed=3))
    victim = full.image_path(0)
    victim.write_bytes(b"broken")
    data = CocoDataset(SplitSpec(images=image_dir, annotations=ann_path, subset=5, seed=3))
    assert len(data) == 5 and data.skipped == [(victim, data.skipped[0][1])]
    assert set(full.image_ids) - set(data.image_ids) == {full.image_ids[0]}


def test_ground_truth_scores_perfect_detections_as_ap_one(tmp_path):
    # no iscrowd/area in the file: they are filled in, because COCOeval needs them
    anns = [_ann(1, 100, [2, 2, 12, 10]), _ann(2, 101, [10, 5, 15, 15], category_id=3),
            _ann(3, 101, [1, 1, 6, 6])]
    data = _load(tmp_path, _images(3), anns)
    detections = [{"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"], "score": 0.9}
                  for a in anns]
    evaluator = COCOeval(data.coco, data.coco.loadRes(detections), "bbox")
    evaluator.evaluate()
    evaluator.accumulate()
    precision = evaluator.eval["precision"][:, :, :, 0, -1]  # every IoU threshold, all areas, 100 detections
    np.testing.assert_allclose(precision, 1.0, atol=1e-6)  # -1 would mark a category without ground truth


def test_split_spec_rejects_bad_options(tmp_path):
    with pytest.raises(ValueError, match="bad_images"):
        SplitSpec(images=tmp_path, annotations=tmp_path / "a.json", bad_images="ignore")
    with pytest.raises(ValueError, match="subset"):
        SplitSpec(images=tmp_path, annotations=tmp_path / "a.json", subset=0)
