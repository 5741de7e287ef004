"""Overlaps of oriented boxes: exact polygon IoU (evaluation, NMS) and ProbIoU (a training-loss reference).

Exact polygon IoU has the semantics of the official DOTA devkit (``polyiou.cpp``), vectorised. Each
polygon's orientation is normalised by the sign of its shoelace area (the devkit reverses those of
negative area), so corner order and orientation do not change the result. Two convex quadrilaterals
(the usual case: rotated boxes, most DOTA labels) intersect by Green's theorem: the edges of each, cut
to the part inside the other (Cyrus-Beck), sum to the intersection's area; a shared edge is counted
once. Otherwise each quadrilateral is split into the two signed triangles of its fan from corner 0 and
the signed triangle-triangle intersections are summed, as the devkit does with its fan from the
origin: the sum is the integral of the product of the two winding numbers, exact for any simple
quadrilateral, convex or not. Polygons of zero area (repeated or collinear corners) intersect nothing.

Zero union (both polygons of zero area) gives IoU 0 here; ``polygon_overlap_pairs`` returns the raw
intersection and union for callers (the DOTA evaluator) that must mirror the devkit's ``0 / 0``.
All arithmetic is float64; corners are taken relative to the first corner of ``a`` for precision.
"""
from __future__ import annotations

import numpy as np

from cstf_edge.geometry.boxes import as_polygons, as_rboxes, rbox_to_poly

# The devkit's tolerance on cross products (sig() in polyiou.cpp).
CROSS_EPS = 1e-8
# The two fan triangles of a quadrilateral from corner 0, padded to 4 corners by repeating the last one
# (a zero-length edge adds nothing to an area and constrains nothing as a clipping edge).
_FAN = np.array([[0, 1, 2, 2], [0, 2, 3, 3]])
# Every (piece of a, piece of b) combination when both are split into two triangles.
_PIECE_A = np.array([0, 0, 1, 1])
_PIECE_B = np.array([0, 1, 0, 1])
PROBIOU_EPS = 1e-7
# Edges closer than this (pixels) to each other's line count as lying on one line.
COLLINEAR_DISTANCE = 1e-10
# Pairs per vectorised chunk: [CHUNK, 4, 4] temporaries fit in a core's cache.
CHUNK_PAIRS = 8192
# Pairs per block of rows in polygon_iou_matrix: bounds the [pairs, 4, 2] gathered inputs (~250 MB).
MATRIX_CHUNK_PAIRS = 2_000_000


def polygon_area(polys) -> np.ndarray:
    """Signed shoelace area ``[...]`` of polygons ``[..., 4, 2]`` (or ``[..., 8]``).

    Positive when the corners turn from +x towards +y (clockwise on screen, since image y points
    down); take ``np.abs`` for the geometric area.
    """
    pts = as_polygons(polys)
    x, y = pts[..., 0], pts[..., 1]
    x_next, y_next = np.roll(x, -1, axis=-1), np.roll(y, -1, axis=-1)
    return 0.5 * np.sum(x * y_next - y * x_next, axis=-1)


def _corner_turns(polys: np.ndarray) -> np.ndarray:
    """Cross product of the two edges at each corner ``[M, 4]``."""
    incoming = polys - np.roll(polys, 1, axis=1)
    outgoing = np.roll(polys, -1, axis=1) - polys
    return incoming[..., 0] * outgoing[..., 1] - incoming[..., 1] * outgoing[..., 0]


def _edge_sides(p: np.ndarray, q: np.ndarray):
    """Side values of the edges of ``p`` against the edge lines of ``q`` (corner-major ``[2, 4, M]``).

    Returns ``side0`` ``[n, m, M]`` (at each edge start; positive = left of the ``q`` edge), ``slope``
    (``side(t) = side0 + t * slope`` along the edge) and the distance of the farther end point to the
    line (infinite for a zero-length ``q`` edge).
    """
    p_dir = np.roll(p, -1, axis=1) - p
    q_dir = np.roll(q, -1, axis=1) - q
    px, py, pdx, pdy = p[0][:, None], p[1][:, None], p_dir[0][:, None], p_dir[1][:, None]  # [n, 1, M]
    qx, qy, qdx, qdy = q[0][None], q[1][None], q_dir[0][None], q_dir[1][None]  # [1, m, M]
    side0 = qdx * (py - qy) - qdy * (px - qx)
    slope = qdx * pdy - qdy * pdx
    q_len = np.hypot(qdx, qdy)
    with np.errstate(divide="ignore", invalid="ignore"):
        distance = np.maximum(np.abs(side0), np.abs(side0 + slope)) / q_len
    return side0, slope, np.where(q_len > 0, distance, np.inf), q_len == 0, qdx * pdx + qdy * pdy


