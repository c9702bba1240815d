import torch

from trainables.loss import DetectionLoss, LossWeights, assign_targets, bbox_ciou


def _assigned_cells(asg):
    return sorted(zip(asg.anchor.tolist(), asg.gy.tolist(), asg.gx.tolist()))


def test_target_goes_to_own_cell_and_two_nearest_neighbours_for_matching_anchors():
    # One level, 4x4 grid. Box centre at grid (1.2, 2.4): nearest neighbours are left (x) and top (y).
    anchors = torch.tensor([[[1.0, 1.0], [2.0, 2.0], [8.0, 8.0]]])
    targets = torch.tensor([[0, 5, 1.2 / 4, 2.4 / 4, 1.5 / 4, 1.5 / 4]])
    (asg,) = assign_targets(targets, [(4, 4)], anchors, anchor_t=4.0)
    # anchor 2 (8x8) has a wh ratio of 5.3 > 4: not matched; anchors 0 and 1 are.
    expected = sorted((a, gy, gx) for a in (0, 1) for gy, gx in ((2, 1), (2, 0), (1, 1)))
    assert _assigned_cells(asg) == expected
    assert asg.cls.tolist() == [5] * 6
    # targets are expressed relative to each assigned cell's corner
    own = (asg.gy == 2) & (asg.gx == 1)
    assert torch.allclose(asg.box[own][0], torch.tensor([0.2, 0.4, 1.5, 1.5]), atol=1e-6)
    left = (asg.gy == 2) & (asg.gx == 0)
    assert torch.allclose(asg.box[left][0, :2], torch.tensor([1.2, 0.4]), atol=1e-6)


def test_target_in_right_half_of_cell_takes_right_and_bottom_neighbours():
    anchors = torch.tensor([[[1.0, 1.0], [1.0, 1.0], [1.0, 1.0]]])
    targets = torch.tensor([[1, 0, 1.7 / 4, 1.8 / 4, 1.0 / 4, 1.0 / 4]])
    (asg,) = assign_targets(targets, [(4, 4)], anchors)
    assert set(zip(asg.gy.tolist(), asg.gx.tolist())) == {(1, 1), (1, 2), (2, 1)}
    assert set(asg.image.tolist()) == {1}


def test_no_targets_gives_empty_assignment_and_objectness_only_loss():
    anchors = torch.tensor([[[10.0, 13], [16, 30], [33, 23]], [[30, 61], [62, 45], [59, 119]],
                            [[116, 90], [156, 198], [373, 326]]])
    raw = [torch.zeros(2, 3, s, s, 8) for s in (8, 4, 2)]
    loss = DetectionLoss(anchors, (8, 16, 32), 3, LossWeights())
    total, parts = loss(raw, torch.zeros((0, 6)))
    assert parts["box"] == 0 and parts["cls"] == 0 and parts["obj"] > 0
    assert torch.isfinite(total)


def test_ciou_is_one_for_identical_boxes_and_drops_with_shift():
    a = torch.tensor([[5.0, 5.0, 4.0, 4.0]])
    assert torch.allclose(bbox_ciou(a, a), torch.tensor([1.0]), atol=1e-5)
    shifted = a + torch.tensor([[1.0, 0.0, 0.0, 0.0]])
    assert bbox_ciou(a, shifted).item() < 0.6 + 1e-6


def test_loss_decreases_when_predictions_move_towards_targets():
    anchors = torch.tensor([[[1.0, 1.0], [2.0, 2.0], [3.0, 3.0]]]) * 8
    loss = DetectionLoss(anchors, (8,), 2, LossWeights())
    raw = torch.zeros(1, 3, 4, 4, 7, requires_grad=True)
    targets = torch.tensor([[0, 1, 0.4, 0.4, 0.3, 0.3]])
    opt = torch.optim.Adam([raw], lr=0.1)
    first = None
    for _ in range(50):
        total, _ = loss([raw], targets)
        first = first if first is not None else total.item()
        opt.zero_grad()
        total.backward()
        opt.step()
    assert total.item() < 0.5 * first
