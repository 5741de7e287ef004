"""Numba kernel for greedy rotated NMS, imported lazily by ``cstf_edge.geometry.nms``: radix sort by score,
polygons, a uniform grid on the axis-aligned bounds, cheap bounds on the intersection, and exact convex
IoU for the pairs the bounds do not decide.

The exact IoU mirrors the numpy reference (``rbox_to_poly``, ``poly_to_hbb`` and the convex branch of
``iou.polygon_overlap_pairs``) operation for operation in float64, so it is bit-identical and both paths
keep the same boxes; the bounds decide only with a ``BOUND_MARGIN`` to spare. Inputs must be finite and
moderate (the caller falls back to numpy otherwise); rotated boxes are rectangles, so the convex
intersection is enough. Every array lives in a workspace the caller keeps between calls
(``workspace_sizes``): fresh multi-megabyte allocations would cost a page fault per 4 KiB on each call.
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit

# Tolerances of the numpy reference (iou.CROSS_EPS, iou.COLLINEAR_DISTANCE).
CROSS_EPS = 1e-8
COLLINEAR_DISTANCE = 1e-10
# Bounds on the intersection decide a pair without the exact IoU only this far (relative) from the
# threshold; the lower bound only for boxes of more area (px^2) and less elongation than these.
BOUND_MARGIN = 1e-3
CERTAIN_MIN_AREA = 1e-6
CERTAIN_MIN_ASPECT = 1e-3
# The grid has at most this many cells, and cell entries, per box (plus a few cells): linear memory.
CELLS_PER_BOX = 2
ENTRIES_PER_BOX = 4
# Grid cell side over the mean box extent.
CELL_SCALE = 2.0
# Digit width of the radix sort on scores.
RADIX_BITS = 11
RADIX_SIZE = 1 << RADIX_BITS


@njit(cache=True, error_model="numpy")
def _radix_sort(keys, order, spare, counts):
    """Stably re-sort ``order`` by ascending ``keys`` (uint64): a counting sort per ``RADIX_BITS``-bit digit
    where the keys differ. Returns whichever of ``order`` and ``spare`` holds the result."""
    varying, mask = np.uint64(0), np.uint64(RADIX_SIZE - 1)
    for k in order:
        varying |= keys[k] ^ keys[order[0]]
    for shift in range(0, 64, RADIX_BITS):
        if (varying >> np.uint64(shift)) & mask:
            counts[:] = 0
            for k in order:
                counts[(keys[k] >> np.uint64(shift)) & mask] += 1
            total = 0
            for d in range(RADIX_SIZE):
                total, counts[d] = total + counts[d], total
            for k in order:
                d = (keys[k] >> np.uint64(shift)) & mask
                spare[counts[d]] = k
                counts[d] += 1
            order, spare = spare, order
    return order, spare


@njit(cache=True, error_model="numpy")
def score_order(scores, cls, order, spare, keys, counts, codes):
    """Ranks: decreasing score; ties by class, then input index (the numpy paths' order). ``codes`` gets
    each box's class as 0, 1, ... in class order.

    LSD radix sort: by class, then stably by the order-preserving integer image of ``-score``
    (``-0.0`` and ``0.0`` tie, as in a comparison sort). ``keys`` holds 2 N uint64 of scratch."""
    n = len(scores)
    sign = np.uint64(1) << np.uint64(63)
    class_keys, score_keys = keys[:n], keys[n:]
    class_bits, negated = cls.view(np.uint64), score_keys.view(np.float64)
    for k in range(n):
        order[k] = k
        class_keys[k] = class_bits[k] ^ sign
        negated[k] = -scores[k] + 0.0
        bits = score_keys[k]
        score_keys[k] = ~bits if bits & sign else bits | sign
    order, spare = _radix_sort(class_keys, order, spare, counts)
    code = 0
    for k in range(n):
        code += k > 0 and class_keys[order[k]] != class_keys[order[k - 1]]
        codes[order[k]] = code
    return _radix_sort(score_keys, order, spare, counts)[0]


@njit(cache=True, error_model="numpy")
def ranked_polygons(rboxes, order, polys, frames, bounds):
    """Fill ``polys [N, 4, 2]`` with the corners of ``rboxes[order]`` as ``boxes.rbox_to_poly`` computes them,
    ``frames [N, 7]`` with centre x, y, cos, sin, half width, half height, area (for the bounds on the
    intersection) and ``bounds [N, 4]`` with xmin, ymin, xmax, ymax as ``boxes.poly_to_hbb`` does."""
    signs = ((-0.5, -0.5), (0.5, -0.5), (0.5, 0.5), (-0.5, 0.5))
    for r in range(len(order)):
        k = order[r]
        cx, cy, w, h, angle = rboxes[k, 0], rboxes[k, 1], rboxes[k, 2], rboxes[k, 3], rboxes[k, 4]
        cos, sin = math.cos(angle), math.sin(angle)
        for c in range(4):
            u, v = signs[c][0] * w, signs[c][1] * h
            polys[r, c, 0] = cx + u * cos - v * sin
            polys[r, c, 1] = cy + u * sin + v * cos
        frames[r, 0], frames[r, 1], frames[r, 2], frames[r, 3] = cx, cy, cos, sin
        frames[r, 4], frames[r, 5], frames[r, 6] = 0.5 * abs(w), 0.5 * abs(h), abs(w * h)
        for d in range(2):
            c0, c1, c2, c3 = polys[r, 0, d], polys[r, 1, d], polys[r, 2, d], polys[r, 3, d]
            bounds[r, d] = min(min(c0, c1), min(c2, c3))
            bounds[r, 2 + d] = max(max(c0, c1), max(c2, c3))


@njit(cache=True, error_model="numpy", inline="always")
def _cell(value, origin, inverse, count):
    """Grid index of ``value`` along one axis: monotone, so closed overlapping bounds share a cell."""
    return min(max(int((value - origin) * inverse), 0), count - 1)


@njit(cache=True, error_model="numpy")
def grid_shape(bounds, cells):
    """Grid ``(x0, y0, inverse cell side, nx, ny)`` over ``bounds``, and ``cells [N, 4]`` filled with each
    box's first and last cell along x, then y: cells ``CELL_SCALE`` times the mean box extent, widened
    until the caps on cells and entries hold (at the latest one cell holds every box once)."""
    n = len(bounds)
    x0, y0 = bounds[:, 0].min(), bounds[:, 1].min()
    width, height = bounds[:, 2].max() - x0, bounds[:, 3].max() - y0
    extent = 0.0
    for r in range(n):
        extent += max(bounds[r, 2] - bounds[r, 0], bounds[r, 3] - bounds[r, 1])
    side = CELL_SCALE * extent / n if extent > 0 else 1.0
    while True:
        side, inverse, entries = side * 1.5, 1.0 / side, 0
        if (width * inverse + 1.0) * (height * inverse + 1.0) > CELLS_PER_BOX * n + 16:
            continue
        nx, ny = int(width * inverse) + 1, int(height * inverse) + 1
        for r in range(n):
            cells[r, 0], cells[r, 1] = _cell(bounds[r, 0], x0, inverse, nx), _cell(bounds[r, 2], x0, inverse, nx)
            cells[r, 2], cells[r, 3] = _cell(bounds[r, 1], y0, inverse, ny), _cell(bounds[r, 3], y0, inverse, ny)
            entries += (cells[r, 1] - cells[r, 0] + 1) * (cells[r, 3] - cells[r, 2] + 1)
        if entries <= ENTRIES_PER_BOX * n:
            return x0, y0, inverse, nx, ny


@njit(cache=True, error_model="numpy", inline="always")
def _outward(value, up):
    """``value`` as a float32 on the far side of it from the box (below a lower bound, above an upper one):
    moved out by 2^-22 of itself first, more than float32 rounding can take back."""
    shift = abs(value) * 2.0 ** -22 + 1e-30
    return np.float32(value + shift if up else value - shift)


@njit(cache=True, error_model="numpy")
def fill_grid(bounds, areas, cls, cells, nx, starts, fill, rows):
    """Each cell ``c`` keeps 4 lists ``4 c + kind`` of the ranks covering it, ascending, in rows
    ``starts[l]:starts[l + 1]`` of ``rows`` (float32 [M, 7]; as int32: rank, class; as float32: bounds
    rounded outwards, area): what the scan needs, in small contiguous blocks. ``kind`` bit 0: the box
    starts in an earlier column; bit 1: in an earlier row. ``fill`` is scratch."""
    ids = rows.view(np.int32)
    starts[:] = 0
    for r in range(len(bounds)):
        for gy in range(cells[r, 2], cells[r, 3] + 1):
            for gx in range(cells[r, 0], cells[r, 1] + 1):
                starts[4 * (gy * nx + gx) + (gx > cells[r, 0]) + 2 * (gy > cells[r, 2]) + 1] += 1
    for c in range(1, len(starts)):
        starts[c] += starts[c - 1]
    fill[:] = starts[:-1]
    for r in range(len(bounds)):
        low_x, low_y = _outward(bounds[r, 0], False), _outward(bounds[r, 1], False)
        high_x, high_y, area = _outward(bounds[r, 2], True), _outward(bounds[r, 3], True), np.float32(areas[r])
        for gy in range(cells[r, 2], cells[r, 3] + 1):
            for gx in range(cells[r, 0], cells[r, 1] + 1):
                at = 4 * (gy * nx + gx) + (gx > cells[r, 0]) + 2 * (gy > cells[r, 2])
                m = fill[at]
                ids[m, 0], ids[m, 1] = r, cls[r]
                rows[m, 2], rows[m, 3], rows[m, 4], rows[m, 5], rows[m, 6] = low_x, low_y, high_x, high_y, area
                fill[at] = m + 1


@njit(cache=True, error_model="numpy", inline="always")
def _local_polygon(polys, r, ox, oy, buf, at):
    """Write polygon ``r`` relative to ``(ox, oy)`` into ``buf[at:at + 8]`` (x, y per corner) turning
    positively; return its signed shoelace area (``iou.polygon_area``)."""
    for c in range(4):
        buf[at + 2 * c] = polys[r, c, 0] - ox
        buf[at + 2 * c + 1] = polys[r, c, 1] - oy
    area = 0.0
    for c in range(4):
        n = at + 2 * ((c + 1) % 4)
        area += buf[at + 2 * c] * buf[n + 1] - buf[at + 2 * c + 1] * buf[n]
    area = 0.5 * area
    if area < 0:  # reverse the corner order
        for c in range(2):
            for d in range(2):
                one, other = at + 2 * c + d, at + 2 * (3 - c) + d
                buf[one], buf[other] = buf[other], buf[one]
    return area


@njit(cache=True, error_model="numpy", inline="always")
def _line_distance(side, slope, dx, dy):
    """Distance of the farther end of an edge to a line (``iou._edge_sides``); inf for a zero-length line."""
    length = math.hypot(dx, dy)
    return max(abs(side), abs(side + slope)) / length if length > 0 else np.inf


@njit(cache=True, error_model="numpy", inline="always")
def _cut_by_line(ex, ey, edx, edy, lx, ly, ldx, ldy, lo, hi, gone, from_p):
    """Cut the parameter range ``[lo, hi]`` of edge ``e + t * ed`` to the left of line ``l + s * ld``
    (Cyrus-Beck, ``iou._clip_segments``). An edge on the line (``iou._convex_intersection_area``) goes,
    unless it belongs to p and runs the same way (counted once), when the line constrains nothing."""
    side, slope = ldx * (ey - ly) - ldy * (ex - lx), ldx * edy - ldy * edx
    if max(abs(side), abs(side + slope)) <= 2.0 * COLLINEAR_DISTANCE * (abs(ldx) + abs(ldy)):  # else far
        if (_line_distance(side, slope, ldx, ldy) <= COLLINEAR_DISTANCE and _line_distance(
                edx * (ly - ey) - edy * (lx - ex), edx * ldy - edy * ldx, edx, edy) <= COLLINEAR_DISTANCE):
            return lo, hi, gone | (not (from_p and ldx * edx + ldy * edy > 0))
    cut = -side / slope  # inf or nan on a parallel line: not selected below
    low = cut if slope > 0 else 0.0
    high = cut if slope < 0 else 1.0
    return low if low > lo else lo, high if high < hi else hi, gone | ((slope == 0) & (side < 0))


@njit(cache=True, error_model="numpy", inline="always")
def _edge_share(buf, at, e, other, from_p):
    """Green's-theorem share ``start x end`` of edge ``e`` of the quadrilateral at ``buf[at:at + 8]`` clipped
    to the inside of the one at ``buf[other:other + 8]``."""
    ex, ey = buf[at + 2 * e], buf[at + 2 * e + 1]
    edx, edy = buf[at + (2 * e + 2) % 8] - ex, buf[at + (2 * e + 3) % 8] - ey
    lo, hi, gone = 0.0, 1.0, False
    for j in range(4):
        lx, ly = buf[other + 2 * j], buf[other + 2 * j + 1]
        ldx, ldy = buf[other + (2 * j + 2) % 8] - lx, buf[other + (2 * j + 3) % 8] - ly
        lo, hi, gone = _cut_by_line(ex, ey, edx, edy, lx, ly, ldx, ldy, lo, hi, gone, from_p)
    share = (ex + lo * edx) * (ey + hi * edy) - (ey + lo * edy) * (ex + hi * edx)
    return share if not gone and lo < hi else 0.0


@njit(cache=True, error_model="numpy", inline="always")
def convex_iou(buf, area_p, area_q):
    """Exact IoU of the positively turning convex quadrilaterals p = ``buf[0:8]`` and q = ``buf[8:16]`` of
    signed areas ``area_p``, ``area_q``: Green's theorem over both boundaries (``iou.polygon_iou_pairs``),
    each boundary's edge shares summed in order and halved (``iou._clip_segments``)."""
    inter = 0.0
    if abs(area_p) > CROSS_EPS and abs(area_q) > CROSS_EPS:  # zero-area polygons intersect nothing
        for side in range(2):
            total = 0.0
            for e in range(4):
                total += _edge_share(buf, 8 * side, e, 8 - 8 * side, side == 0)
            inter += 0.5 * total
    union = abs(area_p) + abs(area_q) - inter
    return inter / union if union > 0 else 0.0


@njit(cache=True, error_model="numpy")
def pair_iou(polys, a, b, buf):
    """Exact IoU of polygons ``a`` and ``b`` (``[N, 4, 2]`` rows) relative to the first corner of ``a``;
    ``buf`` holds 16 floats of scratch."""
    area_p = _local_polygon(polys, a, polys[a, 0, 0], polys[a, 0, 1], buf, 0)
    area_q = _local_polygon(polys, b, polys[a, 0, 0], polys[a, 0, 1], buf, 8)
    return convex_iou(buf, area_p, area_q)


@njit(cache=True, error_model="numpy", inline="always")
def _in_frame(frames, a, b):
    """Box ``b`` seen from box ``a``'s frame: its centre (along, across ``a``'s axes) and ``|cos|``,
    ``|sin|`` of the angle between them."""
    cos, sin = frames[a, 2], frames[a, 3]
    dx, dy = frames[b, 0] - frames[a, 0], frames[b, 1] - frames[a, 1]
    return (dx * cos + dy * sin, dy * cos - dx * sin,
            abs(cos * frames[b, 2] + sin * frames[b, 3]), abs(cos * frames[b, 3] - sin * frames[b, 2]))


@njit(cache=True, error_model="numpy", inline="always")
def _overlap_in_frame(frames, a, along, across, reach_u, reach_v):
    """Overlap area of box ``a`` with the rectangle of half sides ``reach_u, reach_v`` centred at
    ``(along, across)`` in ``a``'s frame."""
    half_w, half_h = frames[a, 4], frames[a, 5]
    overlap_u = min(half_w, along + reach_u) - max(-half_w, along - reach_u)
    overlap_v = min(half_h, across + reach_v) - max(-half_h, across - reach_v)
    return max(overlap_u, 0.0) * max(overlap_v, 0.0)


@njit(cache=True, error_model="numpy", inline="always")
def _frame_overlap(frames, a, b):
    """Overlap of box ``a`` with the extents of box ``b`` along ``a``'s axes: an upper bound on their
    intersection (``iou.intersection_upper_bound``)."""
    along, across, turn_cos, turn_sin = _in_frame(frames, a, b)
    wide, tall = frames[b, 4], frames[b, 5]
    return _overlap_in_frame(frames, a, along, across, wide * turn_cos + tall * turn_sin,
                             wide * turn_sin + tall * turn_cos)


@njit(cache=True, error_model="numpy", inline="always")
def _inscribed_overlap(frames, a, b):
    """Overlap of box ``a`` with a rectangle aligned with ``a``'s axes, centred on and inscribed in box
    ``b``: a lower bound on their intersection. Its corners touch both pairs of ``b``'s sides, or it has
    ``b``'s proportions where that has no solution."""
    along, across, turn_cos, turn_sin = _in_frame(frames, a, b)
    wide, tall = frames[b, 4], frames[b, 5]
    if turn_sin > turn_cos:  # b turned past 45 degrees: the same box with its sides swapped
        turn_cos, turn_sin, wide, tall = turn_sin, turn_cos, tall, wide
    det = turn_cos * turn_cos - turn_sin * turn_sin
    reach_u, reach_v = (wide * turn_cos - tall * turn_sin) / det, (tall * turn_cos - wide * turn_sin) / det
    if not (reach_u > 0 and reach_v > 0):
        scale = min(wide / (wide * turn_cos + tall * turn_sin), tall / (wide * turn_sin + tall * turn_cos))
        reach_u, reach_v = scale * wide, scale * tall
    return _overlap_in_frame(frames, a, along, across, reach_u, reach_v)


@njit(cache=True, error_model="numpy", inline="always")
def _suppresses(polys, frames, bounds, keeper, area_p, r, threshold, buf):
    """Whether the IoU of ``keeper`` (local polygon in ``buf[0:8]``, area ``area_p``) and ``r`` exceeds
    ``threshold``: by bounds on the intersection where they decide with a ``BOUND_MARGIN`` to spare, else
    exactly. IoU > t means intersection (1 + t) > t (A + B). The lower bound serves only boxes clear of the
    zero-area rule and of extreme elongation, where the exact IoU is far more accurate than the margin."""
    area_a, area_b = frames[keeper, 6], frames[r, 6]
    if threshold <= 0:  # every pair whose exact bounds meet is compared, as in the reference
        if (bounds[r, 0] > bounds[keeper, 2] or bounds[keeper, 0] > bounds[r, 2]
                or bounds[r, 1] > bounds[keeper, 3] or bounds[keeper, 1] > bounds[r, 3]):
            return False
    else:
        need = threshold * (area_a + area_b)
        if min(_frame_overlap(frames, keeper, r), _frame_overlap(frames, r, keeper)) * (1.0 + threshold) * (
                1.0 + BOUND_MARGIN) < need:
            return False
        clear = min(area_a, area_b) > CERTAIN_MIN_AREA
        for k in (keeper, r):
            clear &= min(frames[k, 4], frames[k, 5]) > CERTAIN_MIN_ASPECT * max(frames[k, 4], frames[k, 5])
        if clear and max(_inscribed_overlap(frames, keeper, r), _inscribed_overlap(frames, r, keeper)) * (
                1.0 + threshold) > need * (1.0 + BOUND_MARGIN):
            return True
    area_q = _local_polygon(polys, r, polys[keeper, 0, 0], polys[keeper, 0, 1], buf, 8)
    return convex_iou(buf, area_p, area_q) > threshold


@njit(cache=True, error_model="numpy")
def greedy_keep(polys, frames, bounds, codes, threshold, grid, alive, pending, buf):
    """Fill ``alive [N]`` over ranks after greedy suppression: each kept rank kills the later live ranks
    of its class whose exact IoU with it exceeds ``threshold``.

    A pair is met once, in the cell of the low corner of the overlap of the two boxes' cells: there the
    kept rank scans the lists (see ``fill_grid``) of boxes that start in the cell's column unless it
    does too, and in its row unless it does too, from past its own rank (lists are rank-ordered), and
    drops dead entries on the way. Pairs the bounds' overlap does not rule out are decided after the scan
    (``pending``), which keeps the scan loop small. No array-passing calls inside: numba
    reference-counts every array handed to a call."""
    cells, nx, starts, table, rows = grid
    ids = rows.view(np.int32)
    table[:, 0], table[:, 1] = starts[:-1], starts[1:]  # per list: next entry to scan, end
    alive[:] = True
    scale, cut = ((1.0 + threshold) * (1.0 + BOUND_MARGIN), threshold) if threshold > 0 else (1.0, 0.0)
    for keeper in range(len(polys)):
        if not alive[keeper]:
            continue
        kx0, ky0, kx1, ky1 = bounds[keeper, 0], bounds[keeper, 1], bounds[keeper, 2], bounds[keeper, 3]
        area_k, klass, waiting = frames[keeper, 6], codes[keeper], 0
        for gy in range(cells[keeper, 2], cells[keeper, 3] + 1):
            for gx in range(cells[keeper, 0], cells[keeper, 1] + 1):
                for kind in range(4):
                    if (gx > cells[keeper, 0] and kind & 1) or (gy > cells[keeper, 2] and kind & 2):
                        continue  # such pairs meet in an earlier cell
                    at = 4 * (gy * nx + gx) + kind
                    pos, end = table[at, 0], table[at, 1]
                    while pos < end and ids[pos, 0] <= keeper:  # no later keeper needs these again
                        pos += 1
                    table[at, 0] = write = pos
                    for m in range(pos, end):
                        r = ids[m, 0]
                        if not alive[r]:
                            continue
                        if write != m:
                            for k in range(7):
                                ids[write, k] = ids[m, k]
                        write += 1
                        rx0, ry0, rx1, ry1, area_r = rows[m, 2], rows[m, 3], rows[m, 4], rows[m, 5], rows[m, 6]
                        # Branch-free: bounds meet (rounded outwards: never apart when the exact ones meet),
                        # same class, and the overlap area does not put the IoU safely at or below the
                        # threshold.
                        overlap = (min(kx1, rx1) - max(kx0, rx0)) * (min(ky1, ry1) - max(ky0, ry0))
                        candidate = ((rx0 <= kx1) & (kx0 <= rx1) & (ry0 <= ky1) & (ky0 <= ry1) & (ids[m, 1] == klass)
                                     & (min(overlap, min(area_k, area_r)) * scale >= cut * (area_k + area_r)))
                        pending[waiting] = r
                        waiting += candidate
                    table[at, 1] = write
        area_p = _local_polygon(polys, keeper, polys[keeper, 0, 0], polys[keeper, 0, 1], buf, 0)
        for i in range(waiting):
            if _suppresses(polys, frames, bounds, keeper, area_p, pending[i], threshold, buf):
                alive[pending[i]] = False


def workspace_sizes(n: int) -> tuple[int, int, int]:
    """Lengths of the int64, float64 and bool workspaces ``nms_kernel`` needs for ``n`` boxes."""
    lists, entries = 4 * (CELLS_PER_BOX * n + 16), ENTRIES_PER_BOX * n
    return 11 * n + 3 * lists + 1 + RADIX_SIZE, 19 * n + 16 + (7 * entries + 1) // 2, n


@njit(cache=True, error_model="numpy")
def nms_kernel(rboxes, scores, cls, threshold, ints, floats, flags):
    """Greedy rotated NMS within each class of ``cls`` (int64); the kept indices, in rank order, are
    written to ``ints[:k]`` and ``k`` is returned. The workspaces have ``workspace_sizes(N)`` lengths."""
    n = len(scores)
    if n == 0:
        return 0
    codes, ranked_codes = ints[2 * n:3 * n], ints[10 * n:11 * n]
    order = score_order(scores, cls, ints[:n], ints[n:2 * n], ints[3 * n:5 * n].view(np.uint64),
                        ints[len(ints) - RADIX_SIZE:], codes)
    for r in range(n):
        ranked_codes[r] = codes[order[r]]
    cells, pending = ints[5 * n:9 * n].reshape((n, 4)), ints[9 * n:10 * n]
    polys, frames = floats[:8 * n].reshape((n, 4, 2)), floats[8 * n:15 * n].reshape((n, 7))
    bounds, buf = floats[15 * n:19 * n].reshape((n, 4)), floats[19 * n:19 * n + 16]
    ranked_polygons(rboxes, order, polys, frames, bounds)
    nx, ny = grid_shape(bounds, cells)[3:]
    lists, entries, at = 4 * nx * ny, ENTRIES_PER_BOX * n, 19 * n + 16
    starts, table = ints[11 * n:11 * n + lists + 1], ints[11 * n + lists + 1:11 * n + 3 * lists + 1].reshape((lists, 2))
    rows = floats[at:at + (7 * entries + 1) // 2].view(np.float32)[:7 * entries].reshape((entries, 7))
    fill_grid(bounds, frames[:, 6], ranked_codes, cells, nx, starts, table[:, 0], rows)
    grid = (cells, nx, starts, table, rows)
    greedy_keep(polys, frames, bounds, ranked_codes, threshold, grid, flags[:n], pending, buf)
    kept = 0
    for r in range(n):  # ``order`` is ints[:n] or ints[n:2n]; either way ints[:kept] is free to write
        if flags[r]:
            ints[kept] = order[r]
            kept += 1
    return kept