def _clip_segments(p, side0, slope, no_constraint, dead) -> np.ndarray:
    """Green's-theorem share ``[M]`` of the edges of convex ``p`` (``[2, 4, M]``) inside the other polygon.

    Each edge is cut (Cyrus-Beck) to the part where every ``side0 + t * slope >= 0``, skipping the
    ``no_constraint`` lines and dropping ``dead`` edges; a part contributes ``(start x end) / 2``.
    """
    p_dir = np.roll(p, -1, axis=1) - p
    regular = ~no_constraint & ~dead
    dead = dead | (regular & (slope == 0) & (side0 < 0))
    t_cross = -side0 / np.where(slope == 0, 1.0, slope)
    t_lo = np.where(regular & (slope > 0), t_cross, 0.0).max(axis=1).clip(0.0, None)  # [n, M]
    t_hi = np.where(regular & (slope < 0), t_cross, 1.0).min(axis=1).clip(None, 1.0)
    alive = ~dead.any(axis=1) & (t_lo < t_hi)
    sx, sy = p[0] + t_lo * p_dir[0], p[1] + t_lo * p_dir[1]
    ex, ey = p[0] + t_hi * p_dir[0], p[1] + t_hi * p_dir[1]
    return 0.5 * np.where(alive, sx * ey - sy * ex, 0.0).sum(axis=0)


