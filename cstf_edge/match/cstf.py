"""The CSTF matcher at run time (no torch): any matcher artifact (ONNX, or weights through the PyTorch
reference backend) behind the :class:`~cstf_edge.match.baselines.Matcher` protocol.

Per pair: both images go through the project's one preprocessing (letterbox to the network size, RGB,
/255); the query is also tried turned by 1, 2 and 3 quarter turns (``rotations=4``; the network tolerates
about +-45 degrees by itself) in one batch against the one reference. Each turn's matches are the query
tokens whose mutual dual-softmax confidence reaches ``min_confidence``, mapped back to original pixels
(inverse letterbox, inverse turn, then OpenCV's integer pixel centres); tokens on the letterbox padding
are dropped. The turn kept is the one whose matches a robust similarity fit explains best (most inliers;
ties: more matches).

Realigned passes (``passes=2``, the default, runs one): when the first pass's similarity fit is
trusted (8 px tolerance), the query is resampled into the reference's frame by it and matched again with
no turn: the network is at its most precise on nearly aligned pairs, and the refinement window is then
centred on the answer. A pass's matches are mapped back through the transform it was aligned with and
kept when an affine fit at 3 px explains more of them than the previous pass's; that fit aligns the next
pass. Passes stop at the first that does not improve.

Dense refinement (``refine=True``, the default): after each kept pass, its affine fit (or the coarse
similarity where there is none) is refined by dense template matching of modality-robust orientation
channels (:mod:`cstf_edge.match.refine`). The first refinement that can be trusted ends the search and its
correspondences are returned instead of the network's (``last_refined`` says whether they were); so a
realigned pass runs only where the refinement of the first pass declined.

Global search (with ``refine``): where no pass gave a transform the refinement confirmed, a low-resolution
search over every turn proposes candidates (:mod:`cstf_edge.match.global_search`), accepted only with strong
support from the refinement. ``last_stage`` says which stage answered: ``network``, ``network +
refinement``, ``global search``, or ``none`` (no match at all).
"""
from __future__ import annotations

import logging
from pathlib import Path

import cv2
import numpy as np

from cstf_edge.errors import CstfError
from cstf_edge.match import global_search
from cstf_edge.match.baselines import Matches
from cstf_edge.match.estimate import Estimate, estimate_transform
from cstf_edge.match.refine import refine_registration
from cstf_edge.match.rot90 import rot90_matrix, rotate90
from cstf_edge.runtime.backends import open_runner
from cstf_edge.runtime.preprocess import letterbox, to_tensor

log = logging.getLogger(__name__)

SHIPPED_MATCHER = Path(__file__).resolve().parent.parent / "weights" / "cstf-matcher-synthrs.safetensors"
MIN_CONFIDENCE = 0.02
COARSE_THRESHOLD = 8.0  # px: inlier tolerance of the fits that pick the turn and realign (half a token)


def _to_opencv(points: np.ndarray) -> np.ndarray:
    """Continuous pixel coordinates -> OpenCV's (pixel centres at integers)."""
    return points - 0.5


def _coarse_fit(matches: Matches) -> Estimate:
    """The similarity a pass's matches support, at the coarse tolerance (turn choice and realignment)."""
    return estimate_transform(matches.ref_xy, matches.qry_xy, "similarity", threshold=COARSE_THRESHOLD)


def _fine_fit(matches: Matches) -> Estimate:
    """The affine a pass's matches support at the evaluation's 3 px: compares passes, aligns the next."""
    return estimate_transform(matches.ref_xy, matches.qry_xy, "affine")


def _inside(points: np.ndarray, width: int, height: int) -> np.ndarray:
    """Points (continuous coordinates) on the image, not on the letterbox padding."""
    return (points[:, 0] >= 0) & (points[:, 0] < width) & (points[:, 1] >= 0) & (points[:, 1] < height)


