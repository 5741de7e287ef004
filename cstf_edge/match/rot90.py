"""Quarter-turn rotations of an image and the matching 3x3 transform (continuous pixel coordinates).

The CSTF matcher's descriptors tolerate about +-45 degrees of rotation; larger rotations are found by
trying the query turned by 0, 1, 2, 3 quarter turns (``np.rot90``, exact, no resampling). Training
turns its pairs the same way (``cstf_edge.data.match_pairs``), so both sides share this one definition.
"""
from __future__ import annotations

import numpy as np


def rot90_matrix(k: int, width: int, height: int) -> np.ndarray:
    """3x3 matrix taking continuous (x, y) of a ``width x height`` image to the image ``np.rot90(img, k)``.

    One counter-clockwise quarter turn maps ``(x, y)`` to ``(y, width - x)`` (the new image is
    ``height`` wide and ``width`` tall); ``k`` turns compose that ``k mod 4`` times.
    """
    matrix = np.eye(3)
    for _ in range(k % 4):
        matrix = np.array([[0.0, 1.0, 0.0], [-1.0, 0.0, float(width)], [0.0, 0.0, 1.0]]) @ matrix
        width, height = height, width
    return matrix


def rotate90(image: np.ndarray, k: int) -> np.ndarray:
    """``image`` turned ``k`` quarter turns counter-clockwise (contiguous copy)."""
    return np.ascontiguousarray(np.rot90(image, k % 4))


def quarter_turns(transform: np.ndarray) -> int:
    """How many counter-clockwise quarter turns of the query undo most of the rotation of the
    reference -> query ``transform`` (the residual is within +-45 degrees)."""
    angle = np.arctan2(transform[1, 0] - transform[0, 1], transform[0, 0] + transform[1, 1])
    return int(np.round(angle / (np.pi / 2))) % 4
