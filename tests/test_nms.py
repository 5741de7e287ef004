"""Rotated NMS: the numba kernel keeps exactly what the numpy reference keeps, threshold and order rules."""
import logging
import zlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cstf_edge.geometry import nms
from cstf_edge.geometry.boxes import rbox_to_poly
from cstf_edge.geometry.iou import polygon_iou_pairs

numba = pytest.importorskip("numba", reason="numba is not installed: only the numpy NMS runs")
from cstf_edge.geometry import _nms_numba  # noqa: E402  (needs numba)


def kernel_nms(boxes, scores, threshold, classes=None):
    """The numba path, called directly (the public functions may fall back to numpy)."""
    codes = np.zeros(len(scores), dtype=np.int64) if classes is None else nms._class_codes(classes)
    return nms._run_kernel(np.asarray(boxes, dtype=np.float64).reshape(-1, 5),
                           np.asarray(scores, dtype=np.float64), codes, threshold)


def assert_parity(boxes, scores, threshold, classes=None):
    """Both paths give the same indices, in the same order, through the public functions too."""
    if classes is None:
        expected = nms.rotated_nms_numpy(boxes, scores, threshold)
        public = nms.rotated_nms(boxes, scores, threshold)
    else:
        expected = nms.class_aware_nms_numpy(boxes, scores, classes, threshold)
        public = nms.class_aware_nms(boxes, scores, classes, threshold)
    got = kernel_nms(boxes, scores, threshold, classes)
    np.testing.assert_array_equal(got, expected)
    np.testing.assert_array_equal(public, expected)
    assert got.dtype == np.int64
    return got


def random_boxes(rng, n, extent=512.0, sides=(2.0, 60.0)):
    """Boxes ``[n, 5]`` with centres uniform in a square and sides, angles uniform."""
    return np.c_[rng.uniform(0, extent, (n, 2)), rng.uniform(*sides, (n, 2)), rng.uniform(-1.6, 1.6, n)]


def clustered_boxes(rng, objects, per_object, extent=2000.0):
    """Jittered candidates around objects, as a detector emits them."""
    truth = np.repeat(random_boxes(rng, objects, extent, (8.0, 120.0)), per_object, axis=0)
    centres = rng.normal(0, 0.15, (len(truth), 2)) * truth[:, 3:4]
    jitter = np.c_[centres, truth[:, 2:4] * rng.normal(0, 0.08, (len(truth), 2)), rng.normal(0, 0.08, len(truth))]
    return truth + jitter


def special_cases(rng):
    """Duplicates, nested, touching, tiny and zero-size boxes, integer geometry (exact ties)."""
    base = np.array([[100.0, 100.0, 40.0, 20.0, 0.0], [100.0, 100.0, 40.0, 20.0, 0.0],  # duplicates
                     [100.0, 100.0, 20.0, 10.0, 0.0], [100.0, 100.0, 40.0, 10.0, 0.0],  # nested: IoU 1/4, 1/2
                     [140.0, 100.0, 40.0, 20.0, 0.0], [100.0, 120.0, 40.0, 20.0, 0.0],  # touching along an edge
                     [120.0, 110.0, 40.0, 20.0, np.pi / 2],  # touching at a corner region
                     [300.0, 300.0, 1e-6, 1e-6, 0.3], [300.0, 300.0, 1e-6, 1e-6, 0.3],  # tiny duplicates
                     [300.0, 300.0, 0.0, 5.0, 0.0], [300.0, 300.0, 0.0, 0.0, 0.0],  # zero area
                     [200.0, 200.0, 30.0, 30.0, np.pi / 4], [200.0, 200.0, 30.0, 30.0, -np.pi / 4]])  # a square turned
    lattice = np.c_[rng.integers(0, 20, (60, 2)) * 5.0, rng.integers(1, 5, (60, 2)) * 5.0, np.zeros(60)]
    return np.concatenate([base, lattice])


