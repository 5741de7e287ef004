"""Greedy rotated non-maximum suppression with exact polygon IoU, in numpy (no torch: the runtime uses it).

Ties in score keep their input order (stable sort), so the same input always gives the same output.
"""
from __future__ import annotations

import numpy as np

from cstf_edge.geometry.boxes import poly_to_hbb, rbox_to_poly
from cstf_edge.geometry.iou import polygon_iou_pairs
from cstf_edge.geometry.pairs import overlapping_pairs


def rotated_nms(rboxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Indices kept by greedy NMS (exact rotated IoU), in decreasing score order.

    Exact IoU is computed once, in one batch, for the pairs whose axis-aligned bounds overlap; the
    greedy pass then walks the ranks over that sparse graph.
    """
    order = np.argsort(-scores, kind="stable")
    polygons = rbox_to_poly(rboxes[order])
    higher, lower = overlapping_pairs(poly_to_hbb(polygons))  # ranks, higher < lower
    hits = polygon_iou_pairs(polygons[higher], polygons[lower]) > iou_threshold
    higher, lower = higher[hits], lower[hits]
    by_rank = np.argsort(higher, kind="stable")
    higher, lower = higher[by_rank], lower[by_rank]
    starts = np.searchsorted(higher, np.arange(len(order) + 1))
    alive = np.ones(len(order), dtype=bool)
    for rank in range(len(order)):
        if alive[rank]:
            alive[lower[starts[rank]:starts[rank + 1]]] = False
    return order[alive]


def class_aware_nms(rboxes, scores, class_ids, iou_threshold: float) -> np.ndarray:
    """Rotated NMS run separately per class; indices sorted by decreasing score."""
    keep = [np.flatnonzero(class_ids == c)[rotated_nms(rboxes[class_ids == c], scores[class_ids == c],
                                                         iou_threshold)] for c in np.unique(class_ids)]
    merged = np.concatenate(keep) if keep else np.zeros(0, dtype=np.int64)
    return merged[np.argsort(-scores[merged], kind="stable")]
