"""Post-processing of the network output ``detections [B, N, 5 + C]`` (numpy; the CUDA twin lives in
``cstf_edge.runtime.cuda``): best class per anchor (single label, as DOTA scores one class per box),
score threshold, top-k candidates, class-aware exact rotated NMS, then the inverse letterbox.

Tie rule (shared with the CUDA twin): candidates are ordered by decreasing score, equal scores by anchor
index; NMS is greedy in that order.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cstf_edge.geometry import poly_to_rbox, rbox_to_poly
from cstf_edge.geometry.nms import class_aware_nms, rotated_nms
from cstf_edge.runtime.preprocess import Letterbox

MAX_CANDIDATES = 3000
MAX_DETECTIONS = 300


@dataclass
class Detections:
    """One image's detections: ``rboxes [K, 5]`` canonical, ``scores [K]`` float32, ``class_ids [K]``,
    sorted by decreasing score, in the pixels of the image they refer to."""

    rboxes: np.ndarray
    scores: np.ndarray
    class_ids: np.ndarray

    def __len__(self) -> int:
        return len(self.scores)

    @property
    def polygons(self) -> np.ndarray:
        """``[K, 4, 2]`` corners (DOTA order, see ``cstf_edge.geometry.boxes``)."""
        return rbox_to_poly(self.rboxes).reshape(-1, 4, 2)

    @classmethod
    def empty(cls) -> "Detections":
        return cls(np.zeros((0, 5)), np.zeros(0, np.float32), np.zeros(0, np.int64))

    def take(self, index: np.ndarray) -> "Detections":
        return Detections(self.rboxes[index], self.scores[index], self.class_ids[index])

    def shifted(self, dx: float, dy: float) -> "Detections":
        rboxes = self.rboxes.copy()
        rboxes[:, 0] += dx
        rboxes[:, 1] += dy
        return Detections(rboxes, self.scores, self.class_ids)

    @classmethod
    def concatenate(cls, parts: list["Detections"]) -> "Detections":
        if not parts:
            return cls.empty()
        return cls(np.concatenate([p.rboxes for p in parts]).reshape(-1, 5),
                   np.concatenate([p.scores for p in parts]), np.concatenate([p.class_ids for p in parts]))


def select_candidates(raw: np.ndarray, conf: float, max_candidates: int = MAX_CANDIDATES,
                      classes: np.ndarray | None = None) -> Detections:
    """One image's ``raw [N, 5 + C]`` -> candidates above ``conf`` (best class each), top ``max_candidates``
    by score; ``classes``: class ids to keep (None: all)."""
    class_scores = raw[:, 5:]
    class_ids = class_scores.argmax(axis=1)
    scores = class_scores[np.arange(len(class_scores)), class_ids]
    mask = scores >= conf
    if classes is not None:
        mask &= np.isin(class_ids, classes)
    candidates = np.flatnonzero(mask)
    candidates = candidates[np.argsort(-scores[candidates], kind="stable")[:max_candidates]]
    return Detections(raw[candidates, :5].astype(np.float64), scores[candidates].astype(np.float32),
                      class_ids[candidates].astype(np.int64))


def nms(found: Detections, iou: float, agnostic: bool = False, max_det: int = MAX_DETECTIONS) -> Detections:
    """Greedy exact rotated NMS (suppress IoU > ``iou``), per class unless ``agnostic``."""
    if agnostic:
        keep = rotated_nms(found.rboxes, found.scores, iou)
    else:
        keep = class_aware_nms(found.rboxes, found.scores, found.class_ids, iou)
    return found.take(keep[:max_det])


def postprocess(raw: np.ndarray, conf: float = 0.25, iou: float = 0.5, max_candidates: int = MAX_CANDIDATES,
                max_det: int = MAX_DETECTIONS, classes: np.ndarray | None = None,
                agnostic: bool = False) -> Detections:
    """One image's raw ``[N, 5 + C]`` -> filtered, NMS-ed detections in network-input pixels."""
    return nms(select_candidates(raw, conf, max_candidates, classes), iou, agnostic, max_det)


def to_image(found: Detections, box: Letterbox) -> Detections:
    """Detections in network-input pixels -> pixels of the original image (the inverse letterbox).

    The letterbox may scale x and y by slightly different factors (rounding), so the corners are mapped
    and the rotated box refitted to them (exact when the factors are equal)."""
    if not len(found):
        return found
    if box.new_w * box.src_h == box.new_h * box.src_w:
        rboxes = found.rboxes.copy()
        factor = box.src_w / box.new_w
        rboxes[:, 0] = (rboxes[:, 0] - box.left) * factor
        rboxes[:, 1] = (rboxes[:, 1] - box.top) * factor
        rboxes[:, 2:4] *= factor
        return Detections(rboxes, found.scores, found.class_ids)
    corners = box.points_to_image(found.polygons)
    return Detections(poly_to_rbox(corners.reshape(-1, 8)), found.scores, found.class_ids)
