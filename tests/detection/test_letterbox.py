from __future__ import annotations

import numpy as np
import pytest

from detection.letterbox import PAD_VALUE, boxes_to_original, letterbox, resize_long_side, to_input


def _image_with_rectangle(height: int, width: int, box: tuple[int, int, int, int]) -> np.ndarray:
    """Black image with a white filled rectangle covering pixels [x1, x2) x [y1, y2)."""
    image = np.zeros((height, width, 3), dtype=np.uint8)
    x1, y1, x2, y2 = box
    image[y1:y2, x1:x2] = 255
    return image


def _white_extent(image: np.ndarray) -> np.ndarray:
    """xyxy box (pixel edges) around the pixels that are mostly white."""
    ys, xs = np.nonzero(image[..., 0] > 184)  # above the 114 pad and halfway between black and white
    return np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], dtype=np.float32)


def test_letterbox_matches_yolov5_numbers_for_landscape_image():
    image = np.zeros((480, 640, 3), dtype=np.uint8)
    padded, scale, pad = letterbox(image, 320)
    assert padded.shape == (320, 320, 3) and padded.dtype == np.uint8
    assert scale == 0.5
    assert pad == (0.0, 40.0)
    assert (padded[:40] == PAD_VALUE).all() and (padded[280:] == PAD_VALUE).all()
    assert (padded[40:280] == 0).all()


def test_letterbox_odd_padding_is_split_like_yolov5():
    # 33 * 64/100 = 21.12 -> 21 columns of content, 43 of padding: YOLOv5 puts round(21.5 - 0.1) = 21 on the
    # left and 22 on the right, and reports the unrounded pad 21.5.
    image = np.zeros((100, 33, 3), dtype=np.uint8)
    padded, scale, pad = letterbox(image, 64, pad_value=7)
    assert scale == pytest.approx(0.64)
    assert pad == (21.5, 0.0)
    content_columns = np.flatnonzero((padded[..., 0] == 0).all(axis=0))
    assert content_columns.tolist() == list(range(21, 42))
    assert (padded[:, :21] == 7).all() and (padded[:, 42:] == 7).all()


def test_letterbox_upscales_small_images_so_the_long_side_fills_the_input():
    padded, scale, pad = letterbox(np.full((10, 20, 3), 50, dtype=np.uint8), 64)
    assert scale == 3.2 and pad == (0.0, 16.0)
    assert (padded[16:48] == 50).all()


def test_letterbox_of_image_already_at_size_keeps_pixels():
    image = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    padded, scale, pad = letterbox(image, 64)
    assert scale == 1.0 and pad == (0.0, 0.0)
    np.testing.assert_array_equal(padded, image)


def test_letterbox_of_resized_image_equals_letterbox_of_original():
    image = np.random.default_rng(1).integers(0, 256, (75, 130, 3), dtype=np.uint8)
    resized, scale = resize_long_side(image, 96)
    assert max(resized.shape[:2]) == 96
    padded_original, scale_original, pad_original = letterbox(image, 96)
    padded_resized, _, pad_resized = letterbox(resized, 96)
    assert scale == scale_original and pad_resized == pad_original
    np.testing.assert_array_equal(padded_resized, padded_original)


@pytest.mark.parametrize("shape_hw, box, size", [
    ((480, 640), (100, 50, 300, 400), 320),  # downscale, pad top/bottom
    ((100, 33), (5, 10, 25, 90), 64),  # odd padding, half a pixel off
    ((37, 90), (3, 4, 80, 30), 128),  # upscale
])
def test_letterbox_round_trip_maps_boxes_back_within_one_pixel(shape_hw, box, size):
    image = _image_with_rectangle(*shape_hw, box)
    padded, scale, pad = letterbox(image, size)
    x1, y1, x2, y2 = box
    forward = np.array([x1 * scale + pad[0], y1 * scale + pad[1], x2 * scale + pad[0], y2 * scale + pad[1]],
                       dtype=np.float32)
    found = _white_extent(padded)  # where the rectangle's pixels actually ended up
    np.testing.assert_allclose(found, forward, atol=1.0)  # the pixels and the box mapping agree
    np.testing.assert_allclose(boxes_to_original(forward[None], scale, pad, shape_hw)[0], box, atol=1e-3)
    # from the pixels back: one letterboxed pixel is 1 / scale original pixels
    back = boxes_to_original(found[None], scale, pad, shape_hw)[0]
    np.testing.assert_allclose(back, box, atol=max(1.0, 1.0 / scale))


def test_boxes_to_original_clips_to_the_image():
    boxes = np.array([[-10.0, 30.0, 90.0, 70.0], [60.0, 80.0, 200.0, 128.0]], dtype=np.float32)
    back = boxes_to_original(boxes, 0.5, (0.0, 32.0), (128, 100))
    np.testing.assert_allclose(back, [[0, 0, 100, 76], [100, 96, 100, 128]])
    assert back.dtype == np.float32


def test_boxes_to_original_rejects_wrong_shape():
    with pytest.raises(ValueError, match=r"\(N, 4\)"):
        boxes_to_original(np.zeros((3, 5)), 1.0, (0, 0), (10, 10))


def test_to_input_makes_contiguous_float_batch_in_unit_range():
    image = np.random.default_rng(2).integers(0, 256, (8, 6, 3), dtype=np.uint8)
    single = to_input(image)
    assert single.shape == (1, 3, 8, 6) and single.dtype == np.float32 and single.flags.c_contiguous
    np.testing.assert_allclose(single[0, 1], image[..., 1] / 255.0, atol=1e-7)
    batch = to_input(np.stack([image, image[::-1]]))
    assert batch.shape == (2, 3, 8, 6)
    np.testing.assert_array_equal(batch[0], single[0])
    assert 0.0 <= batch.min() and batch.max() <= 1.0


def test_to_input_rejects_float_images():
    with pytest.raises(ValueError, match="uint8"):
        to_input(np.zeros((4, 4, 3), dtype=np.float32))


def test_letterbox_rejects_non_rgb_input():
    with pytest.raises(ValueError, match=r"\(H, W, 3\) uint8"):
        letterbox(np.zeros((4, 4), dtype=np.uint8), 32)
