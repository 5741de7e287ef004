"""Exact polygon IoU against shapely, its invariances and degenerate cases; ProbIoU sanity."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from shapely.geometry import Polygon

from cstf_edge.geometry import (
    polygon_area,
    polygon_iou_matrix,
    polygon_iou_pairs,
    polygon_overlap_pairs,
    probiou,
    rbox_iou_matrix,
    rbox_to_poly,
)

SQUARE = np.array([[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]])


def shapely_iou(a: np.ndarray, b: np.ndarray) -> float:
    pa, pb = Polygon(a), Polygon(b)
    inter = pa.intersection(pb).area
    return inter / (pa.area + pb.area - inter)


def random_simple_quads(rng, count, scale):
    """Random simple quadrilaterals, convex and not (self-intersecting ones are dropped)."""
    quads = rng.uniform(0, scale, (count * 3, 4, 2))
    simple = [q for q in quads if Polygon(q).is_valid and Polygon(q).area > 1e-6 * scale**2]
    return np.array(simple[:count])


@pytest.mark.parametrize("scale", [1.0, 50.0, 4000.0])
def test_agrees_with_shapely_on_random_simple_quads(scale):
    rng = np.random.default_rng(int(scale))
    a = random_simple_quads(rng, 400, scale)
    b = random_simple_quads(rng, 400, scale)
    b[:100] = a[:100] + rng.normal(0, scale / 20, (100, 4, 2))  # many partial overlaps
    keep = np.array([Polygon(q).is_valid for q in b])
    a, b = a[keep], b[keep]
    convex = np.array([Polygon(q).convex_hull.area - Polygon(q).area < 1e-9 * scale**2 for q in a])
    assert convex.any() and (~convex).any(), "the sample must hold convex and non-convex quads"
    expected = np.array([shapely_iou(p, q) for p, q in zip(a, b)])
    assert (expected > 0).sum() > 50
    np.testing.assert_allclose(polygon_iou_pairs(a, b), expected, rtol=0, atol=1e-9)


def test_matrix_agrees_with_pairs_and_rboxes():
    rng = np.random.default_rng(3)
    boxes_a = np.column_stack([rng.uniform(0, 60, (7, 2)), rng.uniform(5, 40, (7, 2)), rng.uniform(-1.5, 1.5, 7)])
    boxes_b = np.column_stack([rng.uniform(0, 60, (5, 2)), rng.uniform(5, 40, (5, 2)), rng.uniform(-1.5, 1.5, 5)])
    pa, pb = rbox_to_poly(boxes_a), rbox_to_poly(boxes_b)
    matrix = polygon_iou_matrix(pa, pb)
    assert matrix.shape == (7, 5)
    expected = np.array([[shapely_iou(p, q) for q in pb] for p in pa])
    np.testing.assert_allclose(matrix, expected, atol=1e-9)
    np.testing.assert_allclose(rbox_iou_matrix(boxes_a, boxes_b), matrix, atol=1e-12)
    np.testing.assert_allclose(polygon_iou_pairs(pa[:1], pb), matrix[0], atol=1e-12)  # one against N


def test_known_values_identical_touching_contained():
    assert polygon_iou_pairs(SQUARE[None], (SQUARE + 0.5)[None])[0] == pytest.approx(1 / 7, abs=1e-12)
    assert polygon_iou_pairs(SQUARE[None], SQUARE[None])[0] == pytest.approx(1.0, abs=1e-12)
    assert polygon_iou_pairs(SQUARE[None], (SQUARE + [1.0, 0.0])[None])[0] == 0.0  # shared edge
    assert polygon_iou_pairs(SQUARE[None], (SQUARE + [1.0, 1.0])[None])[0] == 0.0  # shared corner
    assert polygon_iou_pairs(SQUARE[None], (SQUARE * [2.0, 1.0])[None])[0] == pytest.approx(0.5, abs=1e-12)
    assert polygon_iou_pairs(SQUARE[None], (SQUARE + 5)[None])[0] == 0.0


def test_degenerate_polygons():
    point = np.zeros((1, 4, 2)) + 0.5
    segment = np.array([[[0.0, 0.5], [1.0, 0.5], [1.0, 0.5], [0.0, 0.5]]])
    collinear = np.array([[[0.0, 0.0], [0.5, 0.5], [1.0, 1.0], [0.2, 0.2]]])
    triangle = np.array([[[0.0, 0.0], [1.0, 0.0], [1.0, 0.0], [0.0, 1.0]]])  # repeated corner
    for degenerate in (point, segment, collinear):
        assert polygon_area(degenerate)[0] == 0.0
        assert polygon_iou_pairs(degenerate, SQUARE[None])[0] == 0.0
        assert polygon_iou_pairs(degenerate, degenerate)[0] == 0.0  # zero union is defined as 0
        inter, union = polygon_overlap_pairs(degenerate, degenerate)
        assert inter[0] == 0.0 and union[0] == 0.0
    assert polygon_iou_pairs(triangle, SQUARE[None])[0] == pytest.approx(0.5, abs=1e-12)
    assert polygon_iou_pairs(triangle, triangle)[0] == pytest.approx(1.0, abs=1e-12)


def test_area_sign_and_non_convex():
    assert polygon_area(SQUARE) == pytest.approx(1.0)
    assert polygon_area(SQUARE[::-1]) == pytest.approx(-1.0)
    dart = np.array([[0.0, 0.0], [2.0, 1.0], [0.0, 2.0], [0.8, 1.0]])  # reflex corner at (0.8, 1)
    assert abs(polygon_area(dart)) == pytest.approx(Polygon(dart).area)
    other = dart[:, ::-1] + [0.3, 0.1]
    assert polygon_iou_pairs(dart[None], other[None])[0] == pytest.approx(shapely_iou(dart, other), abs=1e-12)


finite = st.floats(-50, 50, allow_nan=False, allow_infinity=False)
rbox = st.tuples(finite, finite, st.floats(0.5, 40), st.floats(0.5, 40), st.floats(-3.2, 3.2))


@settings(max_examples=150, deadline=None)
@given(rbox, rbox, st.integers(0, 3), st.booleans())
def test_properties_on_rotated_boxes(box_a, box_b, shift, reverse):
    a, b = rbox_to_poly(np.array([box_a])), rbox_to_poly(np.array([box_b]))
    iou_ab = polygon_iou_pairs(a, b)[0]
    assert 0.0 <= iou_ab <= 1.0 + 1e-12
    assert iou_ab == pytest.approx(polygon_iou_pairs(b, a)[0], abs=1e-9)
    assert polygon_iou_pairs(a, a)[0] == pytest.approx(1.0, abs=1e-9)
    reordered = np.roll(b, shift, axis=1)
    if reverse:
        reordered = reordered[:, ::-1]
    assert polygon_iou_pairs(a, reordered)[0] == pytest.approx(iou_ab, abs=1e-9)
    assert iou_ab == pytest.approx(shapely_iou(a[0], b[0]), abs=1e-9)


def test_probiou_sanity():
    boxes = np.array([[10.0, 20.0, 30.0, 10.0, 0.3], [0.0, 0.0, 8.0, 8.0, 0.0]])
    assert np.all(probiou(boxes, boxes) > 0.999)
    far = boxes + [1000.0, 1000.0, 0, 0, 0]
    assert np.all(probiou(boxes, far) < 1e-6)
    other = np.array([[14.0, 22.0, 25.0, 12.0, -0.2], [3.0, 1.0, 6.0, 9.0, 0.7]])
    np.testing.assert_allclose(probiou(boxes, other), probiou(other, boxes), atol=1e-12)
    values = probiou(boxes, other)
    assert np.all((values > 0.05) & (values < 0.999))
    # Closer boxes score higher.
    shifted = [probiou(boxes[:1], boxes[:1] + [dx, 0, 0, 0, 0])[0] for dx in (1.0, 5.0, 15.0)]
    assert shifted[0] > shifted[1] > shifted[2]
    # Half-turn symmetry of the box: angle and angle + pi are the same Gaussian.
    turned = boxes + [0, 0, 0, 0, np.pi]
    np.testing.assert_allclose(probiou(turned, other), values, atol=1e-9)


@pytest.mark.parametrize(
    "box_a, box_b",
    [((0.0, 0.0, 1.0, 1.0, 0.0), (0.0, 1e-08, 1.0, 1.0, 0.0)),
     ((0.0, 0.0, 1.0, 1.0, 0.0), (0.0, 0.0, 1.0, 2.0, 1e-08))],
)
def test_nearly_shared_edges_are_exact_and_symmetric(box_a, box_b):
    a, b = rbox_to_poly(np.array([box_a])), rbox_to_poly(np.array([box_b]))
    expected = shapely_iou(a[0], b[0])
    assert polygon_iou_pairs(a, b)[0] == pytest.approx(expected, abs=1e-9)
    assert polygon_iou_pairs(b, a)[0] == pytest.approx(expected, abs=1e-9)


def test_matrix_in_row_chunks_equals_the_unchunked_matrix(monkeypatch):
    rng = np.random.default_rng(3)

    def random_polys(n):
        return rbox_to_poly(np.column_stack([rng.uniform(0, 60, (n, 2)), rng.uniform(5, 30, (n, 2)),
                                             rng.uniform(-2, 2, n)]))

    a, b = random_polys(23), random_polys(17)
    whole = polygon_iou_matrix(a, b)
    assert (whole > 0).sum() > 20
    for chunk_pairs in (1, 17, 40, 10**9):
        np.testing.assert_array_equal(polygon_iou_matrix(a, b, chunk_pairs=chunk_pairs), whole)
    assert polygon_iou_matrix(a, b[:0], chunk_pairs=5).shape == (23, 0)
    assert polygon_iou_matrix(a[:0], b).shape == (0, 17)
    with pytest.raises(ValueError, match="chunk_pairs"):
        polygon_iou_matrix(a, b, chunk_pairs=0)
    from cstf_edge.geometry import iou

    sizes, pairs = [], iou.polygon_iou_pairs

    def counting_pairs(x, y):
        sizes.append(np.broadcast(x, y).size // 8)  # pairs of [4, 2] polygons in this call
        return pairs(x, y)

    monkeypatch.setattr(iou, "polygon_iou_pairs", counting_pairs)
    np.testing.assert_array_equal(polygon_iou_matrix(a, b, chunk_pairs=40), whole)
    assert sizes == [34] * 11 + [17]  # 2 rows of 17 per call
