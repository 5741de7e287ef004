"""Robust transform estimation from correspondences with OpenCV USAC_MAGSAC.

``similarity`` -> ``cv2.estimateAffinePartial2D``, ``affine`` -> ``cv2.estimateAffine2D``,
``homography`` -> ``cv2.findHomography``, with ``cv2.USAC_MAGSAC`` and a 3 px threshold; OpenCV's USAC
framework has no similarity model (``estimateAffinePartial2D`` rejects USAC methods), so ``similarity``
uses ``cv2.RANSAC`` with the same threshold. A result is
refused (``transform`` None, with the reason) rather than returned when it cannot be trusted: fewer
correspondences than :data:`MIN_INLIERS`, fewer inliers than that, or a degenerate/non-finite matrix.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from cstf_edge.errors import CstfError

TRANSFORMS = ("similarity", "affine", "homography")
MIN_INLIERS = 8
THRESHOLD = 3.0
# |det| of the linear part outside this range means a collapse or an absurd blow-up (scale < 1/100 or > 100).
_DET_RANGE = (1e-4, 1e4)


@dataclass
class Estimate:
    """A 3x3 reference -> query transform, or None with ``reason``; ``inliers`` is a bool mask."""

    transform: np.ndarray | None
    inliers: np.ndarray
    reason: str = ""

    @property
    def num_inliers(self) -> int:
        return int(self.inliers.sum())

    @property
    def ok(self) -> bool:
        return self.transform is not None


def _refuse(n: int, reason: str, inliers: np.ndarray | None = None) -> Estimate:
    return Estimate(None, np.zeros(n, bool) if inliers is None else inliers, reason)


def _fit(src: np.ndarray, dst: np.ndarray, kind: str, threshold: float):
    if kind == "homography":
        return cv2.findHomography(src, dst, cv2.USAC_MAGSAC, threshold)
    if kind == "similarity":
        matrix, mask = cv2.estimateAffinePartial2D(src, dst, method=cv2.RANSAC, ransacReprojThreshold=threshold,
                                                   maxIters=5000, confidence=0.999)
    else:
        matrix, mask = cv2.estimateAffine2D(src, dst, method=cv2.USAC_MAGSAC, ransacReprojThreshold=threshold)
    return (None if matrix is None else np.vstack([matrix, [0.0, 0.0, 1.0]])), mask


def degenerate_reason(transform: np.ndarray) -> str:
    """Why ``transform`` is unusable ("" when it is fine)."""
    if not np.isfinite(transform).all() or abs(transform[2, 2]) < 1e-12:
        return "degenerate transform (non-finite)"
    det = abs(float(np.linalg.det(transform[:2, :2] / transform[2, 2])))
    if not _DET_RANGE[0] < det < _DET_RANGE[1]:
        return f"degenerate transform (|det| {det:.3g})"
    return ""


def estimate_transform(ref_xy: np.ndarray, qry_xy: np.ndarray, kind: str = "affine",
                       threshold: float = THRESHOLD, min_inliers: int = MIN_INLIERS) -> Estimate:
    """The ``kind`` transform mapping ``ref_xy`` to ``qry_xy`` ([N, 2] each), or a refusal."""
    if kind not in TRANSFORMS:
        raise CstfError(f"unknown transform {kind!r}; choose from {', '.join(TRANSFORMS)}")
    n = len(ref_xy)
    if n < min_inliers:
        return _refuse(n, f"too few matches ({n} < {min_inliers})")
    src = np.ascontiguousarray(ref_xy, np.float64).reshape(-1, 1, 2)
    dst = np.ascontiguousarray(qry_xy, np.float64).reshape(-1, 1, 2)
    try:
        matrix, mask = _fit(src, dst, kind, threshold)
    except cv2.error as exc:
        return _refuse(n, f"estimator failed ({str(exc).strip().splitlines()[-1]})")
    inliers = np.zeros(n, bool) if mask is None else mask.ravel().astype(bool)
    if matrix is None:
        return _refuse(n, "no transform found", inliers)
    if inliers.sum() < min_inliers:
        return _refuse(n, f"too few inliers ({int(inliers.sum())} < {min_inliers})", inliers)
    reason = degenerate_reason(matrix)
    if reason:
        return _refuse(n, reason, inliers)
    return Estimate(matrix / matrix[2, 2], inliers)
