"""ProbIoU twin, angle periodicity, rotated point-in-box, the task-aligned assigner, losses and NMS."""
from __future__ import annotations

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from cstf_edge.geometry.iou import probiou as probiou_numpy  # noqa: E402
from cstf_edge.model.assign import TaskAlignedAssigner  # noqa: E402
from cstf_edge.model.loss import DetectionLoss, Targets, saliency_targets  # noqa: E402
from cstf_edge.geometry.nms import class_aware_nms  # noqa: E402
from cstf_edge.model.predict import postprocess  # noqa: E402
from cstf_edge.model.rbox_torch import points_in_rboxes, probiou  # noqa: E402


def random_boxes(rng, n):
    return np.column_stack([rng.uniform(0, 60, n), rng.uniform(0, 60, n), rng.uniform(2, 40, n),
                            rng.uniform(2, 40, n), rng.uniform(-np.pi, np.pi, n)])


def test_probiou_twin_matches_numpy():
    rng = np.random.default_rng(0)
    a, b = random_boxes(rng, 300), random_boxes(rng, 300)
    b[:50] = a[:50] + rng.normal(0, 1, (50, 5))  # overlapping pairs too
    b[:50, 2:4] = np.abs(b[:50, 2:4]) + 1
    got = probiou(torch.from_numpy(a), torch.from_numpy(b)).numpy()
    np.testing.assert_allclose(got, probiou_numpy(a, b), rtol=1e-9, atol=1e-12)


def test_probiou_ignores_angle_symmetries():
    box = torch.tensor([30.0, 20.0, 40.0, 10.0, 0.3], dtype=torch.float64)
    turned = box.clone()
    turned[4] += math.pi
    swapped = torch.tensor([30.0, 20.0, 10.0, 40.0, 0.3 + math.pi / 2], dtype=torch.float64)
    square = torch.tensor([0.0, 0.0, 20.0, 20.0, 0.1], dtype=torch.float64)
    square_turned = square.clone()
    square_turned[4] += math.pi / 2
    same = probiou(box, box)
    assert probiou(box, turned) == pytest.approx(same.item(), abs=1e-9)
    assert probiou(box, swapped) == pytest.approx(same.item(), abs=1e-9)
    assert probiou(square, square_turned) == pytest.approx(same.item(), abs=1e-9)
    off = box.clone()
    off[4] += math.pi / 4
    assert probiou(box, off) < same - 0.2  # a real rotation does cost


def test_points_in_rotated_box():
    box = torch.tensor([[50.0, 50.0, 40.0, 10.0, math.pi / 4]])
    points = torch.tensor([[50.0, 50.0], [60.0, 60.0], [60.0, 40.0], [70.0, 70.0]])
    assert points_in_rboxes(points, box)[0].tolist() == [True, True, False, False]


