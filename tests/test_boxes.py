"""The rotated-box convention: canonical form, polygon conversions both ways, minimum-area rectangles."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from shapely.geometry import MultiPoint

from cstf_edge.geometry import (
    canonicalize_rboxes,
    poly_to_hbb,
    poly_to_rbox,
    rbox_to_hbb,
    rbox_to_poly,
)

# No subnormal coordinates: GEOS (the shapely oracle below) collapses a quadrilateral with a 5e-324
# coordinate to a zero-area rectangle, while ours is right; pixel coordinates are never that small.
coord = st.floats(-2000, 2000, allow_nan=False, allow_subnormal=False)
side = st.floats(0.5, 800, allow_nan=False)
angle = st.floats(-10, 10, allow_nan=False)


def _same_box(a, b, atol=1e-6):
    """Boxes agree as sets of points: same centre and sides, angle equal modulo the box's symmetry."""
    a, b = np.asarray(a), np.asarray(b)
    np.testing.assert_allclose(a[:4], b[:4], atol=atol, rtol=1e-9)
    period = np.pi / 2 if abs(a[2] - a[3]) <= 1e-9 * a[2] else np.pi
    diff = (a[4] - b[4] + period / 2) % period - period / 2
    assert abs(diff) < 1e-6


def test_corner_order_and_direction():
    # A 40 x 10 box turned by +30 degrees: +angle turns +x towards +y (clockwise on screen).
    poly = rbox_to_poly([100, 50, 40, 10, np.pi / 6])
    c, s = np.cos(np.pi / 6), np.sin(np.pi / 6)
    expected_first = [100 - 20 * c + 5 * s, 50 - 20 * s - 5 * c]
    np.testing.assert_allclose(poly[0], expected_first)
    edge = poly[1] - poly[0]
    np.testing.assert_allclose(edge, [40 * c, 40 * s])


@pytest.mark.parametrize(
    "raw, canonical",
    [
        ([0, 0, 10, 20, 0.0], [0, 0, 20, 10, np.pi / 2 - np.pi]),  # w < h: swap, turn by pi/2
        ([0, 0, 20, 10, np.pi / 2], [0, 0, 20, 10, -np.pi / 2]),  # upper bound is open
        ([0, 0, 20, 10, 3 * np.pi], [0, 0, 20, 10, -np.pi + 3 * np.pi - np.pi]),
        ([0, 0, 7, 7, np.pi / 3], [0, 0, 7, 7, np.pi / 3 - np.pi / 2]),  # square: period pi/2
    ],
)
def test_canonicalize_examples(raw, canonical):
    got = canonicalize_rboxes(raw)
    np.testing.assert_allclose(got[:4], canonical[:4])
    assert -np.pi / 2 <= got[4] < np.pi / 2
    _same_box(got, canonical)


@settings(max_examples=300, deadline=None)
@given(coord, coord, side, side, angle)
def test_canonical_form_and_idempotence(cx, cy, w, h, a):
    box = canonicalize_rboxes([cx, cy, w, h, a])
    assert box[2] >= box[3]
    assert -np.pi / 2 <= box[4] < np.pi / 2
    np.testing.assert_array_equal(canonicalize_rboxes(box), box)
    # Same rectangle as before canonicalisation.
    np.testing.assert_allclose(
        np.sort(rbox_to_hbb(box)), np.sort(rbox_to_hbb([cx, cy, w, h, a])), atol=1e-6
    )


@settings(max_examples=300, deadline=None)
@given(coord, coord, side, side, angle)
def test_round_trip_box_polygon_box(cx, cy, w, h, a):
    box = canonicalize_rboxes([cx, cy, w, h, a])
    back = poly_to_rbox(rbox_to_poly(box))
    _same_box(back, box)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(coord, coord), min_size=4, max_size=4))
def test_free_quadrilateral_goes_to_minimum_area_rectangle(points):
    poly = np.array(points)
    box = poly_to_rbox(poly)
    expected = MultiPoint(points).minimum_rotated_rectangle.area
    area = box[2] * box[3]
    assert area == pytest.approx(expected, rel=1e-7, abs=1e-6)
    # The rectangle contains every corner (up to rounding).
    cx, cy, w, h, a = box
    u = np.array([np.cos(a), np.sin(a)])
    v = np.array([-np.sin(a), np.cos(a)])
    rel = poly - [cx, cy]
    tol = 1e-7 * (1 + np.abs(poly).max())
    assert np.all(np.abs(rel @ u) <= w / 2 + tol)
    assert np.all(np.abs(rel @ v) <= h / 2 + tol)


def test_vectorised_shapes_and_8_value_polygons():
    boxes = np.array([[10, 10, 8, 4, 0.2], [50, 40, 30, 30, -0.4], [0, 0, 5, 1, 1.0]])
    polys = rbox_to_poly(boxes)
    assert polys.shape == (3, 4, 2)
    flat = polys.reshape(3, 8)
    np.testing.assert_allclose(poly_to_rbox(flat), poly_to_rbox(polys))
    assert poly_to_rbox(polys[None]).shape == (1, 3, 5)
    assert poly_to_hbb(polys).shape == (3, 4)


def test_degenerate_polygons():
    # Repeated corners along a vertical line (a real DOTA label in split_patch).
    seg = poly_to_rbox([1, 187, 1, 187, 1, 219, 1, 219])
    np.testing.assert_allclose(seg[:4], [1, 203, 32, 0])
    point = poly_to_rbox([5, 5, 5, 5, 5, 5, 5, 5])
    np.testing.assert_array_equal(point, [5, 5, 0, 0, 0])


def test_bad_shapes_are_rejected():
    with pytest.raises(ValueError, match=r"\[\.\.\., 4, 2\]"):
        poly_to_rbox(np.zeros((3, 6)))
    with pytest.raises(ValueError, match=r"\[\.\.\., 5\]"):
        rbox_to_poly(np.zeros((3, 4)))


@pytest.mark.parametrize("boxes, shown", [([0, 0, -30, 20, 0.3], "-30.0"),
                                          ([[1, 1, 2, 1, 0], [0, 0, 30, np.nan, 0.3]], "index [1]"),
                                          ([[0, 0, np.inf, 2, 0]], "inf"),
                                          ([[[1, 1, 2, 1, 0], [0, 0, 3, -1, 0]]], "index [0, 1]")])
def test_canonicalize_rejects_negative_or_non_finite_sizes(boxes, shown):
    with pytest.raises(ValueError, match="negative or non-finite") as info:
        canonicalize_rboxes(boxes)
    assert shown in str(info.value)


def test_canonicalize_keeps_zero_sizes():
    np.testing.assert_array_equal(canonicalize_rboxes([0, 0, 0, 0, 0]), [0, 0, 0, 0, 0])