@pytest.mark.parametrize("threshold", [0.0, 0.1, 0.3, 0.5, 0.7, 0.95])
@pytest.mark.parametrize("layout", ["sparse", "dense", "clustered", "special"])
def test_kernel_equals_numpy_reference(layout, threshold):
    rng = np.random.default_rng(zlib.crc32(f"{layout} {threshold}".encode()))
    boxes = {"sparse": lambda: random_boxes(rng, 600, extent=4000.0),
             "dense": lambda: random_boxes(rng, 800, extent=200.0),
             "clustered": lambda: clustered_boxes(rng, 150, 8),
             "special": lambda: special_cases(rng)}[layout]()
    scores = rng.random(len(boxes)).round(2)  # many ties: the order rule matters
    kept = assert_parity(boxes, scores, threshold)
    classes = rng.integers(0, 5, len(boxes))
    assert_parity(boxes, scores, threshold, classes)
    if layout == "clustered" and threshold == 0.5:
        assert 0 < len(kept) < len(boxes)  # the layout exercises suppression


def test_kernel_equals_numpy_on_large_detector_output():
    rng = np.random.default_rng(7)
    boxes = np.concatenate([clustered_boxes(rng, 800, 10, extent=8000.0), random_boxes(rng, 2000, extent=8000.0)])
    scores = rng.random(len(boxes)).astype(np.float32)
    assert_parity(boxes, scores, 0.45)
    assert_parity(boxes, scores, 0.45, rng.integers(0, 15, len(boxes)))


def test_grid_edge_cases_equal_numpy():
    rng = np.random.default_rng(3)
    small = random_boxes(rng, 300, extent=300.0, sides=(1.0, 8.0))
    huge = np.array([[150.0, 150.0, 400.0, 300.0, 0.2], [150.0, 150.0, 390.0, 310.0, 0.25]])
    far = np.array([[1e6, -1e6, 10.0, 5.0, 0.0], [1e6 + 1, -1e6, 10.0, 5.0, 0.0]])
    same_place = np.tile([[50.0, 50.0, 10.0, 4.0, 0.5]], (40, 1)) + rng.normal(0, 0.5, (40, 5))
    for boxes in (np.concatenate([huge, small]), np.concatenate([small, far]), same_place, far):
        scores = rng.random(len(boxes))
        assert_parity(boxes, scores, 0.3)
        assert_parity(boxes, scores, 0.3, rng.integers(0, 3, len(boxes)))


@pytest.mark.parametrize("threshold", [-0.5, 1.0, float("nan")])
def test_negative_sides_and_odd_thresholds_equal_numpy(threshold):
    rng = np.random.default_rng(9)
    boxes = np.c_[rng.uniform(0, 100, (400, 2)), rng.uniform(-30, 30, (400, 2)), rng.uniform(-3, 3, 400)]
    scores = rng.random(400).round(1)
    assert_parity(boxes, scores, threshold)
    assert_parity(boxes, scores, threshold, rng.integers(0, 3, 400))
    assert_parity(boxes, scores, 0.4)  # sides of either sign, any angle


def test_empty_and_single_box():
    empty = np.zeros((0, 5))
    for got in (nms.rotated_nms(empty, np.zeros(0), 0.5), kernel_nms(empty, np.zeros(0), 0.5),
                nms.class_aware_nms(empty, np.zeros(0), np.zeros(0, dtype=np.int64), 0.5)):
        assert got.shape == (0,) and got.dtype == np.int64
    one = np.array([[5.0, 5.0, 4.0, 2.0, 0.1]])
    assert nms.rotated_nms(one, np.array([0.3]), 0.5).tolist() == [0]
    assert nms.class_aware_nms(one, np.array([0.3]), np.array([4]), 0.5).tolist() == [0]


def test_suppression_needs_iou_strictly_above_threshold():
    boxes = np.array([[0.0, 0.0, 4.0, 2.0, 0.0], [-1.0, 0.0, 2.0, 2.0, 0.0]])  # nested: IoU exactly 4 / 8
    assert polygon_iou_pairs(rbox_to_poly(boxes[:1]), rbox_to_poly(boxes[1:]))[0] == 0.5
    scores = np.array([0.9, 0.8])
    for run in (nms.rotated_nms, nms.rotated_nms_numpy, kernel_nms):
        assert run(boxes, scores, 0.5).tolist() == [0, 1]
        assert run(boxes, scores, 0.4999).tolist() == [0]
    touching = np.array([[0.0, 0.0, 2.0, 2.0, 0.0], [2.0, 0.0, 2.0, 2.0, 0.0]])  # IoU 0
    assert nms.rotated_nms(touching, scores, 0.0).tolist() == [0, 1]
    assert nms.rotated_nms(touching, scores, -0.1).tolist() == [0]  # bounds touch: compared, 0 > -0.1


