from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from detection.coco import CocoDataset, DatasetError, SplitSpec
from detection.letterbox import letterbox, to_input
from trainables.augment import AugmentConfig, box_candidates, hflip, hsv_jitter, mosaic4, random_affine
from trainables.data import DetectionDataset, collate, make_loader

IMG_SIZE = 64
# one saturated colour per class, far apart so bilinear blending with the dark background never mixes them up
CLASS_COLOURS = np.array([(255, 40, 40), (40, 255, 40), (40, 40, 255)], dtype=np.uint8)
BACKGROUND = (20, 20, 20)
GEOMETRY_ONLY = AugmentConfig(hsv_h=0.0, hsv_s=0.0, hsv_v=0.0)  # colours stay recognisable


def _write_rectangles_split(root: Path, n_images: int = 6) -> CocoDataset:
    """Images of assorted shapes with non-overlapping filled rectangles whose boxes are exact pixel
    edges; rectangle b of image k has class (k + b) % 3 and that class's colour. Image 1 is a negative."""
    rng = np.random.default_rng(123)
    image_dir = root / "images"
    image_dir.mkdir(parents=True)
    images, annotations = [], []
    shapes = [(48, 80), (90, 60), (64, 64), (30, 100), (100, 40), (70, 70)]
    for k in range(n_images):
        height, width = shapes[k % len(shapes)]
        pixels = np.full((height, width, 3), BACKGROUND, dtype=np.uint8)
        n_boxes = 0 if k == 1 else 1 + k % 3
        for b in range(n_boxes):  # rectangle b lives in horizontal band b, so none overlap
            band_top, band_height = b * height // n_boxes, height // n_boxes
            w, h = int(rng.integers(8, width // 2)), int(rng.integers(6, band_height))
            x, y = int(rng.integers(0, width - w)), band_top + int(rng.integers(0, band_height - h + 1))
            cls = (k + b) % 3
            pixels[y:y + h, x:x + w] = CLASS_COLOURS[cls]
            annotations.append({"id": len(annotations) + 1, "image_id": k + 1, "category_id": cls + 1,
                                "bbox": [x, y, w, h], "area": w * h, "iscrowd": 0})
        Image.fromarray(pixels).save(image_dir / f"{k}.png")
        images.append({"id": k + 1, "file_name": f"{k}.png", "width": width, "height": height})
    categories = [{"id": c + 1, "name": f"class{c}"} for c in range(3)]
    ann_path = root / "instances.json"
    ann_path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": categories}))
    return CocoDataset(SplitSpec(images=image_dir, annotations=ann_path))


@pytest.fixture(scope="module")
def coco(tmp_path_factory) -> CocoDataset:
    return _write_rectangles_split(tmp_path_factory.mktemp("rectangles"))


def _colour_mask(image: np.ndarray, cls: int) -> np.ndarray:
    """Pixels that are clearly of the class's colour (the other channels stay far below)."""
    diff = np.abs(image.astype(np.int16) - CLASS_COLOURS[cls].astype(np.int16)).max(axis=2)
    return diff < 60


def _assert_boxes_fit_their_rectangles(image: np.ndarray, boxes: np.ndarray, classes: np.ndarray, *, atol: float,
                                       none_dropped: bool, isolated: bool = True) -> None:
    """Each box sits on the pixels of its class's colour: with `isolated` rectangles the coloured pixels
    around a box span the box within `atol` px; otherwise (a mosaic may put copies of a rectangle side
    by side) the box shrunk by `atol` is entirely of its colour. When no box was dropped by the
    augmentation, every pixel of a class's colour also lies inside a box of that class."""
    assert len(boxes) == len(classes)
    for (x1, y1, x2, y2), cls in zip(boxes, classes):
        mask = _colour_mask(image, cls)
        cx, cy = int((x1 + x2) / 2), int((y1 + y2) / 2)
        assert mask[min(cy, image.shape[0] - 1), min(cx, image.shape[1] - 1)], \
            f"box {(x1, y1, x2, y2)} of class {cls} is not centred on its colour"
        if isolated:
            top, left = max(int(np.floor(y1)) - 1, 0), max(int(np.floor(x1)) - 1, 0)
            ys, xs = np.nonzero(mask[top:int(np.ceil(y2)) + 1, left:int(np.ceil(x2)) + 1])
            extent = np.array([xs.min() + left, ys.min() + top, xs.max() + 1 + left, ys.max() + 1 + top])
            np.testing.assert_allclose(extent, [x1, y1, x2, y2], atol=atol,
                                       err_msg=f"class {cls}: pixels span {extent}, box is {(x1, y1, x2, y2)}")
        else:
            inner = mask[int(np.ceil(y1 + atol)):int(np.floor(y2 - atol)),
                         int(np.ceil(x1 + atol)):int(np.floor(x2 - atol))]
            assert inner.all(), f"box {(x1, y1, x2, y2)} of class {cls} covers pixels of another colour"
    if none_dropped:
        for cls in range(len(CLASS_COLOURS)):
            covered = np.zeros(image.shape[:2], dtype=bool)
            for x1, y1, x2, y2 in boxes[classes == cls]:
                covered[max(int(np.floor(y1)) - 1, 0):int(np.ceil(y2)) + 1,
                        max(int(np.floor(x1)) - 1, 0):int(np.ceil(x2)) + 1] = True
            stray = _colour_mask(image, cls) & ~covered
            assert not stray.any(), f"class {cls}: pixels {np.argwhere(stray)[:5].tolist()} lie outside its boxes"


# ---- augment.py -------------------------------------------------------------------------------------------

def test_augment_config_defaults_are_yolov5s_and_none_disables_everything():
    config = AugmentConfig()
    assert (config.hsv_h, config.hsv_s, config.hsv_v, config.scale, config.translate, config.fliplr) == \
        (0.015, 0.7, 0.4, 0.5, 0.1, 0.5)
    assert config.mosaic == 0.0 and config.enabled
    assert not AugmentConfig.none().enabled


@pytest.mark.parametrize("field, value", [("scale", 1.0), ("fliplr", 1.5), ("hsv_v", -0.1), ("mosaic", True),
                                          ("translate", float("nan"))])
def test_augment_config_rejects_values_outside_their_range(field, value):
    with pytest.raises(ValueError, match=f"augment.{field}"):
        replace(AugmentConfig(), **{field: value})


def test_hflip_mirrors_image_and_boxes_exactly():
    image = np.full((10, 16, 3), 0, dtype=np.uint8)
    image[2:6, 3:7] = 255  # box [3, 2, 7, 6]
    flipped, boxes = hflip(image, np.array([[3.0, 2.0, 7.0, 6.0]]))
    np.testing.assert_array_equal(boxes, [[9.0, 2.0, 13.0, 6.0]])
    ys, xs = np.nonzero(flipped[..., 0])
    assert (xs.min(), xs.max() + 1, ys.min(), ys.max() + 1) == (9, 13, 2, 6)
    twice, back = hflip(flipped, boxes)
    np.testing.assert_array_equal(twice, image)
    np.testing.assert_array_equal(back, [[3.0, 2.0, 7.0, 6.0]])


def test_hsv_jitter_leaves_grey_hue_and_saturation_alone_and_scales_value_by_the_drawn_gain():
    grey = np.full((4, 5, 3), 100, dtype=np.uint8)
    unchanged = hsv_jitter(grey, np.random.default_rng(0), hue=0.5, saturation=0.9, value=0.0)
    np.testing.assert_array_equal(unchanged, grey)
    gain = np.random.default_rng(7).uniform(-1, 1, 3)[2] * 0.4 + 1
    scaled = hsv_jitter(grey, np.random.default_rng(7), hue=0.0, saturation=0.0, value=0.4)
    assert (scaled == min(int(100 * gain), 255)).all()


def test_hsv_jitter_changes_colours_deterministically_and_keeps_shape():
    image = np.random.default_rng(1).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    first = hsv_jitter(image, np.random.default_rng(3), hue=0.015, saturation=0.7, value=0.4)
    second = hsv_jitter(image, np.random.default_rng(3), hue=0.015, saturation=0.7, value=0.4)
    other = hsv_jitter(image, np.random.default_rng(4), hue=0.015, saturation=0.7, value=0.4)
    assert first.shape == image.shape and first.dtype == np.uint8
    np.testing.assert_array_equal(first, second)
    assert not np.array_equal(first, image) and not np.array_equal(first, other)
    assert hsv_jitter(image, np.random.default_rng(3), hue=0, saturation=0, value=0) is image


def test_box_candidates_drop_tiny_shrunken_and_sliver_boxes():
    before = np.array([[0, 0, 10, 10], [0, 0, 10, 10], [0, 0, 10, 10], [0, 0, 300, 3]], dtype=np.float64)
    after = np.array([[0, 0, 10, 10], [0, 0, 2, 10], [0, 0, 3, 3], [0, 0, 300, 2.5]], dtype=np.float64)
    # kept; 2 px wide is not > 2; 9 % of its area is below 10 %; aspect ratio 120 >= 100
    assert box_candidates(before, after).tolist() == [True, False, False, False]


@pytest.mark.parametrize("seed", range(8))
def test_random_affine_keeps_boxes_on_their_rectangles(coco, seed):
    image = coco.load_image(2)  # 64 x 64: the affine warp is the only resampling
    boxes, classes = coco.annotations(2)
    out, moved, kept = random_affine(image, boxes, classes, np.random.default_rng(seed), scale=0.5, translate=0.1)
    assert out.shape == (64, 64, 3) and moved.dtype == np.float32 and kept.dtype == np.int64
    assert ((moved >= 0) & (moved <= 64)).all()
    _assert_boxes_fit_their_rectangles(out, moved, kept, atol=1.0, none_dropped=len(kept) == len(classes))


def test_random_affine_with_zero_ranges_is_the_identity():
    image = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    boxes = np.array([[3.0, 4.0, 20.0, 30.0]], dtype=np.float32)
    out, moved, kept = random_affine(image, boxes, np.array([2]), np.random.default_rng(0), scale=0.0, translate=0.0)
    np.testing.assert_array_equal(out, image)
    np.testing.assert_array_equal(moved, boxes)
    assert kept.tolist() == [2]


def test_mosaic4_places_tiles_and_their_boxes_together(coco):
    rng = np.random.default_rng(5)
    tiles = []
    for j in (0, 2, 3, 5):
        image = coco.load_image(j)
        boxes, classes = coco.annotations(j)
        tiles.append((image, boxes, classes))  # long sides are <= 100, the tile size
    canvas, boxes, classes = mosaic4(tiles, 100, rng)
    assert canvas.shape == (200, 200, 3)
    assert len(boxes) == sum(len(b) for _, b, _ in tiles) and ((boxes >= 0) & (boxes <= 200)).all()
    visible = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])  # a tile may be cropped at the canvas edge
    _assert_boxes_fit_their_rectangles(canvas, boxes[visible], classes[visible], atol=0.0, none_dropped=True)


