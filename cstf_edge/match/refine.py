"""Dense structural refinement of a registration: the last stage of the CSTF matcher.

The network's correspondences are sub-pixel, but an affine fit over them is still 1-6 px off on many
pairs: their errors are correlated over the image (the windowed SoftMax expectation shrinks towards the
token centre, and texture and modality pull whole regions the same way), so averaging hundreds of them
does not remove the bias. This stage keeps the network for what it does well (finding the transform
across modalities, rotations and scales) and measures the last pixels densely:

* **Descriptor**: orientation channels in the manner of CFOG (Ye et al., "Fast and Robust Matching for
  Multimodal Remote Sensing Image Registration", IEEE TGRS 2019): the gradient projected on
  :data:`BINS` orientations over [0, pi), absolute value (a contrast reversal between sensors leaves it
  unchanged), smoothed by a Gaussian in space and by [1, 2, 1] / 4 across orientations, normalised per
  pixel.
* **Search**: the query is resampled into the reference's frame by the current transform. Templates of
  the reference descriptor on a grid (the :data:`MAX_TEMPLATES` most structured: highest variance) are
  searched in a small window of the resampled query by zero-mean normalised cross-correlation over all
  channels (OpenCV ``matchTemplate``), the peak located to sub-pixel by a parabola in x and in y. A peak
  is kept when it reaches :data:`MIN_SCORE`, beats the best score outside its 5 x 5 neighbourhood by
  :data:`MIN_MARGIN`, and is not on the window's edge.
* **Levels**: half resolution first (a search of +-16 px of the full image), then full resolution
  (+-3 px); each level's affine fit (USAC_MAGSAC, 3 px) aligns the next.

The result is the last level's correspondences (reference template centres and their query points), or
None when a level finds nothing or the last fit has fewer than :data:`MIN_INLIERS` inliers: the caller
then keeps the network's matches. All settings were chosen on tuning pairs (SynthRS seed 6, and DOTA /
HRSC2016 images with synthetic modality changes from ``benchmarks/make_match_pairs.py``, seed 7), never on
the SRIF test pairs.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from cstf_edge.match.baselines import Matches, to_gray
from cstf_edge.match.estimate import estimate_transform


@dataclass(frozen=True)
class Level:
    """One level of the search: image ``scale``, template half side, search radius and template grid step
    (pixels of that scale)."""

    scale: float
    half: int
    radius: int
    step: int


BINS = 8  # orientations; two 4-channel halves for OpenCV's matchTemplate
SIGMA = 0.8  # spatial smoothing of the orientation channels, px
LEVELS = (Level(0.5, 7, 8, 8), Level(1.0, 15, 3, 12))
MAX_TEMPLATES = 150
MIN_SCORE = 0.3
MIN_MARGIN = 0.02
MIN_INLIERS = 12
MAX_SIDE = 1024  # px: larger images are refined reduced to this (memory and time grow with the image)
FLAT = 1e-3  # a search window whose descriptor variance per pixel is below this scores 0 (no structure)
_ANGLES = np.pi * np.arange(BINS) / BINS
_COS, _SIN = np.cos(_ANGLES), np.sin(_ANGLES)


def orientation_channels(gray: np.ndarray) -> np.ndarray:
    """``[H, W] uint8/float`` -> ``[H, W, BINS] float32``, each pixel's channels of unit norm (module doc)."""
    image = gray.astype(np.float32)
    gx = cv2.Sobel(image, cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(image, cv2.CV_32F, 0, 1, ksize=3)
    raw = [cv2.GaussianBlur(np.abs(cv2.addWeighted(gx, float(_COS[k]), gy, float(_SIN[k]), 0.0)), (0, 0), SIGMA)
           for k in range(BINS)]
    channels = [cv2.addWeighted(raw[k], 0.5, cv2.add(raw[k - 1], raw[(k + 1) % BINS]), 0.25, 0.0)
                for k in range(BINS)]
    squares = cv2.multiply(channels[0], channels[0])
    for channel in channels[1:]:
        squares = cv2.add(squares, cv2.multiply(channel, channel))
    floor = 1e-3 * (max(float(c.max()) for c in channels) + 1e-6)  # flat areas stay near zero, not noise blown up
    scale = 1.0 / (cv2.sqrt(squares) + floor)
    return cv2.merge([cv2.multiply(channel, scale) for channel in channels])


def _box_sums(image: np.ndarray, size: int) -> np.ndarray:
    """Sum over the ``size x size`` window centred on each pixel, per channel (zero outside)."""
    return cv2.boxFilter(image, -1, (size, size), normalize=False, borderType=cv2.BORDER_CONSTANT)


def _window_stats(channels: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel window sums ``[H, W, C]`` and the window's total variance ``[H, W]`` (times its area)."""
    sums = _box_sums(channels, size)
    variance = _box_sums(np.einsum("hwc,hwc->hw", channels, channels), size) - (sums * sums).sum(2) / size ** 2
    return sums, variance


def _centres(reference: np.ndarray, valid: np.ndarray, level: Level, variance: np.ndarray) -> np.ndarray:
    """Template centres ``[K, 2]`` (x, y): on the grid, with the whole search window on resampled query
    pixels, most structured first."""
    h, w = reference.shape[:2]
    margin = level.half + level.radius + 1
    ys, xs = np.mgrid[margin:h - margin:level.step, margin:w - margin:level.step]
    points = np.stack([xs.ravel(), ys.ravel()], axis=1)
    reach = 2 * (level.half + level.radius) + 1
    covered = _box_sums(valid.astype(np.float32), reach)[points[:, 1], points[:, 0]] > reach * reach - 0.5
    points = points[covered]
    order = np.argsort(-variance[points[:, 1], points[:, 0]], kind="stable")
    return points[order[:MAX_TEMPLATES]]


def _scores(reference: np.ndarray, aligned: np.ndarray, points: np.ndarray, level: Level,
            ref_stats: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """Zero-mean NCC ``[K, 2r+1, 2r+1]`` of each reference template over its search window."""
    half, radius, size = level.half, level.radius, 2 * level.half + 1
    ref_sums, ref_var = ref_stats
    qry_sums, qry_var = _window_stats(aligned, size)
    parts = [(np.ascontiguousarray(reference[..., :4]), np.ascontiguousarray(aligned[..., :4])),
             (np.ascontiguousarray(reference[..., 4:]), np.ascontiguousarray(aligned[..., 4:]))]
    means = ref_sums[points[:, 1], points[:, 0]] / size ** 2
    norms = np.sqrt(np.maximum(ref_var[points[:, 1], points[:, 0]], 1e-12))
    side = 2 * radius + 1
    scores = np.empty((len(points), side, side), np.float32)
    reach = half + radius
    for k, (x, y) in enumerate(points):
        product = sum(cv2.matchTemplate(q[y - reach:y + reach + 1, x - reach:x + reach + 1],
                                        r[y - half:y + half + 1, x - half:x + half + 1], cv2.TM_CCORR)
                      for r, q in parts)
        window = np.s_[y - radius:y + radius + 1, x - radius:x + radius + 1]
        centred = product - qry_sums[window] @ means[k]
        variance = qry_var[window]
        structured = variance > FLAT * size ** 2  # else the variance is float rounding: the score would be noise
        scores[k] = np.where(structured, centred / (norms[k] * np.sqrt(np.where(structured, variance, 1.0))), 0.0)
    return np.clip(scores, -1.0, 1.0)


def _parabola(before: np.ndarray, peak: np.ndarray, after: np.ndarray) -> np.ndarray:
    curvature = before - 2 * peak + after
    flat = np.abs(curvature) < 1e-9
    return np.clip(np.where(flat, 0.0, 0.5 * (before - after) / np.where(flat, 1.0, curvature)), -0.5, 0.5)


def _peaks(scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Kept peaks: mask ``[K]``, sub-pixel offsets ``[K, 2]`` (x, y) from the window centre, margins ``[K]``."""
    count, side = scores.shape[0], scores.shape[1]
    by, bx = np.unravel_index(scores.reshape(count, -1).argmax(1), (side, side))
    rows = np.arange(count)
    best = scores[rows, by, bx]
    yy, xx = np.mgrid[0:side, 0:side]
    near = (np.abs(yy[None] - by[:, None, None]) <= 2) & (np.abs(xx[None] - bx[:, None, None]) <= 2)
    margin = best - np.where(near, -1.0, scores).reshape(count, -1).max(1)
    inner = (by > 0) & (by < side - 1) & (bx > 0) & (bx < side - 1)
    keep = inner & (best >= MIN_SCORE) & (margin >= MIN_MARGIN)
    cy, cx = np.clip(by, 1, side - 2), np.clip(bx, 1, side - 2)
    dy = _parabola(scores[rows, cy - 1, cx], scores[rows, cy, cx], scores[rows, cy + 1, cx])
    dx = _parabola(scores[rows, cy, cx - 1], scores[rows, cy, cx], scores[rows, cy, cx + 1])
    radius = side // 2
    return keep, np.stack([bx - radius + dx, by - radius + dy], axis=1), np.clip(margin, 0.0, 1.0)


def scaling(scale: float) -> np.ndarray:
    """Full-resolution OpenCV pixels -> pixels of an image resized by ``scale`` (pixel centres kept)."""
    offset = 0.5 * scale - 0.5
    return np.array([[scale, 0.0, offset], [0.0, scale, offset], [0.0, 0.0, 1.0]])


def _map_points(matrix: np.ndarray, xy: np.ndarray) -> np.ndarray:
    """Points ``[N, 2]`` through the affine 3x3 ``matrix``."""
    return xy @ matrix[:2, :2].T + matrix[:2, 2]


def _level_matches(reference: np.ndarray, query: np.ndarray, transform: np.ndarray, level: Level) -> Matches:
    """One level: reference and query gray (full resolution), ``transform`` reference -> query."""
    if min(reference.shape) * level.scale < 2 * (level.half + level.radius + 1) + 1:
        return Matches.empty()  # too small for one template and its search window
    to_level = scaling(level.scale)
    ref_level = reference if level.scale == 1 else cv2.resize(reference, None, fx=level.scale, fy=level.scale,
                                                              interpolation=cv2.INTER_AREA)  # exact factor
    size = (ref_level.shape[1], ref_level.shape[0])
    level_to_query = transform @ np.linalg.inv(to_level)
    inverse = cv2.WARP_INVERSE_MAP
    aligned = cv2.warpPerspective(query, level_to_query, size, flags=cv2.INTER_LINEAR | inverse)
    valid = cv2.warpPerspective(np.ones(query.shape, np.uint8), level_to_query, size, flags=cv2.INTER_NEAREST | inverse)
    ref_channels, aligned_channels = orientation_channels(ref_level), orientation_channels(aligned)
    ref_stats = _window_stats(ref_channels, 2 * level.half + 1)
    points = _centres(ref_channels, valid, level, ref_stats[1])
    if not len(points):
        return Matches.empty()
    keep, offsets, margins = _peaks(_scores(ref_channels, aligned_channels, points, level, ref_stats))
    if not keep.any():
        return Matches.empty()
    ref_xy = points[keep].astype(np.float64)
    qry_xy = cv2.perspectiveTransform((ref_xy + offsets[keep]).reshape(1, -1, 2), level_to_query).reshape(-1, 2)
    return Matches(_map_points(np.linalg.inv(to_level), ref_xy), qry_xy, margins[keep].astype(np.float64))


def _working_image(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Single-channel 8/16-bit or float32 ``image`` reduced so its longer side is at most ``MAX_SIDE``, and
    the 3x3 map of its pixels into the reduced image's."""
    array = np.asarray(image)
    if array.dtype not in (np.uint8, np.uint16, np.float32):
        array = array.astype(np.float32)
    gray = to_gray(array)
    scale = min(1.0, MAX_SIDE / max(gray.shape))
    if scale == 1.0:
        return gray, np.eye(3)
    return cv2.resize(gray, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA), scaling(scale)


def refine_registration(reference: np.ndarray, query: np.ndarray, transform: np.ndarray,
                        levels: tuple[Level, ...] = LEVELS) -> Matches | None:
    """The correspondences that refine ``transform`` (3x3, reference -> query, OpenCV pixels) between
    ``reference`` and ``query`` (gray, BGR or BGRA), or None when the refinement cannot be trusted (module
    docstring)."""
    (ref_work, ref_map), (qry_work, qry_map) = _working_image(reference), _working_image(query)
    transform = qry_map @ np.asarray(transform, np.float64) @ np.linalg.inv(ref_map)
    matches = None
    for level in levels:
        matches = _level_matches(ref_work, qry_work, transform, level)
        fit = estimate_transform(matches.ref_xy, matches.qry_xy, "affine", min_inliers=MIN_INLIERS)
        if not fit.ok:
            return None
        transform = fit.transform
    return Matches(_map_points(np.linalg.inv(ref_map), matches.ref_xy),
                   _map_points(np.linalg.inv(qry_map), matches.qry_xy), matches.confidence)
