"""Greedy rotated non-maximum suppression with exact polygon IoU (no torch: the runtime uses it).

Boxes are ranked by decreasing score, ties in input order (class-aware NMS: ties by class, then input
order), and each kept box suppresses the later boxes whose IoU with it is strictly above the threshold,
so the same input always gives the same output.

Two implementations give the same indices: a numba kernel (``_nms_numba``: a uniform grid on the
axis-aligned bounds, cheap bounds on the intersection, exact convex IoU where they do not decide; a few
milliseconds for 20,000 boxes, see ``benchmarks/bench_nms.py``) used whenever numba imports, and the
numpy reference (``rotated_nms_numpy``, ``class_aware_nms_numpy``), used when it does not or when an
input is not finite or beyond ``_MAX_MAGNITUDE``. The kernel is imported, and compiled or loaded from
numba's on-disk cache, on first use.
"""
from __future__ import annotations

import logging
import threading

import numpy as np

from cstf_edge.geometry.boxes import poly_to_hbb, rbox_to_poly
from cstf_edge.geometry.iou import polygon_iou_pairs
from cstf_edge.geometry.pairs import overlapping_pairs

logger = logging.getLogger(__name__)

_UNSET = object()
_kernel = _UNSET
_workspaces = threading.local()
# A grown workspace gets this much headroom, so that slowly growing inputs do not reallocate each call.
_GROWTH = 1.25
# Box values beyond this magnitude (pixels) go to the numpy reference: the kernel's float32 prefilter
# and products of sides need headroom.
_MAX_MAGNITUDE = 1e15


def numba_kernel():
    """The numba NMS kernel, imported on first call; None (logged once at debug level) without numba."""
    global _kernel
    if _kernel is _UNSET:
        try:
            from cstf_edge.geometry._nms_numba import nms_kernel
        except ImportError as exc:  # numba missing or broken: the numpy reference serves
            logger.debug("numba NMS kernel unavailable (%s); using the numpy implementation", exc)
            nms_kernel = None
        _kernel = nms_kernel
    return _kernel


def _workspace(n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """This thread's kernel workspaces (int64, float64, bool), grown to fit ``n`` boxes.

    Kept between calls: about 450 bytes a box (9 MB after 20,000 boxes), allocated and touched once
    instead of page-faulted in on every call."""
    from cstf_edge.geometry._nms_numba import workspace_sizes

    need = workspace_sizes(n)
    arrays = getattr(_workspaces, "arrays", None)
    if arrays is None or any(len(array) < size for array, size in zip(arrays, need)):
        ints, floats, flags = (int(_GROWTH * size) for size in need)
        arrays = (np.zeros(ints, dtype=np.int64), np.zeros(floats), np.zeros(flags, dtype=bool))
        _workspaces.arrays = arrays
    return arrays


def _run_kernel(boxes: np.ndarray, values: np.ndarray, codes: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Kept indices from the numba kernel, in rank order."""
    ints, floats, flags = _workspace(len(values))
    kept = numba_kernel()(boxes, values, codes, float(iou_threshold), ints, floats, flags)
    return ints[:kept].copy()


def rotated_nms_numpy(rboxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Indices kept by greedy NMS (exact rotated IoU), in decreasing score order: the numpy reference.

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


def class_aware_nms_numpy(rboxes, scores, class_ids, iou_threshold: float) -> np.ndarray:
    """Rotated NMS run separately per class; indices sorted by decreasing score: the numpy reference."""
    keep = [np.flatnonzero(class_ids == c)[rotated_nms_numpy(rboxes[class_ids == c], scores[class_ids == c],
                                                               iou_threshold)] for c in np.unique(class_ids)]
    merged = np.concatenate(keep) if keep else np.zeros(0, dtype=np.int64)
    return merged[np.argsort(-scores[merged], kind="stable")]


def _kernel_inputs(rboxes, scores):
    """``(rboxes [N, 5], scores [N])`` as contiguous float64 for the kernel, or None where it must not run
    (no numba, or a value not finite or beyond ``_MAX_MAGNITUDE``: the numpy reference defines those)."""
    if numba_kernel() is None:
        return None
    boxes = np.ascontiguousarray(rboxes, dtype=np.float64).reshape(-1, 5)
    values = np.ascontiguousarray(scores, dtype=np.float64).reshape(-1)
    if len(boxes) != len(values) or not np.isfinite(values).all():
        return None
    if len(boxes) and not np.abs(boxes).max() <= _MAX_MAGNITUDE:  # NaN fails too
        return None
    return boxes, values


def _class_codes(class_ids: np.ndarray):
    """int64 keys that order and equal as ``class_ids`` do (the kernel sorts them), or None for ids the
    kernel leaves to numpy (NaN)."""
    ids = np.asarray(class_ids).reshape(-1)
    if ids.dtype.kind in "ib" or (ids.dtype.kind == "u" and ids.dtype.itemsize < 8):
        return ids.astype(np.int64)
    if ids.dtype.kind == "f" and ids.dtype.itemsize <= 8:
        if np.isnan(ids).any():
            return None
        bits = (ids.astype(np.float64) + 0.0).view(np.int64)  # + 0.0: -0.0 and 0.0 are one class
        return np.where(bits < 0, bits ^ np.int64(0x7FFF_FFFF_FFFF_FFFF), bits)  # order-preserving
    return np.unique(ids, return_inverse=True)[1].reshape(-1).astype(np.int64)


def rotated_nms(rboxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Indices kept by greedy NMS (exact rotated IoU), in decreasing score order (ties in input order)."""
    inputs = _kernel_inputs(rboxes, scores)
    if inputs is None:
        return rotated_nms_numpy(rboxes, scores, iou_threshold)
    boxes, values = inputs
    return _run_kernel(boxes, values, np.zeros(len(values), dtype=np.int64), iou_threshold)


def class_aware_nms(rboxes, scores, class_ids, iou_threshold: float) -> np.ndarray:
    """Rotated NMS run separately per class; indices sorted by decreasing score (ties by class, then index)."""
    inputs = _kernel_inputs(rboxes, scores)
    codes = None if inputs is None else _class_codes(class_ids)
    if codes is None or len(codes) != len(inputs[1]):
        return class_aware_nms_numpy(rboxes, scores, class_ids, iou_threshold)
    boxes, values = inputs
    return _run_kernel(boxes, values, codes, iou_threshold)
