"""Evaluation: DOTA Task1 mAP with the official devkit's rules (VOC07 11-point and VOC12 area)."""
from cstf_edge.eval.dota_map import (
    ClassEvaluation,
    DotaEvalResult,
    evaluate_detections,
    evaluate_dota,
    evaluate_dota_arrays,
    load_ground_truth,
    read_imageset,
    voc_ap,
)

__all__ = [
    "ClassEvaluation",
    "DotaEvalResult",
    "evaluate_detections",
    "evaluate_dota",
    "evaluate_dota_arrays",
    "load_ground_truth",
    "read_imageset",
    "voc_ap",
]
