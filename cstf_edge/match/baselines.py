"""Point matchers: the :class:`Matcher` protocol and the OpenCV SIFT / ORB baselines.

Baselines work on grayscale images: keypoints and descriptors on each image independently, brute-force
k=2 nearest neighbours from the query to the reference, Lowe's ratio test (best distance < 0.8 x second
best), **no cross-check** (OpenCV's cross-check cannot be combined with the k=2 ratio test). The
confidence of a match is ``1 - d1 / d2`` (0: ambiguous, 1: unique).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import cv2
import numpy as np

from cstf_edge.errors import CstfError

RATIO = 0.8
MATCHERS = ("cstf", "cstf-net", "sift", "orb")  # cstf-net: the network's matches, no dense refinement


@dataclass
class Matches:
    """Correspondences: ``ref_xy[i]`` (reference) matches ``qry_xy[i]`` (query); x = column, y = row,
    OpenCV pixel centres; ``confidence`` in [0, 1]."""

    ref_xy: np.ndarray  # [N, 2] float64
    qry_xy: np.ndarray  # [N, 2] float64
    confidence: np.ndarray  # [N] float64

    def __len__(self) -> int:
        return int(self.ref_xy.shape[0])

    @classmethod
    def empty(cls) -> "Matches":
        return cls(np.zeros((0, 2)), np.zeros((0, 2)), np.zeros(0))


@runtime_checkable
class Matcher(Protocol):
    """What ``eval-match`` runs: a name and ``match(reference_bgr, query_bgr) -> Matches``."""

    name: str

    def match(self, reference_bgr: np.ndarray, query_bgr: np.ndarray) -> Matches:
        ...


def to_gray(image: np.ndarray) -> np.ndarray:
    """8-bit single-channel view of a gray, BGR or BGRA image."""
    if image.ndim == 2:
        return image
    if image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2GRAY)
    return cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)


class OpenCVMatcher:
    """SIFT or ORB keypoints + ratio-tested brute-force matching."""

    def __init__(self, kind: str = "sift", max_features: int = 4000, ratio: float = RATIO):
        if kind not in ("sift", "orb"):
            raise CstfError(f"unknown OpenCV matcher {kind!r}; choose sift or orb")
        self.name = kind
        self.ratio = ratio
        if kind == "sift":
            self._detector = cv2.SIFT_create(nfeatures=max_features)
            self._norm = cv2.NORM_L2
        else:
            self._detector = cv2.ORB_create(nfeatures=max_features)
            self._norm = cv2.NORM_HAMMING

    def _features(self, image: np.ndarray):
        keypoints, descriptors = self._detector.detectAndCompute(to_gray(image), None)
        return keypoints, descriptors

    def match(self, reference_bgr: np.ndarray, query_bgr: np.ndarray) -> Matches:
        """Ratio-tested correspondences between the two images (empty when either has < 2 features)."""
        ref_kp, ref_desc = self._features(reference_bgr)
        qry_kp, qry_desc = self._features(query_bgr)
        if ref_desc is None or qry_desc is None or len(ref_kp) < 2 or len(qry_kp) < 2:
            return Matches.empty()
        knn = cv2.BFMatcher(self._norm, crossCheck=False).knnMatch(qry_desc, ref_desc, k=2)
        good = [(m, n) for m, n in (p for p in knn if len(p) == 2) if m.distance < self.ratio * n.distance]
        if not good:
            return Matches.empty()
        ref_xy = np.array([ref_kp[m.trainIdx].pt for m, _ in good], dtype=np.float64)
        qry_xy = np.array([qry_kp[m.queryIdx].pt for m, _ in good], dtype=np.float64)
        confidence = np.array([1.0 - m.distance / max(n.distance, 1e-12) for m, n in good], dtype=np.float64)
        return Matches(ref_xy, qry_xy, np.clip(confidence, 0.0, 1.0))


def make_matcher(name: str, model: str | None = None, device: str = "cpu", **options) -> Matcher:
    """The matcher called ``name``: ``cstf`` (``model``: a matcher artifact, default the shipped weights;
    ``options`` go to :class:`cstf_edge.match.cstf.CSTFMatch`), ``cstf-net`` (the same without the dense
    refinement), ``sift`` or ``orb``."""
    if name in ("cstf", "cstf-net"):
        from cstf_edge.match.cstf import CSTFMatch

        options["refine"] = name == "cstf" and options.get("refine", True)
        return CSTFMatch(model, device, **options)
    if name not in MATCHERS:
        raise CstfError(f"unknown matcher {name!r}; choose from {', '.join(MATCHERS)}")
    return OpenCVMatcher(name)