class CSTFMatch:
    """``CSTFMatch(model, device, rotations, min_confidence, max_keypoints, passes, refine)``; a context
    manager (the model is loaded on enter, or on the first :meth:`match`). ``runner_options`` go to the
    backend (``threads`` for ONNX Runtime, ``imgsz`` for weights run through PyTorch). Its ``name`` is
    ``cstf``, or ``cstf-net`` without the dense refinement (the network's matches alone)."""

    def __init__(self, model: str | Path | None = None, device: str = "cpu", rotations: int = 4,
                 min_confidence: float = MIN_CONFIDENCE, max_keypoints: int | None = None, passes: int = 2,
                 refine: bool = True, **runner_options):
        if rotations not in (1, 2, 4):
            raise CstfError(f"rotations must be 1, 2 or 4 (quarter turns tried), got {rotations}")
        path = Path(model) if model else SHIPPED_MATCHER
        self.runner = open_runner(path, device, **runner_options)
        if self.runner.info.task != "match":
            raise CstfError(f"{path}: this artifact is a {self.runner.info.task} model, not a matcher; export or "
                            "train one with cstf-edge train-match")
        self.turns = list(range(0, 4, 4 // rotations))
        self.min_confidence = float(min_confidence)
        self.max_keypoints = max_keypoints
        if passes < 1:
            raise CstfError(f"passes must be at least 1, got {passes}")
        self.passes = passes
        self.refine = refine
        self.name = "cstf" if refine else "cstf-net"
        self.last_turn, self.last_pass, self.last_refined, self.last_stage = 0, 1, False, "network"

    def __enter__(self) -> "CSTFMatch":
        if not self.runner.active:
            self.runner.__enter__()
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def close(self) -> None:
        if self.runner.active:
            self.runner.__exit__(None, None, None)

    def _infer(self, reference: np.ndarray, queries: list[np.ndarray]) -> dict[str, np.ndarray]:
        self.__enter__()
        fixed = self.runner.info.batch
        feed_ref = to_tensor(reference[None], self.runner.info.preprocess)
        spec = self.runner.info.preprocess
        if fixed is None or fixed == len(queries):
            return self.runner.infer({"reference": feed_ref, "query": to_tensor(np.stack(queries), spec)})
        parts = [self.runner.infer({"reference": feed_ref, "query": to_tensor(q[None], spec)}) for q in queries]
        return {name: np.concatenate([p[name] for p in parts]) for name in parts[0]}

    def _turn_matches(self, outputs, i: int, turn: int, ref_box, qry_box, query_shape) -> Matches:
        confidence = outputs["confidence"][i]
        keep = np.flatnonzero(confidence >= self.min_confidence)
        if self.max_keypoints and keep.size > self.max_keypoints:
            rank = confidence[keep] * outputs["saliency"][i][keep]
            keep = keep[np.argsort(-rank, kind="stable")[: self.max_keypoints]]
        ref_xy = ref_box.points_to_image(outputs["ref_points"][i][keep])
        turned = qry_box.points_to_image(outputs["query_points"][i][keep])
        back = np.linalg.inv(rot90_matrix(turn, query_shape[1], query_shape[0]))
        qry_xy = turned @ back[:2, :2].T + back[:2, 2]
        inside = _inside(ref_xy, ref_box.src_w, ref_box.src_h) & _inside(qry_xy, query_shape[1], query_shape[0])
        return Matches(_to_opencv(ref_xy[inside]), _to_opencv(qry_xy[inside]),
                       confidence[keep][inside].astype(np.float64))

    def _search(self, reference, ref_box, query_bgr: np.ndarray) -> tuple[Matches, Estimate]:
        """Matches of the best quarter turn and their similarity fit."""
        spec = self.runner.info.preprocess
        placed = [letterbox(rotate90(query_bgr, turn), spec) for turn in self.turns]
        outputs = self._infer(reference, [p[0] for p in placed])
        best, best_fit, best_key = Matches.empty(), None, (-1, -1)
        for i, turn in enumerate(self.turns):
            matches = self._turn_matches(outputs, i, turn, ref_box, placed[i][1], query_bgr.shape)
            fit = _coarse_fit(matches)
            key = (fit.num_inliers, len(matches))
            if key > best_key:
                best, best_fit, best_key, self.last_turn = matches, fit, key, turn
        return best, best_fit

    def _realigned(self, reference, ref_box, query_bgr: np.ndarray, transform: np.ndarray) -> Matches:
        """A realigned pass: the query resampled into the reference's frame by ``transform`` (reference ->
        query, OpenCV pixels), matched with no turn, its points mapped back through ``transform``."""
        size = (ref_box.src_w, ref_box.src_h)
        aligned = cv2.warpPerspective(query_bgr, transform, size, flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP)
        placed, box = letterbox(aligned, self.runner.info.preprocess)
        matches = self._turn_matches(self._infer(reference, [placed]), 0, 0, ref_box, box, aligned.shape)
        if not len(matches):
            return matches
        qry_xy = cv2.perspectiveTransform(matches.qry_xy.reshape(1, -1, 2), transform).reshape(-1, 2)
        height, width = query_bgr.shape[:2]
        on_query = _inside(qry_xy + 0.5, width, height)  # back to continuous coordinates for the test
        return Matches(matches.ref_xy[on_query], qry_xy[on_query], matches.confidence[on_query])

    def match(self, reference_bgr: np.ndarray, query_bgr: np.ndarray) -> Matches:
        """The dense refinement's correspondences, or the network's of the best quarter turn or realigned
        pass (module docstring)."""
        self.last_pass, self.last_refined, self.last_stage = 1, False, "network"
        best = self._network(reference_bgr, query_bgr)
        found = None
        if self.refine and not self.last_refined:
            found = global_search.register(reference_bgr, query_bgr)
        if found is None:
            if not len(best):
                self.last_stage = "none"
            return best
        self.last_refined, self.last_stage, self.last_turn = True, "global search", None  # no quarter turn used
        return found

    def _network(self, reference_bgr: np.ndarray, query_bgr: np.ndarray) -> Matches:
        """The network's passes, each refined where ``refine`` (sets ``last_pass``, ``last_refined``)."""
        reference, ref_box = letterbox(reference_bgr, self.runner.info.preprocess)
        best, fit = self._search(reference, ref_box, query_bgr)
        if not fit.ok:
            return best
        transform, best_fine = fit.transform, _fine_fit(best)
        for number in range(1, self.passes + 1):
            if number > 1:
                matches = self._realigned(reference, ref_box, query_bgr, transform)
                fine = _fine_fit(matches)
                if fine.num_inliers <= best_fine.num_inliers:
                    break
                best, best_fine, self.last_pass, transform = matches, fine, number, fine.transform
            if self.refine:
                start = best_fine.transform if best_fine.ok else transform
                refined = refine_registration(reference_bgr, query_bgr, start)
                if refined is not None:
                    self.last_refined, self.last_stage = True, "network + refinement"
                    return refined
        return best