def grid_anchors(size=64, strides=(8, 16, 32)):
    anchors, per_anchor = [], []
    for stride in strides:
        centres = (torch.arange(size // stride) + 0.5) * stride
        yy, xx = torch.meshgrid(centres, centres, indexing="ij")
        anchors.append(torch.stack([xx.flatten(), yy.flatten()], -1))
        per_anchor.append(torch.full((anchors[-1].shape[0], 1), float(stride)))
    return torch.cat(anchors), torch.cat(per_anchor)


def test_assigner_picks_anchors_inside_the_box_that_predict_it_well():
    anchors, strides = grid_anchors()
    gt = torch.tensor([[[28.0, 28.0, 40.0, 12.0, 0.0]]])
    boxes = torch.cat([anchors, torch.tensor([[8.0, 8.0, 0.0]]).expand(len(anchors), 3)], -1)[None]
    good = [int(i) for i in torch.nonzero(points_in_rboxes(anchors, gt[0])[0]).flatten()[:3]]
    boxes[0, good] = gt[0, 0]  # three anchors inside predict the box exactly
    scores = torch.full((1, len(anchors), 2), 0.1)
    result = TaskAlignedAssigner(topk=5)(scores, boxes, anchors, strides, gt, torch.tensor([[1]]),
                                          torch.tensor([[True]]))
    positives = torch.nonzero(result.fg_mask[0]).flatten().tolist()
    assert set(good) <= set(positives) and len(positives) <= 5
    assert points_in_rboxes(anchors[positives], gt[0])[0].all()
    assert result.scores[0, positives, 0].abs().max() == 0  # only the gt's class gets a target
    assert result.scores[0, good, 1].max().item() == pytest.approx(probiou(gt[0, 0], gt[0, 0]).item(), rel=1e-4)
    torch.testing.assert_close(result.boxes[0, positives], gt[0, 0].expand(len(positives), 5))


def test_assigner_gives_a_thin_box_its_centre_cells_and_ignores_padding():
    anchors, strides = grid_anchors()
    gt = torch.tensor([[[30.0, 30.0, 20.0, 2.0, 0.0], [0.0, 0.0, 0.0, 0.0, 0.0]]])
    boxes = torch.cat([anchors, torch.tensor([[8.0, 8.0, 0.0]]).expand(len(anchors), 3)], -1)[None]
    result = TaskAlignedAssigner()(torch.full((1, len(anchors), 1), 0.1), boxes, anchors, strides, gt,
                                   torch.tensor([[0, 0]]), torch.tensor([[True, False]]))
    assert result.fg_mask.any()
    assert (result.gt_index[result.fg_mask] == 0).all()


def test_loss_is_small_for_perfect_predictions_and_large_for_wrong_ones():
    anchors, strides = grid_anchors()
    gt = Targets(torch.tensor([[[28.0, 28.0, 40.0, 12.0, 0.5]]]), torch.tensor([[0]]), torch.tensor([[True]]))
    inside = points_in_rboxes(anchors, gt.boxes[0])[0]
    perfect = gt.boxes[0, 0].expand(len(anchors), 5).clone()[None]
    logits = torch.full((1, len(anchors), 2), -8.0)
    logits[0, inside, 0] = 8.0
    sal = [torch.full((1, 1, 64 // s, 64 // s), -8.0) for s in (8, 16, 32)]
    loss = DetectionLoss(2)
    good, terms = loss({"cls_logits": logits, "boxes": perfect, "anchors": anchors, "strides": strides,
                        "saliency_logits": sal}, gt)
    wrong = perfect.clone()
    wrong[..., 4] += math.pi / 3
    bad, bad_terms = loss({"cls_logits": -logits, "boxes": wrong, "anchors": anchors, "strides": strides,
                           "saliency_logits": sal}, gt)
    assert terms["box"] < 0.05 and terms["cls"] < 0.5
    assert bad_terms["box"] > 10 * terms["box"] and bad_terms["cls"] > 10 * terms["cls"]
    assert bad > good


def test_saliency_target_peaks_at_object_centres():
    targets = Targets(torch.tensor([[[20.0, 44.0, 16.0, 16.0, 0.0]]]), torch.tensor([[0]]), torch.tensor([[True]]))
    heat = saliency_targets((1, 1, 8, 8), 8, targets)[0, 0]
    row, col = divmod(int(heat.argmax()), 8)
    assert (col, row) in {(2, 5), (1, 5), (2, 4), (1, 4)}  # cells around (20, 44) / 8
    assert heat.max() > 0.8 and heat[0, 7] < 1e-3


def test_class_aware_nms_suppresses_duplicates_of_one_class_only():
    boxes = np.array([[50, 50, 40, 10, 0.1], [51, 50, 40, 10, 0.12], [50, 50, 40, 10, 0.1], [90, 90, 10, 10, 0]])
    scores = np.array([0.9, 0.8, 0.7, 0.6])
    classes = np.array([0, 0, 1, 0])
    assert class_aware_nms(boxes, scores, classes, 0.5).tolist() == [0, 2, 3]


def test_postprocess_filters_by_confidence_and_takes_the_best_class():
    raw = np.array([[10, 10, 8, 4, 0, 0.1, 0.9], [30, 30, 8, 4, 0, 0.2, 0.1]], dtype=np.float32)
    result = postprocess(raw, conf=0.25)
    assert len(result) == 1 and result.class_ids.tolist() == [1] and result.scores[0] == pytest.approx(0.9)
