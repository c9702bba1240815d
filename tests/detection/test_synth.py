"""The generated data set: COCO validity, determinism, difficulty mix and exact boxes."""
from __future__ import annotations

import contextlib
import hashlib
import io
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from detection.synth import CATEGORIES, SynthConfig, generate, render_image

TRAIN, VAL = 20, 6


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth")
    generate(out, train=TRAIN, val=VAL, seed=0)
    return out


def _quiet_coco(path: Path) -> COCO:
    with contextlib.redirect_stdout(io.StringIO()):
        return COCO(str(path))


def _file_hashes(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _all_annotations(dataset: Path) -> list[dict]:
    return [a for split in ("train", "val")
            for a in json.loads((dataset / f"instances_{split}.json").read_text())["annotations"]]


def test_pycocotools_loads_both_splits_and_every_box_lies_inside_its_image(dataset):
    for split, count in (("train", TRAIN), ("val", VAL)):
        coco = _quiet_coco(dataset / f"instances_{split}.json")
        assert len(coco.getImgIds()) == count
        assert coco.dataset["info"]["synthetic"] is True
        assert coco.dataset["info"]["config"]["size"] == 128
        for ann in coco.loadAnns(coco.getAnnIds()):
            image = coco.imgs[ann["image_id"]]
            x, y, w, h = ann["bbox"]
            assert w > 0 and h > 0
            assert x >= 0 and y >= 0
            assert x + w <= image["width"] and y + h <= image["height"]
            assert ann["category_id"] in coco.cats
            assert ann["iscrowd"] == 0
            assert ann["area"] == pytest.approx(w * h)


def test_ground_truth_submitted_as_detections_scores_perfect_map(dataset):
    coco = _quiet_coco(dataset / "instances_train.json")
    detections = [{"image_id": a["image_id"], "category_id": a["category_id"],
                   "bbox": a["bbox"], "score": 1.0} for a in coco.loadAnns(coco.getAnnIds())]
    with contextlib.redirect_stdout(io.StringIO()):
        evaluator = COCOeval(coco, coco.loadRes(detections), "bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    assert evaluator.stats[0] == pytest.approx(1.0)  # mAP@.5:.95


def test_same_seed_gives_identical_bytes_and_another_seed_different_ones(tmp_path):
    first, again, other = tmp_path / "first", tmp_path / "again", tmp_path / "other"
    generate(first, train=5, val=2, seed=3)
    generate(again, train=5, val=2, seed=3)
    generate(other, train=5, val=2, seed=4)
    first_hashes = _file_hashes(first)
    assert len(first_hashes) == 5 + 2 + 2
    assert _file_hashes(again) == first_hashes
    other_hashes = _file_hashes(other)
    assert other_hashes.keys() == first_hashes.keys()
    assert all(other_hashes[name] != digest for name, digest in first_hashes.items())


def test_each_image_depends_only_on_seed_split_and_index(dataset):
    """What makes generation parallelisable: image 4 rendered alone equals image 4 of the run."""
    alone = render_image(seed=0, split="train", index=3)
    written = np.asarray(Image.open(dataset / "train" / "000004.png"))
    np.testing.assert_array_equal(alone.pixels, written)
    val_twin = render_image(seed=0, split="val", index=3)
    assert not np.array_equal(alone.pixels, val_twin.pixels)


def test_categories_are_many_non_contiguous_and_need_both_shape_and_colour(dataset):
    categories = json.loads((dataset / "instances_val.json").read_text())["categories"]
    ids = [c["id"] for c in categories]
    assert len(ids) >= 8
    assert ids != list(range(1, len(ids) + 1))
    assert len({c["name"] for c in categories}) == len(categories)
    shape_uses = Counter(c.shape for c in CATEGORIES)
    colour_uses = Counter(c.colour for c in CATEGORIES)
    assert min(shape_uses.values()) >= 2 and min(colour_uses.values()) >= 2
    used_ids = {a["category_id"] for a in _all_annotations(dataset)}
    assert used_ids <= set(ids) and len(used_ids) >= 8


def test_object_sizes_span_small_to_large(dataset):
    sides = [max(a["bbox"][2], a["bbox"][3]) for a in _all_annotations(dataset)]
    assert min(sides) <= 12
    assert max(sides) >= 128 / 3


def test_object_counts_vary_from_none_to_several(dataset):
    per_image = [len(a) for a in (
        _quiet_coco(dataset / "instances_train.json").imgToAnns[i] for i in range(1, TRAIN + 1))]
    assert 0 in per_image
    assert max(per_image) >= 5
    assert 3 <= np.mean(per_image) <= 8


def test_images_are_rgb_pngs_of_the_configured_size(dataset, tmp_path):
    small = tmp_path / "small"
    generate(small, train=2, val=1, seed=0, config=SynthConfig(size=64))
    for root, size in ((dataset, 128), (small, 64)):
        pngs = sorted(root.rglob("*.png"))
        assert pngs
        for path in pngs:
            with Image.open(path) as image:
                assert (image.format, image.mode, image.size) == ("PNG", "RGB", (size, size))
        images = json.loads((root / "instances_train.json").read_text())["images"]
        assert {(i["width"], i["height"]) for i in images} == {(size, size)}
        assert all((root / "train" / i["file_name"]).is_file() for i in images)


def test_box_encloses_exactly_the_drawn_pixels():
    """On a grey, noise-free background every coloured pixel belongs to the one object (even one
    sub-pixel of coverage tints a pixel), so the box rounded out to whole pixels must equal the
    bounds of the coloured pixels."""
    clean = SynthConfig(max_objects=1, empty_image_fraction=0.0, max_distractors=0, max_lines=0,
                        background_max_saturation=0.0, stripe_probability=0.0,
                        max_texture_patches=0, illumination_variation=0.0, noise_sigma=0.0)
    for index in range(12):
        rendered = render_image(seed=5, split="train", index=index, config=clean)
        assert len(rendered.objects) == 1
        x, y, w, h = rendered.objects[0].bbox
        pixels = rendered.pixels.astype(int)
        coloured = (pixels.max(axis=2) - pixels.min(axis=2)) > 0
        rows, cols = np.flatnonzero(coloured.any(axis=1)), np.flatnonzero(coloured.any(axis=0))
        drawn = (cols[0], rows[0], cols[-1] + 1, rows[-1] + 1)
        assert drawn == (np.floor(x), np.floor(y), np.ceil(x + w), np.ceil(y + h))


def test_visibility_threshold_only_drops_annotations_of_occluded_objects():
    """Same pixels with or without the threshold; the threshold removes exactly the objects that
    are less visible than it, and the sample does contain such objects."""
    keep_all = SynthConfig(min_visible_fraction=0.0)
    default = SynthConfig()
    dropped = 0
    for index in range(30):
        everything = render_image(seed=2, split="val", index=index, config=keep_all)
        filtered = render_image(seed=2, split="val", index=index, config=default)
        np.testing.assert_array_equal(everything.pixels, filtered.pixels)
        expected = [o for o in everything.objects
                    if o.visible_fraction >= default.min_visible_fraction]
        assert list(filtered.objects) == expected
        dropped += len(everything.objects) - len(expected)
    assert dropped > 0


def test_progress_is_reported_after_every_image(tmp_path):
    calls: list[tuple[int, int]] = []
    generate(tmp_path, train=3, val=2, seed=0, progress=lambda done, total: calls.append((done, total)))
    assert calls == [(done, 5) for done in range(1, 6)]


def test_out_of_range_settings_are_rejected_naming_the_setting():
    with pytest.raises(ValueError, match="min_object_px"):
        SynthConfig(size=64, min_object_px=40.0)
    with pytest.raises(ValueError, match="min_visible_fraction"):
        SynthConfig(min_visible_fraction=1.5)
    with pytest.raises(ValueError, match="split"):
        render_image(seed=0, split="test", index=0)
    with pytest.raises(ValueError, match="train"):
        generate(Path("unused"), train=-1)
