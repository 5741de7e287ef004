"""Rotated boxes, polygons and their overlaps, in the one convention of ``boxes``."""
from cstf_edge.geometry.boxes import (
    as_polygons,
    as_rboxes,
    canonicalize_rboxes,
    poly_to_hbb,
    poly_to_rbox,
    rbox_to_hbb,
    rbox_to_poly,
)
from cstf_edge.geometry.iou import (
    polygon_area,
    polygon_iou_matrix,
    polygon_iou_pairs,
    polygon_overlap_pairs,
    probiou,
    rbox_iou_matrix,
)

__all__ = [
    "as_polygons",
    "as_rboxes",
    "canonicalize_rboxes",
    "poly_to_hbb",
    "poly_to_rbox",
    "rbox_to_hbb",
    "rbox_to_poly",
    "polygon_area",
    "polygon_iou_matrix",
    "polygon_iou_pairs",
    "polygon_overlap_pairs",
    "probiou",
    "rbox_iou_matrix",
]
