"""Parity of an artifact against its reference (PyTorch for the FP32 ONNX; the FP32 ONNX for FP16/INT8):
the raw output's max abs and relative error, and detection-level parity after the runtime's NMS (the share of
reference detections matched one-to-one, same class, rotated IoU >= 0.95)."""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from cstf_edge.geometry.iou import rbox_iou_matrix
from cstf_edge.runtime.postprocess import Detections, postprocess

MATCH_IOU = 0.95
PARITY_CONF = 0.25
PARITY_NMS_IOU = 0.5


@dataclass
class ParityResult:
    max_abs_error: float
    max_rel_error: float
    score_max_abs_error: float
    box_max_abs_error_px: float
    reference_detections: int
    matched: int

    @property
    def detection_parity(self) -> float:
        return 1.0 if self.reference_detections == 0 else self.matched / self.reference_detections

    def as_dict(self) -> dict:
        return {**asdict(self), "detection_parity": round(self.detection_parity, 6)}


def matched_count(reference: Detections, candidate: Detections, iou: float = MATCH_IOU) -> int:
    """Reference detections matched one-to-one (greedy by reference score) by a candidate detection of the
    same class with rotated IoU >= ``iou``."""
    if not len(reference) or not len(candidate):
        return 0
    overlap = rbox_iou_matrix(reference.rboxes, candidate.rboxes)
    overlap[reference.class_ids[:, None] != candidate.class_ids[None, :]] = 0.0
    taken = np.zeros(len(candidate), dtype=bool)
    matched = 0
    for row in np.argsort(-reference.scores, kind="stable"):
        options = np.where(taken, -1.0, overlap[row])
        best = int(np.argmax(options))
        if options[best] >= iou:
            taken[best] = True
            matched += 1
    return matched


def compare_outputs(reference: np.ndarray, candidate: np.ndarray, conf: float = PARITY_CONF) -> ParityResult:
    """Raw ``[B, N, 5 + C]`` outputs of two models on the same inputs."""
    diff = np.abs(reference.astype(np.float64) - candidate.astype(np.float64))
    scale = np.maximum(np.abs(reference.astype(np.float64)), 1e-3)
    confident = reference[..., 5:].max(-1) >= conf
    box_error = float(diff[..., :4][confident].max()) if confident.any() else 0.0
    total = matched = 0
    for ref_item, cand_item in zip(reference, candidate):
        ref_found = postprocess(ref_item, conf, PARITY_NMS_IOU)
        cand_found = postprocess(cand_item, conf, PARITY_NMS_IOU)
        total += len(ref_found)
        matched += matched_count(ref_found, cand_found)
    return ParityResult(float(diff.max()), float((diff / scale).max()), float(diff[..., 5:].max()), box_error,
                        total, matched)
