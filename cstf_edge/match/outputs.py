"""What ``cstf-edge match`` writes for one pair, every file atomically.

* ``matches.csv``: ``x_ref y_ref x_qry y_qry confidence inlier`` per correspondence (OpenCV pixel centres);
* ``transform.txt``: the 3x3 reference -> query matrix (only when the estimate is trusted);
* ``warped.png``: the query resampled into the reference's frame;
* ``matches.png``: reference and query side by side, inliers green, outliers red (at most
  :data:`MAX_DRAWN` lines, spread over the image);
* ``checkerboard.png``: reference and warped query in alternating squares (edges that continue across
  squares show a good registration);
* ``result.json``: what ``--json`` prints, plus the reason when no transform was trusted.
"""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np

from cstf_edge._io import atomic_write_text, write_image
from cstf_edge.match.baselines import Matches
from cstf_edge.match.estimate import Estimate

MAX_DRAWN = 120
TRANSFORM_FILES = ("transform.txt", "warped.png", "checkerboard.png")
CHECKER_SQUARES = 8
_GREEN, _RED = (80, 220, 80), (60, 60, 230)


def matches_csv(matches: Matches, inliers: np.ndarray) -> str:
    lines = ["x_ref,y_ref,x_qry,y_qry,confidence,inlier"]
    for (xr, yr), (xq, yq), c, keep in zip(matches.ref_xy, matches.qry_xy, matches.confidence, inliers):
        lines.append(f"{xr:.3f},{yr:.3f},{xq:.3f},{yq:.3f},{c:.4f},{int(bool(keep))}")
    return "\n".join(lines) + "\n"


def drawn_subset(matches: Matches, inliers: np.ndarray, limit: int = MAX_DRAWN) -> np.ndarray:
    """Indices of at most ``limit`` matches to draw, spread over the reference: inliers first, then one
    match per cell of a coarse grid (most confident first), outliers last; drawn in that order reversed."""
    cells = np.floor(matches.ref_xy / 32.0).astype(np.int64) if len(matches) else np.zeros((0, 2), np.int64)
    key = np.lexsort((-matches.confidence, cells[:, 1], cells[:, 0], ~inliers.astype(bool)))
    first_in_cell = np.ones(len(key), bool)
    ordered_cells = cells[key]
    first_in_cell[1:] = (ordered_cells[1:] != ordered_cells[:-1]).any(1)
    spread = np.concatenate([key[first_in_cell], key[~first_in_cell]])
    chosen = np.concatenate([spread[inliers[spread]], spread[~inliers[spread]]])[:limit]
    return chosen[::-1]


def side_by_side(reference: np.ndarray, query: np.ndarray, matches: Matches, inliers: np.ndarray) -> np.ndarray:
    """Both images on one canvas, correspondences as lines (inliers drawn last, on top)."""
    height = max(reference.shape[0], query.shape[0])
    canvas = np.zeros((height, reference.shape[1] + query.shape[1], 3), np.uint8)
    canvas[: reference.shape[0], : reference.shape[1]] = reference
    canvas[: query.shape[0], reference.shape[1]:] = query
    order = drawn_subset(matches, inliers)
    shift = np.array([reference.shape[1], 0.0])
    for i in order:
        colour = _GREEN if inliers[i] else _RED
        a = tuple(int(round(v)) for v in matches.ref_xy[i])
        b = tuple(int(round(v)) for v in matches.qry_xy[i] + shift)
        cv2.line(canvas, a, b, colour, 1, cv2.LINE_AA)
        cv2.circle(canvas, a, 2, colour, -1, cv2.LINE_AA)
        cv2.circle(canvas, b, 2, colour, -1, cv2.LINE_AA)
    return canvas


def warp_to_reference(query: np.ndarray, transform: np.ndarray, reference_shape) -> np.ndarray:
    """The query resampled into the reference frame (``transform`` maps reference -> query)."""
    return cv2.warpPerspective(query, transform, (reference_shape[1], reference_shape[0]),
                               flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP)


def checkerboard(reference: np.ndarray, warped: np.ndarray, squares: int = CHECKER_SQUARES) -> np.ndarray:
    """Alternating squares of ``reference`` and ``warped`` (same size)."""
    h, w = reference.shape[:2]
    rows = (np.arange(h) * squares // h)[:, None]
    cols = (np.arange(w) * squares // w)[None, :]
    pick = ((rows + cols) % 2).astype(bool)
    out = reference.copy()
    out[pick] = warped[pick]
    return out


def summary(matches: Matches, estimate: Estimate, seconds: float, turn: int | None = None,
            refined: bool | None = None, stage: str | None = None) -> dict:
    """The ``--json`` object (``transform`` None when no transform is trusted, with ``reason``; for CSTF,
    the query's quarter turns, whether the dense refinement's matches were used and the stage that
    answered)."""
    result = {"num_matches": len(matches), "num_inliers": estimate.num_inliers,
              "transform": None if estimate.transform is None else np.round(estimate.transform, 9).tolist(),
              "seconds": round(seconds, 4)}
    if turn is not None:
        result["query_quarter_turns"] = turn
    if refined is not None:
        result["refined"] = refined
    if stage is not None:
        result["stage"] = stage
    if not estimate.ok:
        result["reason"] = estimate.reason
    return result


def write_outputs(out: Path, reference: np.ndarray, query: np.ndarray, matches: Matches, estimate: Estimate,
                  result: dict) -> list[Path]:
    """Write the files of the module docstring into ``out``; returns their paths."""
    inliers = estimate.inliers if len(estimate.inliers) == len(matches) else np.zeros(len(matches), bool)
    written = [atomic_write_text(out / "matches.csv", matches_csv(matches, inliers)),
               write_image(out / "matches.png", side_by_side(reference, query, matches, inliers))]
    if estimate.ok:
        written.append(atomic_write_text(out / "transform.txt", "".join(
            " ".join(f"{v:.9g}" for v in row) + "\n" for row in estimate.transform)))
        warped = warp_to_reference(query, estimate.transform, reference.shape)
        written.append(write_image(out / "warped.png", warped))
        written.append(write_image(out / "checkerboard.png", checkerboard(reference, warped)))
    else:  # a failed pair must not leave an earlier run's matrix looking like this run's answer
        for name in TRANSFORM_FILES:
            (out / name).unlink(missing_ok=True)
    written.append(atomic_write_text(out / "result.json", json.dumps(result, indent=1) + "\n"))
    return written
