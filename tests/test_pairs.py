"""Axis-aligned candidate pairs, and the reference rotated NMS that uses them, against brute force."""
import numpy as np
import pytest

from cstf_edge.geometry import rbox_to_poly
from cstf_edge.geometry.iou import polygon_iou_matrix
from cstf_edge.geometry.nms import rotated_nms
from cstf_edge.geometry.pairs import overlapping_pairs


def _random_boxes(rng, n, extent=512.0, max_side=60.0):
    return np.c_[rng.uniform(0, extent, (n, 2)), rng.uniform(2, max_side, (n, 2)), rng.uniform(-1.5, 1.5, n)]


@pytest.mark.parametrize("seed, n", [(0, 0), (1, 1), (2, 300), (3, 800)])
def test_overlapping_pairs_equal_brute_force(seed, n):
    rng = np.random.default_rng(seed)
    lo = rng.uniform(0, 100, (n, 2)).round()  # rounded: touching edges happen
    bounds = np.c_[lo, lo + rng.uniform(0, 15, (n, 2)).round()]
    i, j = overlapping_pairs(bounds)
    assert np.all(i < j)
    got = set(zip(i.tolist(), j.tolist()))
    x = (bounds[:, None, 0] <= bounds[None, :, 2]) & (bounds[None, :, 0] <= bounds[:, None, 2])
    y = (bounds[:, None, 1] <= bounds[None, :, 3]) & (bounds[None, :, 1] <= bounds[:, None, 3])
    expected = {(a, b) for a, b in zip(*np.nonzero(np.triu(x & y, k=1)))}
    assert got == expected
    assert len(got) == len(i)  # no duplicates


@pytest.mark.parametrize("seed, n, threshold", [(0, 400, 0.3), (1, 150, 0.1), (2, 1, 0.5), (3, 0, 0.5)])
def test_rotated_nms_equals_dense_greedy(seed, n, threshold):
    rng = np.random.default_rng(seed)
    boxes = _random_boxes(rng, n, extent=256.0)
    scores = rng.random(n).round(2)  # ties resolved by the stable order
    order = np.argsort(-scores, kind="stable")
    polys = rbox_to_poly(boxes[order]).reshape(-1, 4, 2)
    overlaps = polygon_iou_matrix(polys, polys)
    suppressed, keep = np.zeros(n, dtype=bool), []
    for rank in range(n):
        if not suppressed[rank]:
            keep.append(order[rank])
            suppressed |= overlaps[rank] > threshold
    np.testing.assert_array_equal(rotated_nms(boxes, scores, threshold), np.asarray(keep, dtype=np.int64))
