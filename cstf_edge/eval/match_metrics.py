"""Matching metrics against a ground-truth transform, per pair and aggregated per modality.

Per pair (the SRIF authors' metric, ``demo_*.m`` in LJY-RS/SRIF, plus a success criterion):

* a match is **correct** when the ground truth maps its reference point within 3 px of its query point;
* **correct-match ratio** = correct / all matches; **RMSE** over the correct matches only;
* **success**: the estimated transform maps a grid of points over the query within 3 px RMSE of the ground
  truth (grid point q, its reference point p = H_gt^-1 q, error |H_est p - q|, in query pixels). A pair
  without an estimate (refused) is a failure.

Pairs whose ground truth is known to be wrong (SRIF Optical-SAR) are computed but flagged
"GT known wrong: not scored" and left out of the overall figures.
"""
from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass
from typing import Iterable

import numpy as np

from cstf_edge._io import read_image
from cstf_edge.match.baselines import Matcher
from cstf_edge.match.estimate import estimate_transform
from cstf_edge.match.pairs import MatchPair

log = logging.getLogger(__name__)

TOLERANCE = 3.0
GRID = 10
NOT_SCORED = "GT known wrong: not scored"


@dataclass
class PairResult:
    """One method on one pair."""

    name: str
    modality: str
    method: str
    num_matches: int
    num_correct: int
    correct_ratio: float
    rmse: float  # of correct matches; nan when none
    num_inliers: int
    grid_rmse: float  # nan when no transform was estimated
    success: bool
    seconds: float
    reason: str = ""  # why no transform was estimated
    scored: bool = True
    note: str = ""
    transform: list | None = None
    stage: str = ""  # CSTF: the stage that answered (network, network + refinement, global search)


def project(transform: np.ndarray, xy: np.ndarray) -> np.ndarray:
    """Points ``xy`` [N, 2] mapped by the 3x3 ``transform``."""
    xyw = np.hstack([np.asarray(xy, np.float64), np.ones((len(xy), 1))]) @ np.asarray(transform).T
    return xyw[:, :2] / xyw[:, 2:3]


def reprojection_errors(ref_xy: np.ndarray, qry_xy: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """|H_gt ref - qry| per correspondence."""
    if len(ref_xy) == 0:
        return np.zeros(0)
    return np.linalg.norm(project(gt, ref_xy) - qry_xy, axis=1)


def grid_points(width: int, height: int, n: int = GRID) -> np.ndarray:
    """An ``n`` x ``n`` grid over a ``width`` x ``height`` image (pixel centres of the corners included)."""
    xs, ys = np.meshgrid(np.linspace(0, width - 1, n), np.linspace(0, height - 1, n))
    return np.stack([xs.ravel(), ys.ravel()], axis=1)


def grid_rmse(estimate: np.ndarray, gt: np.ndarray, query_size: tuple[int, int]) -> float:
    """RMSE in query pixels of ``estimate`` against ``gt`` on a grid over the query (width, height)."""
    query = grid_points(*query_size)
    reference = project(np.linalg.inv(gt), query)
    return float(np.sqrt(np.mean(np.sum((project(estimate, reference) - query) ** 2, axis=1))))


def correspondence_stats(ref_xy, qry_xy, gt, tol: float = TOLERANCE) -> tuple[int, float, float]:
    """(number correct, correct ratio, RMSE of the correct ones) of the correspondences."""
    errors = reprojection_errors(ref_xy, qry_xy, gt)
    correct = errors < tol
    n_correct = int(correct.sum())
    ratio = n_correct / len(errors) if len(errors) else 0.0
    rmse = float(np.sqrt(np.mean(errors[correct] ** 2))) if n_correct else float("nan")
    return n_correct, ratio, rmse


def evaluate_pair(pair: MatchPair, matcher: Matcher, transform: str = "affine",
                  tol: float = TOLERANCE) -> PairResult:
    """Match, estimate and score one pair with one method (time: matching + estimation)."""
    reference, query = read_image(pair.reference), read_image(pair.query)
    start = time.perf_counter()
    matches = matcher.match(reference, query)
    estimate = estimate_transform(matches.ref_xy, matches.qry_xy, transform)
    seconds = time.perf_counter() - start
    n_correct, ratio, rmse = correspondence_stats(matches.ref_xy, matches.qry_xy, pair.transform, tol)
    grid = float("nan")
    if estimate.ok:
        grid = grid_rmse(estimate.transform, pair.transform, (query.shape[1], query.shape[0]))
    return PairResult(
        pair.name, pair.modality, matcher.name, len(matches), n_correct, ratio, rmse, estimate.num_inliers,
        grid, bool(estimate.ok and grid < tol), seconds, estimate.reason, not pair.gt_known_wrong,
        NOT_SCORED if pair.gt_known_wrong else "",
        None if estimate.transform is None else estimate.transform.tolist(), getattr(matcher, "last_stage", ""))


def _mean(values: list[float]) -> float:
    finite = [v for v in values if np.isfinite(v)]
    return float(np.mean(finite)) if finite else float("nan")


def summarize(rows: list[PairResult]) -> dict:
    """Aggregate figures of a group of rows of one method."""
    return {
        "pairs": len(rows),
        "success_rate": _mean([float(r.success) for r in rows]),
        "num_correct": _mean([float(r.num_correct) for r in rows]),
        "correct_ratio": _mean([r.correct_ratio for r in rows]),
        "rmse": _mean([r.rmse for r in rows]),
        "seconds": _mean([r.seconds for r in rows]),
    }


def aggregate(results: Iterable[PairResult]) -> dict:
    """``{"modalities": {modality: {method: summary + scored/note}}, "overall": {method: summary}}``;
    the overall leaves out rows that are not scored."""
    results = list(results)
    modalities: dict[str, dict] = {}
    for modality in dict.fromkeys(r.modality for r in results):
        group = [r for r in results if r.modality == modality]
        scored = all(r.scored for r in group)
        modalities[modality] = {
            method: {**summarize([r for r in group if r.method == method]), "scored": scored,
                     "note": "" if scored else NOT_SCORED}
            for method in dict.fromkeys(r.method for r in group)}
    overall = {method: summarize([r for r in results if r.method == method and r.scored])
               for method in dict.fromkeys(r.method for r in results)}
    return {"modalities": modalities, "overall": overall}


def result_dict(result: PairResult) -> dict:
    """A JSON-ready row (nan -> None)."""
    return {k: (None if isinstance(v, float) and not np.isfinite(v) else v) for k, v in asdict(result).items()}
