"""torch decode and NMS: a brute-force NMS reference, agreement with numpy, and ONNX export."""
from __future__ import annotations

import io

import numpy as np
import onnxruntime as ort
import pytest
import torch

from detection import postprocess as numpy_pp
from detection.anchors import STRIDES, anchor_array
from trainables.postprocess import decode, nms, postprocess


def random_clustered_boxes(seed: int, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Boxes crowded into a small area so that many overlap and suppression chains form."""
    gen = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=gen) * 120
    wh = 5 + torch.rand(n, 2, generator=gen) * 45
    return torch.cat((xy, xy + wh), dim=1), torch.rand(n, generator=gen)


def random_raw(seed: int, image_size: int, num_classes: int, batch: int = 2) -> list[np.ndarray]:
    """Head logits with objectness raised so that hundreds of candidates reach NMS."""
    rng = np.random.default_rng(seed)
    raw = [rng.normal(0, 2, (batch, 3, image_size // s, image_size // s, 5 + num_classes)).astype(np.float32)
           for s in STRIDES]
    for r in raw:
        r[..., 4] += 2
    return raw


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("iou_threshold", [0.3, 0.6])
@pytest.mark.parametrize("block", [7, 512])  # many blocks (kept boxes suppress later blocks) and one
def test_torch_nms_matches_bruteforce_reference(seed, iou_threshold, block, greedy_nms_reference):
    boxes, scores = random_clustered_boxes(seed, 300)
    expected = greedy_nms_reference(boxes.tolist(), scores.tolist(), iou_threshold)
    kept = nms(boxes, scores, iou_threshold, block=block)
    assert 1 < len(expected) < len(boxes)  # the case is non-trivial
    assert kept.tolist() == expected


def test_torch_nms_max_keep_returns_the_first_rows_of_a_full_run():
    boxes, scores = random_clustered_boxes(3, 300)
    full = nms(boxes, scores, 0.5, block=16)
    assert nms(boxes, scores, 0.5, max_keep=7, block=16).tolist() == full[:7].tolist()


def test_torch_nms_of_no_boxes_is_empty():
    assert nms(torch.zeros(0, 4), torch.zeros(0), 0.5).shape == (0,)


def test_torch_decode_matches_numpy_decode():
    raw = random_raw(0, 64, 3)
    expected = numpy_pp.decode(raw, anchor_array(), STRIDES)
    got = decode([torch.from_numpy(r) for r in raw], torch.from_numpy(anchor_array()), STRIDES)
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-6, atol=1e-4)


@pytest.mark.parametrize("multi_label", [True, False])
@pytest.mark.parametrize("seed", [0, 1])
def test_numpy_and_torch_decode_plus_postprocess_give_the_same_detections(seed, multi_label):
    raw = random_raw(seed, 64, 3)
    numpy_pred = numpy_pp.decode(raw, anchor_array(), STRIDES)
    torch_pred = decode([torch.from_numpy(r) for r in raw], torch.from_numpy(anchor_array()), STRIDES)
    kwargs = dict(conf_threshold=0.05, iou_threshold=0.5, max_det=100, multi_label=multi_label)
    torch_dets = postprocess(torch_pred, **kwargs)
    assert len(torch_dets) == 2
    for image, got in enumerate(torch_dets):
        expected = numpy_pp.postprocess(numpy_pred[image], **kwargs)
        assert 20 < len(expected) <= 100  # NMS had work to do and the comparison covers many boxes
        assert got.shape == expected.shape
        np.testing.assert_array_equal(got[:, 5].numpy(), expected[:, 5])
        np.testing.assert_allclose(got[:, :5].numpy(), expected[:, :5], rtol=1e-6, atol=1e-4)


def test_torch_postprocess_returns_empty_rows_for_an_image_without_candidates():
    pred = torch.zeros(2, 10, 7)
    pred[1, 0] = torch.tensor([50, 50, 20, 20, 0.9, 0.9, 0.1])
    out = postprocess(pred, conf_threshold=0.25)
    assert out[0].shape == (0, 6)
    torch.testing.assert_close(out[1], torch.tensor([[40.0, 40.0, 60.0, 60.0, 0.81, 0.0]]))


def test_torch_postprocess_rejects_a_single_image_with_the_shape_in_the_message():
    with pytest.raises(ValueError, match=r"\(B, N, 5\+C\).*\(10, 7\)"):
        postprocess(torch.zeros(10, 7))


class _DecodeOnly(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("anchors", torch.from_numpy(anchor_array()))

    def forward(self, p3: torch.Tensor, p4: torch.Tensor, p5: torch.Tensor) -> torch.Tensor:
        return decode([p3, p4, p5], self.anchors, STRIDES)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_torch_decode_exports_to_onnx_and_follows_a_new_image_size():
    """Grids come from shapes, so a graph exported at 64 px decodes 96 px inputs correctly."""
    names = ["p3", "p4", "p5"]
    example = tuple(torch.from_numpy(r) for r in random_raw(0, 64, 2, batch=1))
    buffer = io.BytesIO()
    torch.onnx.export(_DecodeOnly(), example, buffer, dynamo=False, input_names=names, output_names=["pred"],
                      dynamic_axes={n: {0: "batch", 2: f"h{i}", 3: f"w{i}"} for i, n in enumerate(names)})
    session = ort.InferenceSession(buffer.getvalue(), providers=["CPUExecutionProvider"])
    raw = random_raw(1, 96, 2, batch=2)
    got = session.run(None, dict(zip(names, raw)))[0]
    np.testing.assert_allclose(got, numpy_pp.decode(raw, anchor_array(), STRIDES), rtol=1e-6, atol=1e-4)


def test_a_one_class_model_scores_by_objectness_alone_in_numpy_torch_and_onnx():
    """With one class the loss never trains the class channel, so its number must not reach the score."""
    raw = random_raw(3, 64, 1, batch=1)
    numpy_pred = numpy_pp.decode(raw, anchor_array(), STRIDES)
    torch_pred = decode([torch.from_numpy(r) for r in raw], torch.from_numpy(anchor_array()), STRIDES)
    names = ["p3", "p4", "p5"]
    buffer = io.BytesIO()
    torch.onnx.export(_DecodeOnly(), tuple(torch.from_numpy(r) for r in raw), buffer, dynamo=False,
                      input_names=names, output_names=["pred"])
    onnx_pred = ort.InferenceSession(buffer.getvalue(), providers=["CPUExecutionProvider"]).run(
        None, dict(zip(names, raw)))[0]
    for pred in (numpy_pred, torch_pred.numpy(), onnx_pred):
        assert pred.shape[-1] == 6 and np.all(pred[..., 5] == 1.0)
    dets = numpy_pp.postprocess(numpy_pred[0], conf_threshold=0.05, iou_threshold=0.5)
    torch_dets = postprocess(torch_pred, conf_threshold=0.05, iou_threshold=0.5)[0].numpy()
    assert len(dets) > 20 and set(dets[:, 5]) == {0.0}
    kept_obj = numpy_pred[0][numpy_pred[0][:, 4] > 0.05][:, 4]
    assert set(np.round(dets[:, 4], 6)) <= set(np.round(kept_obj, 6))  # each score is an objectness
    np.testing.assert_allclose(torch_dets, dets, rtol=1e-6, atol=1e-4)
