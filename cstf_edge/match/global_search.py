"""Global search for a registration the network did not find: the CSTF matcher's last resort.

Where the network's passes give no transform that the dense refinement (:mod:`cstf_edge.match.refine`)
can confirm, the pair is searched exhaustively at low resolution, in the manner of template-matching
registration with orientation channels (CFOG, Ye et al., IEEE TGRS 2019, which also searches by
correlation): both images are reduced so the longer side of the larger is :data:`WORK_SIDE` px; the query
is turned by every multiple of :data:`ANGLE_STEP` degrees (and scaled by each of :data:`SCALES`), the
central square of its orientation channels (a :data:`TEMPLATE_FRACTION` of its shorter side: inside the
turned query at scales 1 and 1.41; at 0.71 up to 5 % of it falls on the turned query's black corners, which
the tuning pairs preferred to a smaller square, 83 against 81 confirmed) is correlated over the whole
reference (zero-mean normalised cross-correlation, OpenCV ``matchTemplate``), and the best :data:`CANDIDATES`
peaks become similarity transforms. The caller
hands each to the dense refinement, and a candidate is accepted only when the refinement's affine fit has at
least :data:`MIN_INLIERS` inliers at 3 px (the network's start needs 12: a candidate from a blind search needs
stronger support; on the tuning pairs every wrong candidate the refinement accepted had 12-38 inliers, every
right one but three had more than 40). So this stage proposes and never decides alone. Settings were chosen
on the tuning pairs (see ``refine``), never on the SRIF test pairs.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from cstf_edge.match.baselines import Matches, to_gray
from cstf_edge.match.estimate import estimate_transform
from cstf_edge.match.refine import orientation_channels, refine_registration, scaling

WORK_SIDE = 128  # px: longer side of the larger image during the search
ANGLE_STEP = 6  # degrees between the turns tried (a full circle)
SCALES = (0.71, 1.0, 1.41)  # scalings of the query tried (reference px per query px): steps of sqrt(2)
TEMPLATE_FRACTION = 0.6  # of the turned query's shorter side: the central square that is correlated
CANDIDATES = 3
MIN_TEMPLATE = 24  # px at the working resolution: smaller images are not searched
MIN_INLIERS = 40  # of the refinement's affine fit, to accept a candidate (the network's start needs 12)


@dataclass(frozen=True)
class Candidate:
    """A proposed registration: ``transform`` 3x3 reference -> query (OpenCV pixels), its peak ``score``, and
    the turn (degrees, OpenCV's sense) and scaling of the query that matched."""

    transform: np.ndarray
    score: float
    angle: float
    scale: float


def _correlate(reference: np.ndarray, template: np.ndarray) -> np.ndarray:
    """Zero-mean NCC of an 8-channel template over an 8-channel image (two 4-channel halves averaged)."""
    halves = [np.s_[..., :4], np.s_[..., 4:]]
    return sum(cv2.matchTemplate(np.ascontiguousarray(reference[h]), np.ascontiguousarray(template[h]),
                                 cv2.TM_CCOEFF_NORMED) for h in halves) / 2.0


def _turned(query: np.ndarray, angle: float, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """``query`` turned by ``angle`` degrees and scaled by ``scale`` about its centre (same canvas size), and
    the 3x3 map of query pixels into the canvas."""
    h, w = query.shape[:2]
    matrix = np.vstack([cv2.getRotationMatrix2D(((w - 1) / 2.0, (h - 1) / 2.0), angle, scale), [0.0, 0.0, 1.0]])
    return cv2.warpAffine(query, matrix[:2], (w, h), flags=cv2.INTER_LINEAR), matrix


def search(reference: np.ndarray, query: np.ndarray) -> list[Candidate]:
    """The :data:`CANDIDATES` best-scoring registrations of ``query`` on ``reference`` (images: gray, BGR or
    BGRA), best first; empty when the images are too small to search. Both images are reduced by one factor
    (the larger to :data:`WORK_SIDE`), so a query under about a third of the reference's size is too small.
    Candidates are the best peaks over all turns and scales, not thinned: the runners-up are often the same
    place at a neighbouring turn, which gives the refinement another start (on the tuning pairs, thinning them
    to distinct places confirmed 77 of 108 instead of 83)."""
    ref_gray, qry_gray = to_gray(np.asarray(reference)), to_gray(np.asarray(query))
    factor = min(1.0, WORK_SIDE / max(*ref_gray.shape, *qry_gray.shape))
    to_work = scaling(factor)
    ref_small = cv2.resize(ref_gray, None, fx=factor, fy=factor, interpolation=cv2.INTER_AREA)
    qry_small = cv2.resize(qry_gray, None, fx=factor, fy=factor, interpolation=cv2.INTER_AREA)
    side = int(TEMPLATE_FRACTION * min(qry_small.shape))
    if side < MIN_TEMPLATE or min(ref_small.shape) < side:
        return []
    ref_channels = orientation_channels(ref_small)
    h, w = qry_small.shape
    top, left = (h - side) // 2, (w - side) // 2
    peaks = []
    for scale in SCALES:
        for angle in np.arange(0.0, 360.0, ANGLE_STEP):
            canvas, to_canvas = _turned(qry_small, float(angle), scale)
            template = orientation_channels(canvas)[top:top + side, left:left + side]
            scores = _correlate(ref_channels, template)
            _, best, _, (x, y) = cv2.minMaxLoc(scores)
            # canvas point (left, top) lies on reference point (x, y): reference -> canvas is a shift
            ref_to_canvas = np.array([[1.0, 0.0, left - x], [0.0, 1.0, top - y], [0.0, 0.0, 1.0]])
            transform = np.linalg.inv(to_work) @ np.linalg.inv(to_canvas) @ ref_to_canvas @ to_work
            peaks.append(Candidate(transform, float(best), float(angle), scale))
    peaks.sort(key=lambda c: -c.score)
    return peaks[:CANDIDATES]


def register(reference: np.ndarray, query: np.ndarray) -> Matches | None:
    """The refinement's correspondences from the first candidate of :func:`search` that it confirms with at
    least :data:`MIN_INLIERS` inliers, or None."""
    for candidate in search(reference, query):
        refined = refine_registration(reference, query, candidate.transform)
        if refined is None:
            continue
        fit = estimate_transform(refined.ref_xy, refined.qry_xy, "affine")
        if fit.ok and fit.num_inliers >= MIN_INLIERS:
            return refined
    return None