def test_output_order_is_score_then_input_then_class():
    boxes = np.array([[0.0, 0.0, 2.0, 2.0, 0.0], [10.0, 0.0, 2.0, 2.0, 0.0], [20.0, 0.0, 2.0, 2.0, 0.0],
                      [30.0, 0.0, 2.0, 2.0, 0.0]])
    scores = np.array([0.5, 0.9, 0.5, 0.9])
    assert nms.rotated_nms(boxes, scores, 0.5).tolist() == [1, 3, 0, 2]  # ties keep input order
    classes = np.array([2, 1, 0, 0])
    assert nms.class_aware_nms(boxes, scores, classes, 0.5).tolist() == [3, 1, 2, 0]  # ties: class, input
    assert nms.class_aware_nms_numpy(boxes, scores, classes, 0.5).tolist() == [3, 1, 2, 0]


def test_class_aware_keeps_overlaps_of_other_classes():
    boxes = np.array([[50, 50, 40, 10, 0.1], [51, 50, 40, 10, 0.12], [50, 50, 40, 10, 0.1], [90, 90, 10, 10, 0]],
                     dtype=np.float64)
    scores = np.array([0.9, 0.8, 0.7, 0.6])
    for classes in (np.array([0, 0, 1, 0]), np.array([0.0, -0.0, 7.5, 0.0]), np.array([5, 5, -3, 5]),
                    np.array([10**12, 10**12, 0, 10**12])):
        assert nms.class_aware_nms(boxes, scores, classes, 0.5).tolist() == [0, 2, 3]
        assert_parity(boxes, scores, 0.5, classes)


def test_numpy_fallback_without_numba(monkeypatch, caplog):
    rng = np.random.default_rng(11)
    boxes, scores = clustered_boxes(rng, 30, 5), rng.random(150)
    expected = kernel_nms(boxes, scores, 0.5)
    monkeypatch.setattr(nms, "_kernel", nms._UNSET)
    monkeypatch.setitem(__import__("sys").modules, "cstf_edge.geometry._nms_numba", None)  # import fails
    with caplog.at_level(logging.DEBUG, logger="cstf_edge.geometry.nms"):
        np.testing.assert_array_equal(nms.rotated_nms(boxes, scores, 0.5), expected)
        nms.rotated_nms(boxes, scores, 0.5)
    assert nms.numba_kernel() is None
    assert sum("numpy implementation" in r.getMessage() for r in caplog.records) == 1  # logged once


def test_non_finite_input_uses_the_numpy_reference():
    boxes = np.array([[0.0, 0.0, 2.0, 2.0, 0.0], [np.nan, 0.0, 2.0, 2.0, 0.0], [0.5, 0.0, 2.0, 2.0, 0.0]])
    scores = np.array([0.9, 0.8, np.inf])
    np.testing.assert_array_equal(nms.rotated_nms(boxes, scores, 0.3), nms.rotated_nms_numpy(boxes, scores, 0.3))


def test_pair_iou_is_bitwise_the_reference_iou():
    rng = np.random.default_rng(5)
    boxes = np.concatenate([clustered_boxes(rng, 40, 6, extent=300.0), special_cases(rng)])
    polys = rbox_to_poly(boxes)
    i, j = np.triu_indices(len(boxes), k=1)
    keep = rng.random(len(i)) < 0.2
    i, j = i[keep], j[keep]
    buf = np.empty(16)
    got = np.array([_nms_numba.pair_iou(polys, a, b, buf) for a, b in zip(i, j)])
    np.testing.assert_array_equal(got, polygon_iou_pairs(polys[i], polys[j]))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 12), st.integers(0, 12), st.integers(0, 6), st.integers(0, 6),
                          st.sampled_from([0.0, np.pi / 2, np.pi / 4, 0.3]), st.integers(0, 3), st.integers(0, 2)),
                min_size=0, max_size=40),
       st.sampled_from([0.0, 0.25, 0.5, 0.75]))
def test_kernel_equals_numpy_on_lattice_boxes(rows, threshold):
    """Integer geometry: exact ties in IoU, touching and identical boxes, zero sizes."""
    data = np.array(rows, dtype=np.float64).reshape(-1, 7)
    boxes, scores, classes = data[:, :5], data[:, 5] / 4, data[:, 6].astype(np.int64)
    assert_parity(boxes, scores, threshold)
    assert_parity(boxes, scores, threshold, classes)
