"""The one rotated-box convention of cstf-edge, and conversions to and from DOTA polygons.

Rotated box ``(cx, cy, w, h, angle)``: pixels of the image it refers to, angle in radians measured from
the +x axis towards +y (image y points down, so a positive angle turns clockwise on screen). Canonical
form: ``w >= h`` and ``angle`` in ``[-pi/2, pi/2)``; a square (sides equal to 1e-9 relative) has its angle
reduced to ``[-pi/4, pi/4)`` so that it has a single canonical form too.

Pixel coordinates are continuous: pixel (row i, column j) covers ``[j, j+1) x [i, i+1)``, so its centre
is ``(j + 0.5, i + 0.5)`` and an image of width W spans ``[0, W]``. Under this convention a resize by s
(``cv2.resize``) maps x to s * x and a horizontal flip maps x to W - x exactly. OpenCV's drawing and
``warpAffine`` put pixel centres at integers instead: shift by 0.5 when handing coordinates to them.

Polygon: 4 corners ``(x, y)`` as DOTA writes them, shape ``[..., 4, 2]`` (``[..., 8]`` is accepted too).
``rbox_to_poly`` writes corners in the order (-w/2,-h/2), (+w/2,-h/2), (+w/2,+h/2), (-w/2,+h/2) of the
box frame. ``poly_to_rbox`` returns the minimum-area enclosing rectangle, so a free quadrilateral (DOTA
labels) maps to the smallest rotated box holding it; on rectangles the two are exact inverses.
"""
from __future__ import annotations

import numpy as np

HALF_PI = np.pi / 2
SQUARE_RTOL = 1e-9

# Box-frame corner signs in DOTA order, see the module docstring.
_CORNER_SIGNS = np.array([[-1.0, -1.0], [1.0, -1.0], [1.0, 1.0], [-1.0, 1.0]])
# The 6 unordered pairs of 4 corners: every hull edge of a quadrilateral is one of them.
_PAIRS_I = np.array([0, 0, 0, 1, 1, 2])
_PAIRS_J = np.array([1, 2, 3, 2, 3, 3])


def as_polygons(polys) -> np.ndarray:
    """Return ``polys`` as a float64 array ``[..., 4, 2]`` (accepts ``[..., 8]``)."""
    arr = np.asarray(polys, dtype=np.float64)
    if arr.shape[-1] == 8:
        arr = arr.reshape(arr.shape[:-1] + (4, 2))
    if arr.shape[-2:] != (4, 2):
        raise ValueError(f"polygons must have shape [..., 4, 2] or [..., 8], got {arr.shape}")
    return arr


def as_rboxes(rboxes) -> np.ndarray:
    """Return ``rboxes`` as a float64 array ``[..., 5]``."""
    arr = np.asarray(rboxes, dtype=np.float64)
    if arr.shape[-1] != 5:
        raise ValueError(f"rotated boxes must have shape [..., 5], got {arr.shape}")
    return arr


def canonicalize_rboxes(rboxes) -> np.ndarray:
    """Return boxes in canonical form: ``w >= h``, angle in ``[-pi/2, pi/2)``, squares in ``[-pi/4, pi/4)``.

    A negative or non-finite ``w`` or ``h`` is a ``ValueError`` naming the first such box.
    """
    out = as_rboxes(rboxes).copy()
    w, h, angle = out[..., 2].copy(), out[..., 3].copy(), out[..., 4].copy()
    valid = (w >= 0) & (h >= 0) & (w < np.inf) & (h < np.inf)  # NaN fails every comparison
    if not valid.all():
        first = tuple(int(i) for i in np.argwhere(~valid)[0])
        where = f" at index {list(first)}" if first else ""
        raise ValueError(
            f"rotated box{where} (cx, cy, w, h, angle) = {out[first].tolist()} has a negative or "
            "non-finite w or h; sizes must be finite and >= 0"
        )
    swap = w < h
    out[..., 2] = np.where(swap, h, w)
    out[..., 3] = np.where(swap, w, h)
    angle = np.where(swap, angle + HALF_PI, angle)
    square = np.abs(out[..., 2] - out[..., 3]) <= SQUARE_RTOL * out[..., 2]
    period = np.where(square, HALF_PI, np.pi)
    low = -period / 2
    angle = np.mod(angle - low, period) + low
    angle = np.where(angle >= low + period, angle - period, angle)  # rounding in np.mod
    out[..., 4] = angle
    return out