# ---- data.py ----------------------------------------------------------------------------------------------

def test_unaugmented_item_is_the_letterboxed_image_with_normalised_targets(coco):
    dataset = DetectionDataset(coco, IMG_SIZE, None)
    for i in range(len(coco)):
        image, targets, index = dataset[i]
        padded, scale, (pad_x, pad_y) = letterbox(coco.load_image(i), IMG_SIZE)
        assert index == i and image.dtype == torch.float32 and image.shape == (3, IMG_SIZE, IMG_SIZE)
        np.testing.assert_array_equal(image.numpy(), to_input(padded)[0])
        boxes, classes = coco.annotations(i)
        x1, y1 = boxes[:, 0] * scale + pad_x, boxes[:, 1] * scale + pad_y
        x2, y2 = boxes[:, 2] * scale + pad_x, boxes[:, 3] * scale + pad_y
        expected = np.stack([classes, (x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1], axis=1) / \
            np.array([1, IMG_SIZE, IMG_SIZE, IMG_SIZE, IMG_SIZE])
        assert targets.shape == (len(boxes), 5) and targets.dtype == torch.float32
        np.testing.assert_allclose(targets.numpy(), expected, atol=1e-5)


def test_negative_image_yields_empty_targets(coco):
    _, targets, _ = DetectionDataset(coco, IMG_SIZE, AugmentConfig())[1]
    assert targets.shape == (0, 5)


def test_augment_none_config_is_identical_to_no_augmentation(coco):
    plain, off = DetectionDataset(coco, IMG_SIZE, None), DetectionDataset(coco, IMG_SIZE, AugmentConfig.none())
    for i in range(len(coco)):
        torch.testing.assert_close(plain[i], off[i], rtol=0, atol=0)


@pytest.mark.parametrize("augment", [GEOMETRY_ONLY, replace(GEOMETRY_ONLY, mosaic=1.0)], ids=["affine", "mosaic"])
def test_augmented_items_keep_boxes_on_their_rectangles(coco, augment):
    dataset = DetectionDataset(coco, IMG_SIZE, augment, seed=3)
    for epoch in range(3):
        dataset.set_epoch(epoch)
        for i in range(len(coco)):
            image, boxes, classes = dataset.load_item(i)
            assert image.shape == (IMG_SIZE, IMG_SIZE, 3)
            # two bilinear resamplings (letterbox, then the warp) blur edges by up to about 1.5 px
            single = augment.mosaic == 0
            _assert_boxes_fit_their_rectangles(image, boxes, classes, atol=2.0, isolated=single,
                                               none_dropped=single and len(boxes) == len(coco.annotations(i)[0]))


def test_items_are_deterministic_per_seed_epoch_and_index_and_change_with_the_epoch(coco):
    augment = replace(AugmentConfig(), mosaic=0.5)
    first = DetectionDataset(coco, IMG_SIZE, augment, seed=11)
    cached = DetectionDataset(coco, IMG_SIZE, augment, seed=11, cache_images=True)
    other_seed = DetectionDataset(coco, IMG_SIZE, augment, seed=12)
    cached.set_epoch(2)
    cached[4]  # history (other epochs, other items) must not matter
    for dataset in (first, cached, other_seed):
        dataset.set_epoch(1)
    reference = [first[i] for i in range(len(coco))]
    for i in reversed(range(len(coco))):
        torch.testing.assert_close(cached[i], reference[i], rtol=0, atol=0)
    assert any(not torch.equal(other_seed[i][0], reference[i][0]) for i in range(len(coco)))
    first.set_epoch(2)
    assert all(not torch.equal(first[i][0], reference[i][0]) for i in range(len(coco)))


def test_collate_prefixes_targets_with_their_batch_index():
    batch = [(torch.zeros(3, 4, 4), torch.tensor([[1.0, 0.5, 0.5, 0.2, 0.2]]), 7),
             (torch.ones(3, 4, 4), torch.zeros(0, 5), 2),
             (torch.ones(3, 4, 4), torch.tensor([[0.0, 0.1, 0.1, 0.1, 0.1], [2.0, 0.9, 0.9, 0.1, 0.1]]), 5)]
    images, targets, indices = collate(batch)
    assert images.shape == (3, 3, 4, 4) and indices == [7, 2, 5]
    assert targets.shape == (3, 6)
    assert targets[:, 0].tolist() == [0.0, 2.0, 2.0] and targets[:, 1].tolist() == [1.0, 0.0, 2.0]


def _epoch_batches(dataset: DetectionDataset, workers: int, epoch: int) -> list:
    loader = make_loader(dataset, batch_size=4, shuffle=True, workers=workers, seed=5, epoch=epoch)
    return list(loader)


def test_loader_gives_the_same_batches_for_zero_and_two_workers(coco):
    dataset = DetectionDataset(coco, IMG_SIZE, replace(AugmentConfig(), mosaic=0.5), seed=5)
    torch_state = torch.get_rng_state()
    in_process = _epoch_batches(dataset, 0, epoch=3)
    in_workers = _epoch_batches(dataset, 2, epoch=3)
    assert torch.equal(torch.get_rng_state(), torch_state)  # building and running loaders leaves torch's RNG alone
    assert len(in_process) == len(in_workers) == 2
    for (images_a, targets_a, indices_a), (images_b, targets_b, indices_b) in zip(in_process, in_workers):
        assert indices_a == indices_b
        assert torch.equal(images_a, images_b) and torch.equal(targets_a, targets_b)
    assert sorted(i for _, _, indices in in_process for i in indices) == list(range(len(coco)))


def test_shuffle_order_depends_only_on_seed_and_epoch(coco):
    dataset = DetectionDataset(coco, IMG_SIZE, None)

    def order(seed: int, epoch: int) -> list[int]:
        loader = make_loader(dataset, batch_size=6, shuffle=True, workers=0, seed=seed, epoch=epoch)
        return [i for _, _, indices in loader for i in indices]

    assert order(0, 1) == order(0, 1)
    assert len({tuple(order(0, e)) for e in range(4)}) > 1
    assert order(0, 1) != order(1, 1) or order(0, 2) != order(1, 2)
    unshuffled = make_loader(dataset, batch_size=6, shuffle=False, workers=0, seed=0)
    assert [i for _, _, indices in unshuffled for i in indices] == list(range(len(coco)))


def test_make_loader_sets_the_dataset_epoch(coco):
    dataset = DetectionDataset(coco, IMG_SIZE, AugmentConfig())
    make_loader(dataset, batch_size=2, shuffle=False, workers=0, seed=0, epoch=4)
    assert dataset.epoch == 4


def test_img_size_must_be_a_multiple_of_the_largest_stride(coco):
    with pytest.raises(ValueError, match="multiple of the largest stride 32"):
        DetectionDataset(coco, 100, None)


def test_undecodable_image_raises_dataset_error_naming_it(tmp_path):
    coco = _write_rectangles_split(tmp_path, n_images=2)
    path = coco.image_path(0)
    path.write_bytes(path.read_bytes()[:60])  # the header check at construction has already passed
    dataset = DetectionDataset(coco, IMG_SIZE, AugmentConfig())
    with pytest.raises(DatasetError, match="cannot be decoded") as excinfo:
        dataset[0]
    assert str(path) in str(excinfo.value)
