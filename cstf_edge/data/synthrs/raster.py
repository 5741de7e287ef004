"""Drawing in the project's pixel convention: the one place SynthRS hands coordinates to OpenCV.

Scene coordinates are continuous (``cstf_edge.geometry.boxes``): pixel (row i, column j) covers
``[j, j+1) x [i, i+1)`` and its centre is ``(j + 0.5, i + 0.5)``. OpenCV draws with pixel centres at
integers, so every point is moved by -0.5 before it is written in cv2's fixed point (``DRAW_SHIFT``
fractional bits); a shape drawn here is centred where its label says.
"""
from __future__ import annotations

import cv2
import numpy as np

# Fixed-point precision for sub-pixel cv2 drawing (coordinates are multiplied by 2**DRAW_SHIFT).
DRAW_SHIFT = 4
DRAW_SCALE = float(1 << DRAW_SHIFT)


def to_cv_points(points) -> np.ndarray:
    """Continuous pixel coordinates ``[..., 2]`` as the int32 ``[K, 1, 2]`` fixed-point array cv2 draws
    with ``shift=DRAW_SHIFT`` (pixel centres at integers)."""
    shifted = (np.asarray(points, np.float64) - 0.5) * DRAW_SCALE
    return np.round(shifted).astype(np.int32).reshape(-1, 1, 2)


def fill_polygons(canvas: np.ndarray, polygons, value, line_type: int = cv2.LINE_8) -> None:
    """Fill each polygon ``[K, 2]`` of ``polygons`` (continuous coordinates) with ``value``."""
    cv2.fillPoly(canvas, [to_cv_points(p) for p in polygons], value, line_type, DRAW_SHIFT)


def draw_polyline(canvas: np.ndarray, points, value, thickness: float, closed: bool = False,
                  line_type: int = cv2.LINE_8) -> None:
    """Draw a polyline through ``points`` ``[K, 2]``, ``thickness`` pixels wide (at least 1)."""
    width = max(1, int(round(thickness)))
    cv2.polylines(canvas, [to_cv_points(points)], closed, value, width, line_type, DRAW_SHIFT)


def fill_circle(canvas: np.ndarray, x: float, y: float, radius: float, value,
                line_type: int = cv2.LINE_8) -> None:
    """Fill the disc of ``radius`` pixels centred at the continuous point ``(x, y)``."""
    (cx, cy), = to_cv_points([x, y])[:, 0]
    cv2.circle(canvas, (int(cx), int(cy)), int(round(radius * DRAW_SCALE)), value, -1, line_type, DRAW_SHIFT)