def box_frame_to_image(rboxes, uv) -> np.ndarray:
    """Image points ``[..., K, 2]`` of points ``uv`` ``[..., K, 2]`` given in the unit frame of boxes
    ``[..., 5]``: u runs along the box's ``w`` side (its angle), v along ``h``, and ``[-0.5, 0.5]^2``
    spans the box. The box is used as given (not canonicalised), so a heading and its length stay put."""
    boxes = as_rboxes(rboxes)
    points = np.asarray(uv, dtype=np.float64)
    cx, cy, w, h, angle = (boxes[..., k, None] for k in range(5))
    cos, sin = np.cos(angle), np.sin(angle)
    u = points[..., 0] * w
    v = points[..., 1] * h
    return np.stack([cx + u * cos - v * sin, cy + u * sin + v * cos], axis=-1)


def rbox_to_poly(rboxes) -> np.ndarray:
    """Corners ``[..., 4, 2]`` of rotated boxes ``[..., 5]`` (see the module docstring for the order)."""
    return box_frame_to_image(rboxes, _CORNER_SIGNS / 2)


def poly_to_rbox(polys) -> np.ndarray:
    """Canonical minimum-area rotated box ``[..., 5]`` enclosing each 4-corner polygon.

    The optimal rectangle has a side along an edge of the convex hull, and every hull edge joins two of
    the four corners, so trying the 6 corner-pair directions is exact. Degenerate polygons work: a
    segment gives ``h = 0``, a single point ``w = h = 0`` and angle 0.
    """
    pts = as_polygons(polys)
    direction = pts[..., _PAIRS_J, :] - pts[..., _PAIRS_I, :]  # [..., 6, 2]
    length = np.hypot(direction[..., 0], direction[..., 1])
    valid = length > 0
    safe = np.where(valid, length, 1.0)
    ux, uy = direction[..., 0] / safe, direction[..., 1] / safe
    ux = np.where(valid, ux, 1.0)
    uy = np.where(valid, uy, 0.0)
    # Project the 4 corners on each candidate axis u and its normal v = (-uy, ux).
    px, py = pts[..., None, :, 0], pts[..., None, :, 1]  # [..., 1, 4]
    proj_u = px * ux[..., None] + py * uy[..., None]  # [..., 6, 4]
    proj_v = -px * uy[..., None] + py * ux[..., None]
    u_min, u_max = proj_u.min(-1), proj_u.max(-1)
    v_min, v_max = proj_v.min(-1), proj_v.max(-1)
    area = np.where(valid, (u_max - u_min) * (v_max - v_min), np.inf)
    best = np.argmin(area, axis=-1)[..., None]
    take = lambda a: np.take_along_axis(a, best, axis=-1)[..., 0]  # noqa: E731
    bu_x, bu_y = take(ux), take(uy)
    mid_u = (take(u_min) + take(u_max)) / 2
    mid_v = (take(v_min) + take(v_max)) / 2
    out = np.stack(
        [
            mid_u * bu_x - mid_v * bu_y,
            mid_u * bu_y + mid_v * bu_x,
            take(u_max) - take(u_min),
            take(v_max) - take(v_min),
            np.arctan2(bu_y, bu_x),
        ],
        axis=-1,
    )
    return canonicalize_rboxes(out)


def poly_to_hbb(polys) -> np.ndarray:
    """Axis-aligned bounds ``[..., 4]`` = ``xmin, ymin, xmax, ymax`` of polygons."""
    pts = as_polygons(polys)
    corners = [pts[..., k, :] for k in range(4)]  # elementwise over 4 corners: faster than a reduction
    low = np.minimum(np.minimum(corners[0], corners[1]), np.minimum(corners[2], corners[3]))
    high = np.maximum(np.maximum(corners[0], corners[1]), np.maximum(corners[2], corners[3]))
    return np.concatenate([low, high], axis=-1)


def rbox_to_hbb(rboxes) -> np.ndarray:
    """Axis-aligned bounds ``[..., 4]`` of rotated boxes."""
    return poly_to_hbb(rbox_to_poly(rboxes))
