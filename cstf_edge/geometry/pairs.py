"""Candidate pairs by axis-aligned overlap: the cheap filter in front of exact polygon IoU (NMS, matching)."""
from __future__ import annotations

import numpy as np


def expand_ranges(lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every ``(i, j)`` with ``lo[i] <= j < hi[i]``, grouped by ``i`` ascending."""
    counts = np.maximum(hi - lo, 0)
    rows = np.repeat(np.arange(len(lo)), counts)
    cols = np.arange(len(rows)) + np.repeat(lo - (np.cumsum(counts) - counts), counts)
    return rows, cols


def overlapping_pairs(bounds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pairs ``(i, j)``, ``i < j``, of boxes ``[N, 4]`` (xmin, ymin, xmax, ymax) whose closed bounds overlap.

    Sort and sweep on xmin: box ``i``'s candidates are the boxes after it in xmin order that start before
    it ends; the y test then keeps the real overlaps. The cost follows the number of x-overlapping pairs.
    """
    bounds = np.asarray(bounds, dtype=np.float64).reshape(-1, 4)
    by_x = np.argsort(bounds[:, 0], kind="stable")
    sorted_bounds = bounds[by_x]
    ends = np.searchsorted(sorted_bounds[:, 0], sorted_bounds[:, 2], side="right")
    first, second = expand_ranges(np.arange(1, len(bounds) + 1), ends)
    y_overlap = (sorted_bounds[first, 1] <= sorted_bounds[second, 3]) & (
        sorted_bounds[second, 1] <= sorted_bounds[first, 3])
    a, b = by_x[first[y_overlap]], by_x[second[y_overlap]]
    return np.minimum(a, b), np.maximum(a, b)