def _convex_intersection_area(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Intersection area ``[M]`` of convex polygons ``[M, 4, 2]`` turning positively.

    Green's theorem over both boundaries. An edge pair lying on one line (every end point within
    ``COLLINEAR_DISTANCE`` of the other's line, decided once for both passes) is counted once, from
    ``p``, when the edges run the same way, and not at all otherwise (the polygons only touch there).
    """
    p = np.ascontiguousarray(p.transpose(2, 1, 0))  # [2, 4, M]: the small axes lead
    q = np.ascontiguousarray(q.transpose(2, 1, 0))
    side_pq, slope_pq, dist_pq, zero_q, dot = _edge_sides(p, q)  # [n, m, M]
    side_qp, slope_qp, dist_qp, zero_p, _ = _edge_sides(q, p)  # [m, n, M]
    collinear = (dist_pq <= COLLINEAR_DISTANCE) & (dist_qp.transpose(1, 0, 2) <= COLLINEAR_DISTANCE)
    shared = collinear & (dot > 0)
    from_p = _clip_segments(p, side_pq, slope_pq, zero_q | shared, collinear & ~shared)
    from_q = _clip_segments(q, side_qp, slope_qp, zero_p, collinear.transpose(1, 0, 2))
    return from_p + from_q


def _signed_triangles(polys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The two fan triangles ``[K, 2, 4, 2]`` of each polygon, turned positively, and their signs."""
    tris = polys[:, _FAN]
    sign = np.sign(polygon_area(tris))
    sign[np.abs(polygon_area(tris)) <= CROSS_EPS] = 0.0
    tris = np.where((sign < 0)[..., None, None], tris[:, :, ::-1], tris)
    return tris, sign


def _general_intersection_area(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Intersection ``[K]`` of positively turning quadrilaterals, any shape: signed triangle pieces."""
    tri_a, sign_a = _signed_triangles(a)
    tri_b, sign_b = _signed_triangles(b)
    sign = (sign_a[:, _PIECE_A] * sign_b[:, _PIECE_B]).reshape(-1)
    pieces = _convex_intersection_area(
        tri_a[:, _PIECE_A].reshape(-1, 4, 2), tri_b[:, _PIECE_B].reshape(-1, 4, 2)
    )
    return (sign * pieces).reshape(-1, 4).sum(axis=1)


def _overlap_chunk(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``polygon_overlap_pairs`` on one cache-sized chunk."""
    origin = a[:, :1, :]
    a_local, b_local = a - origin, b - origin
    area_a, area_b = polygon_area(a_local), polygon_area(b_local)
    # Turn every polygon positively (the devkit reverses those of negative area).
    a_local = np.where((area_a < 0)[:, None, None], a_local[:, ::-1], a_local)
    b_local = np.where((area_b < 0)[:, None, None], b_local[:, ::-1], b_local)
    solid = (np.abs(area_a) > CROSS_EPS) & (np.abs(area_b) > CROSS_EPS)
    convex = (_corner_turns(a_local) >= -CROSS_EPS).all(axis=1) & (
        _corner_turns(b_local) >= -CROSS_EPS
    ).all(axis=1)
    inter = np.zeros(len(a))
    fast = solid & convex
    inter[fast] = _convex_intersection_area(a_local[fast], b_local[fast])
    slow = solid & ~convex
    if slow.any():
        inter[slow] = _general_intersection_area(a_local[slow], b_local[slow])
    union = np.abs(area_a) + np.abs(area_b) - inter
    return inter, union


def polygon_overlap_pairs(a, b) -> tuple[np.ndarray, np.ndarray]:
    """Intersection and union areas ``([K], [K])`` of polygons ``a[K, 4, 2]`` and ``b[K, 4, 2]``.

    The union may be 0 (both polygons of zero area); ``polygon_iou_pairs`` maps that to IoU 0.
    Work is done in chunks of ``CHUNK_PAIRS`` so the temporaries stay in cache.
    """
    a = as_polygons(a).reshape(-1, 4, 2)
    b = as_polygons(b).reshape(-1, 4, 2)
    if a.shape != b.shape:
        raise ValueError(f"polygon pairs need equal counts, got a {a.shape} and b {b.shape}")
    inter, union = np.zeros(len(a)), np.zeros(len(a))
    for start in range(0, len(a), CHUNK_PAIRS):
        part = slice(start, start + CHUNK_PAIRS)
        inter[part], union[part] = _overlap_chunk(a[part], b[part])
    return inter, union


def _extent_overlap(ax, ay, bx, by, dx, dy) -> np.ndarray:
    """Overlap ``[K]`` of the extents of corners ``[4, K]`` of ``a`` and ``b`` along ``(dx, dy)``."""
    along_a, along_b = ax * dx + ay * dy, bx * dx + by * dy
    high = np.minimum(along_a.max(axis=0), along_b.max(axis=0))
    low = np.maximum(along_a.min(axis=0), along_b.min(axis=0))
    return np.clip(high - low, 0.0, None)


def _frame_overlap(frame: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Area ``[K]`` of the rectangle, aligned with the first edge of ``frame``, that holds the overlap
    of the extents of ``a`` and ``b`` (corner-major ``[2, 4, K]``); inf where that edge has no length."""
    origin_x, origin_y = frame[0, 0], frame[1, 0]
    edge_x, edge_y = frame[0, 1] - origin_x, frame[1, 1] - origin_y
    length = np.hypot(edge_x, edge_y)
    safe = np.where(length > 0, length, 1.0)
    ux, uy = edge_x / safe, edge_y / safe
    ax, ay, bx, by = a[0] - origin_x, a[1] - origin_y, b[0] - origin_x, b[1] - origin_y
    area = _extent_overlap(ax, ay, bx, by, ux, uy) * _extent_overlap(ax, ay, bx, by, -uy, ux)
    return np.where(length > 0, area, np.inf)


def intersection_upper_bound(a, b) -> np.ndarray:
    """An upper bound ``[K]`` on the intersection area of polygons ``a[K, 4, 2]`` and ``b[K, 4, 2]``.

    The intersection lies within both polygons' extents along any direction: in the frame of the
    first edge of ``a``, and of ``b``, the rectangle of those overlaps bounds it; the smaller is
    returned (NaN where neither is a number). Cheap next to the exact intersection, and tight for
    rotated boxes of similar angles, so it prunes pairs that cannot reach an IoU threshold.
    """
    a = np.ascontiguousarray(as_polygons(a).reshape(-1, 4, 2).transpose(2, 1, 0))  # [2, 4, K]
    b = np.ascontiguousarray(as_polygons(b).reshape(-1, 4, 2).transpose(2, 1, 0))
    return np.fmin(_frame_overlap(a, a, b), _frame_overlap(b, a, b))


def _safe_ratio(inter: np.ndarray, union: np.ndarray) -> np.ndarray:
    ok = union > 0
    return np.where(ok, inter / np.where(ok, union, 1.0), 0.0)


def polygon_iou_pairs(a, b) -> np.ndarray:
    """Elementwise exact IoU ``[K]`` of polygons ``a[K, 4, 2]`` and ``b[K, 4, 2]`` (zero union -> 0).

    ``a`` and ``b`` broadcast: one polygon ``[1, 4, 2]`` against ``[N, 4, 2]`` gives ``[N]``.
    """
    a, b = np.broadcast_arrays(as_polygons(a), as_polygons(b))
    shape = a.shape[:-2]
    inter, union = polygon_overlap_pairs(a.reshape(-1, 4, 2), b.reshape(-1, 4, 2))
    return _safe_ratio(inter, union).reshape(shape)


def polygon_iou_matrix(a, b, *, chunk_pairs: int = MATRIX_CHUNK_PAIRS) -> np.ndarray:
    """Exact IoU ``[N, M]`` of every polygon of ``a[N, 4, 2]`` with every polygon of ``b[M, 4, 2]``.

    Rows are done in blocks of at most ``chunk_pairs`` pairs (at least one row), so the gathered
    pair arrays stay bounded (a few hundred MB) however large ``N x M`` is.
    """
    if chunk_pairs < 1:
        raise ValueError(f"chunk_pairs must be a positive number of pairs, got {chunk_pairs}")
    a = as_polygons(a).reshape(-1, 4, 2)
    b = as_polygons(b).reshape(-1, 4, 2)
    out = np.zeros((len(a), len(b)))
    rows_per_chunk = max(1, chunk_pairs // max(len(b), 1))
    for start in range(0, len(a), rows_per_chunk):
        rows = a[start:start + rows_per_chunk]
        out[start:start + len(rows)] = polygon_iou_pairs(rows[:, None], b[None])
    return out


def rbox_iou_matrix(a, b) -> np.ndarray:
    """Exact IoU ``[N, M]`` of rotated boxes ``a[N, 5]`` and ``b[M, 5]`` (via their polygons)."""
    return polygon_iou_matrix(rbox_to_poly(as_rboxes(a).reshape(-1, 5)), rbox_to_poly(as_rboxes(b).reshape(-1, 5)))


def _gaussian_covariance(rboxes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Covariance entries (a, b, c) = (var x, var y, cov xy) of the uniform density on each box."""
    var_w, var_h = rboxes[..., 2] ** 2 / 12.0, rboxes[..., 3] ** 2 / 12.0
    cos, sin = np.cos(rboxes[..., 4]), np.sin(rboxes[..., 4])
    return (
        var_w * cos**2 + var_h * sin**2,
        var_w * sin**2 + var_h * cos**2,
        (var_w - var_h) * cos * sin,
    )


def probiou(a, b, eps: float = PROBIOU_EPS) -> np.ndarray:
    """ProbIoU ``[N]`` of rotated boxes ``a[N, 5]`` and ``b[N, 5]`` (Llerena et al. 2021).

    Each box is the Gaussian with its uniform density's mean and covariance; the score is
    ``1 - Hellinger distance`` derived from the Bhattacharyya distance, clamped as in Ultralytics'
    ``probiou`` (so identical boxes give ``1 - sqrt(2 eps)``, about 0.9996). Symmetric, in ``[0, 1]``.
    """
    a, b = np.broadcast_arrays(as_rboxes(a), as_rboxes(b))
    x1, y1, x2, y2 = a[..., 0], a[..., 1], b[..., 0], b[..., 1]
    a1, b1, c1 = _gaussian_covariance(a)
    a2, b2, c2 = _gaussian_covariance(b)
    sum_a, sum_b, sum_c = a1 + a2, b1 + b2, c1 + c2
    det_sum = sum_a * sum_b - sum_c**2
    t1 = (sum_a * (y1 - y2) ** 2 + sum_b * (x1 - x2) ** 2) / (det_sum + eps) * 0.25
    t2 = (sum_c * (x2 - x1) * (y1 - y2)) / (det_sum + eps) * 0.5
    det_1 = np.clip(a1 * b1 - c1**2, 0, None)
    det_2 = np.clip(a2 * b2 - c2**2, 0, None)
    t3 = 0.5 * np.log(det_sum / (4 * np.sqrt(det_1 * det_2) + eps) + eps)
    bhattacharyya = np.clip(t1 + t2 + t3, eps, 100.0)
    hellinger = np.sqrt(1.0 - np.exp(-bhattacharyya) + eps)
    return 1.0 - hellinger
