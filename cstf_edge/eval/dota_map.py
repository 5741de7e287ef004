"""DOTA Task1 (oriented boxes) mAP with the official devkit's rules, vectorised.

The rules of ``dota_evaluation_task1.py`` (CAPTAIN-WHU/DOTA_devkit), which change the numbers:

- detections of a class are ranked over all images with ``np.argsort(-scores)``, scores in file order;
- a detection's candidate ground truths (same image, same class) are those whose axis-aligned box
  overlaps its own with the +1 pixel convention; its overlap ``ovmax`` is the largest exact polygon
  IoU among them and ``jmax`` the first candidate reaching it (a 0/0 IoU, two zero-area polygons, is
  NaN there and makes ``ovmax`` NaN: the detection is a false positive);
- ``ovmax > iou_threshold`` (strictly) and ``jmax`` difficult (any non-zero flag): neither TP nor FP;
  ``jmax`` not difficult: TP if no better-ranked detection matched it, else FP; otherwise FP;
- recall is over the non-difficult objects; AP is VOC07 11-point or VOC12 area; mAP is the mean over
  the classes that occur in the ground truth.

Vectorised: ``ovmax`` and ``jmax`` do not depend on the ranking, only "already matched" does, and a
detection is a TP exactly when it is the best-ranked one among those matching its ``jmax``. HRSC2016
is evaluated with the same code (one class, ``ship``).
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field

import numpy as np

from cstf_edge.data.annotations import ImageLabels
from cstf_edge.data.dota import imageset_label_files, read_dota_labels, read_imageset  # noqa: F401 (re-exported)
from cstf_edge.data.hrsc import load_hrsc_ground_truth
from cstf_edge.data.task1 import Task1Detections, read_task1_dir
from cstf_edge.errors import DataError, EvaluationError, LabelFormatError
from cstf_edge.geometry import as_polygons, poly_to_hbb
from cstf_edge.geometry.iou import intersection_upper_bound, polygon_area, polygon_overlap_pairs
from cstf_edge.geometry.pairs import expand_ranges

log = logging.getLogger(__name__)

METRICS = ("voc07", "voc12")
LABEL_FORMATS = ("dota", "hrsc")
# Pairs whose IoU cannot exceed the threshold by more than this are not computed exactly.
_PRUNE_MARGIN = 1e-9


@dataclass
class ClassEvaluation:
    """One class: AP, the precision/recall curves in rank order, and the counts."""

    ap: float
    recall: np.ndarray
    precision: np.ndarray
    num_detections: int
    num_ground_truth: int
    true_positives: int


@dataclass
class DotaEvalResult:
    """mAP and per-class figures; ``recall``/``precision`` are those after the last detection and
    ``num_ground_truth`` counts non-difficult objects (the recall denominator)."""

    mAP: float
    per_class_ap: dict[str, float]
    recall: dict[str, float]
    precision: dict[str, float]
    num_detections: dict[str, int]
    num_ground_truth: dict[str, int]
    metric: str
    iou_threshold: float = 0.5
    curves: dict[str, ClassEvaluation] = field(default_factory=dict, repr=False)

    def summary(self) -> dict:
        """The JSON summary: mAP, per-class AP, metric and total detection / object counts."""
        return {
            "mAP": float(self.mAP),
            "per_class_ap": {name: float(ap) for name, ap in self.per_class_ap.items()},
            "metric": self.metric,
            "num_detections": int(sum(self.num_detections.values())),
            "num_ground_truth": int(sum(self.num_ground_truth.values())),
        }


def check_metric(metric: str) -> None:
    if metric not in METRICS:
        raise EvaluationError(f"unknown AP metric {metric!r}; use one of {', '.join(METRICS)}")


def voc_ap(recall: np.ndarray, precision: np.ndarray, metric: str = "voc07") -> float:
    """VOC07 11-point AP (``metric="voc07"``) or VOC12 area under the precision envelope (``"voc12"``),
    computed exactly as the devkit's ``voc_ap``."""
    check_metric(metric)
    if metric == "voc07":
        ap = 0.0
        for threshold in np.arange(0.0, 1.1, 0.1):
            reached = recall >= threshold
            ap += (np.max(precision[reached]) if reached.any() else 0.0) / 11.0
        return float(ap)
    mrec = np.concatenate(([0.0], recall, [1.0]))
    mpre = np.concatenate(([0.0], precision, [0.0]))
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]
    steps = np.nonzero(mrec[1:] != mrec[:-1])[0]
    return float(np.sum((mrec[steps + 1] - mrec[steps]) * mpre[steps + 1]))


def _keep_overlapping(det_bounds, gt_bounds, pair_det, pair_gt, axis):
    """The pairs whose axis-aligned boxes overlap along ``axis`` (0: x, 1: y) with the devkit's +1
    pixel convention; bounds are column-major ``[4, N]`` (xmin, ymin, xmax, ymax)."""
    low = np.maximum(gt_bounds[axis][pair_gt], det_bounds[axis][pair_det])
    high = np.minimum(gt_bounds[axis + 2][pair_gt], det_bounds[axis + 2][pair_det])
    keep = np.flatnonzero(high - low + 1.0 > 0)
    return pair_det[keep], pair_gt[keep]


def _sweep_key(det_hbb, gt_hbb, num_images):
    """A sort key for (image, x) with each image in its own band of values (x clipped into it, so
    infinities stay in their image), and the margin that covers the +1 convention and its rounding."""
    x = np.concatenate([det_hbb[:, [0, 2]].ravel(), gt_hbb[:, [0, 2]].ravel()])
    x = x[np.isfinite(x)]
    origin, span = (x.min(), x.max() - x.min()) if len(x) else (0.0, 0.0)
    margin = 2.0 + 1e-9 * (abs(origin) + span + 1.0) * (num_images + 1)
    band = 2.0 * (span + margin) + 1.0
    return lambda image, value: image * band + np.clip(value - origin, -margin, span + margin), margin


def _candidate_pairs(det_image, det_hbb, gt_image, gt_hbb, num_images):
    """(detection, ground truth) pairs of one image whose axis-aligned boxes overlap (+1 convention),
    grouped by detection (ascending), ground truths in no particular order within a detection.

    Sort and sweep, no loop over images: ground truths sorted by (image, xmin); a detection's range
    holds those of its image with xmin in ``[xmin - widest - margin, xmax + margin]`` (``widest``:
    the image's widest ground truth), a superset that the devkit's test then filters, x then y.
    """
    key, margin = _sweep_key(det_hbb, gt_hbb, num_images)
    widest = np.zeros(num_images)
    np.fmax.at(widest, gt_image, gt_hbb[:, 2] - gt_hbb[:, 0])  # fmax: NaN widths ignored
    gt_keys = key(gt_image, gt_hbb[:, 0])
    order = np.argsort(gt_keys, kind="stable")
    lo = np.searchsorted(gt_keys[order], key(det_image, det_hbb[:, 0] - widest[det_image] - margin), "left")
    hi = np.searchsorted(gt_keys[order], key(det_image, det_hbb[:, 2] + margin), "right")
    pair_det, pair_pos = expand_ranges(lo, hi)
    det_bounds, gt_bounds = np.ascontiguousarray(det_hbb.T), np.ascontiguousarray(gt_hbb[order].T)
    for axis in (0, 1):
        pair_det, pair_pos = _keep_overlapping(det_bounds, gt_bounds, pair_det, pair_pos, axis)
    return pair_det, order[pair_pos]


def _may_exceed(bound, area_a, area_b, iou_threshold):
    """Whether an intersection of at most ``bound`` can give an IoU above the threshold (with a margin)."""
    return bound > (iou_threshold - _PRUNE_MARGIN) * (area_a + area_b - bound)


def _pair_ious(det_polys, gt_polys, det_hbb, gt_hbb, pair_det, pair_gt, iou_threshold):
    """Devkit IoU of candidate pairs; pairs that provably cannot exceed the threshold get -1.

    The bounds: the intersection is at most the smaller area and the overlap of the true (no +1)
    axis-aligned boxes, then, on the pairs passing those, ``intersection_upper_bound`` (the overlap of
    the extents in either polygon's own frame). A 0/0 IoU is NaN, as in the devkit.
    """
    area_det = np.abs(polygon_area(det_polys))[pair_det]
    area_gt = np.abs(polygon_area(gt_polys))[pair_gt]
    d, g = det_hbb[pair_det], gt_hbb[pair_gt]
    box_w = np.clip(np.minimum(d[:, 2], g[:, 2]) - np.maximum(d[:, 0], g[:, 0]), 0, None)
    box_h = np.clip(np.minimum(d[:, 3], g[:, 3]) - np.maximum(d[:, 1], g[:, 1]), 0, None)
    bound = np.minimum(np.minimum(area_det, area_gt), box_w * box_h)
    zero_union = (area_det == 0) & (area_gt == 0)
    ious = np.full(len(pair_det), -1.0)
    ious[zero_union] = np.nan
    keep = np.flatnonzero(_may_exceed(bound, area_det, area_gt, iou_threshold) & ~zero_union)
    det_pairs, gt_pairs = det_polys[pair_det[keep]], gt_polys[pair_gt[keep]]
    bound = np.fmin(bound[keep], intersection_upper_bound(det_pairs, gt_pairs))
    still = _may_exceed(bound, area_det[keep], area_gt[keep], iou_threshold)
    inter, union = polygon_overlap_pairs(det_pairs[still], gt_pairs[still])
    with np.errstate(divide="ignore", invalid="ignore"):
        ious[keep[still]] = inter / union
    return ious


def _best_overlaps(num_dets, pair_det, pair_gt, ious):
    """Per detection: ``ovmax`` (-inf without candidates, NaN if any candidate IoU is NaN) and
    ``jmax`` (the lowest-index candidate reaching it, the devkit's first; -1 if none)."""
    ovmax = np.full(num_dets, -np.inf)
    jmax = np.full(num_dets, -1, dtype=np.int64)
    if len(pair_det) == 0:
        return ovmax, jmax
    starts = np.flatnonzero(np.r_[True, pair_det[1:] != pair_det[:-1]])
    segment_max = np.maximum.reduceat(ious, starts)
    ovmax[pair_det[starts]] = segment_max
    is_best = ious == np.repeat(segment_max, np.diff(np.r_[starts, len(ious)]))
    none = np.iinfo(np.int64).max
    first_best = np.minimum.reduceat(np.where(is_best, pair_gt, none), starts)
    jmax[pair_det[starts]] = np.where(first_best < none, first_best, -1)
    return ovmax, jmax


def evaluate_detections(
    det_image,
    det_scores,
    det_polygons,
    gt_image,
    gt_polygons,
    gt_difficult,
    *,
    iou_threshold: float = 0.5,
    metric: str = "voc07",
    num_images: int | None = None,
) -> ClassEvaluation:
    """Evaluate one class from arrays (no files).

    ``det_image`` ``[N]`` int image index of each detection, ``det_scores`` ``[N]`` in file order,
    ``det_polygons`` ``[N, 4, 2]``; ``gt_image`` ``[G]``, ``gt_polygons`` ``[G, 4, 2]`` in label-file
    order within each image, ``gt_difficult`` ``[G]`` (non-zero = difficult). Image indices are
    ``0 .. num_images - 1`` (default: one past the largest used).
    """
    check_metric(metric)
    det_image = np.asarray(det_image, dtype=np.int64).reshape(-1)
    gt_image = np.asarray(gt_image, dtype=np.int64).reshape(-1)
    scores = np.asarray(det_scores, dtype=np.float64).reshape(-1)
    det_polys = as_polygons(det_polygons).reshape(-1, 4, 2)
    gt_polys = as_polygons(gt_polygons).reshape(-1, 4, 2)
    difficult = np.asarray(gt_difficult).reshape(-1).astype(bool)
    if num_images is None:
        num_images = int(max(det_image.max(initial=-1), gt_image.max(initial=-1))) + 1
    used = np.concatenate([det_image, gt_image])
    if ((used < 0) | (used >= num_images)).any():
        raise EvaluationError(f"image indices must lie in 0 .. {num_images - 1} (num_images)")
    det_hbb, gt_hbb = poly_to_hbb(det_polys), poly_to_hbb(gt_polys)
    pair_det, pair_gt = _candidate_pairs(det_image, det_hbb, gt_image, gt_hbb, num_images)
    ious = _pair_ious(det_polys, gt_polys, det_hbb, gt_hbb, pair_det, pair_gt, iou_threshold)
    ovmax, jmax = _best_overlaps(len(scores), pair_det, pair_gt, ious)
    ranking = np.argsort(-scores)  # the devkit's call: its order among ties is the reference
    ovmax, jmax = ovmax[ranking], jmax[ranking]
    matched = ovmax > iou_threshold  # NaN and -inf compare False
    ignored = matched & difficult[np.where(matched, jmax, 0)] if len(gt_polys) else np.zeros_like(matched)
    claims = np.flatnonzero(matched & ~ignored)
    _, first_claim = np.unique(jmax[claims], return_index=True)
    tp = np.zeros(len(scores))
    tp[claims[first_claim]] = 1.0
    fp = (~ignored).astype(np.float64) - tp
    return _class_figures(tp, fp, int(np.count_nonzero(~difficult)), metric)


def _class_figures(tp: np.ndarray, fp: np.ndarray, num_positive: int, metric: str) -> ClassEvaluation:
    tp_cum, fp_cum = np.cumsum(tp), np.cumsum(fp)
    with np.errstate(divide="ignore", invalid="ignore"):
        recall = tp_cum / float(num_positive) if num_positive else np.zeros_like(tp_cum)
    precision = tp_cum / np.maximum(tp_cum + fp_cum, np.finfo(np.float64).eps)
    ap = voc_ap(recall, precision, metric) if len(tp) else 0.0
    return ClassEvaluation(ap, recall, precision, len(tp), num_positive, int(tp.sum()))


def _image_indices(image_ids: list[str], index_of: dict[str, int], class_name: str) -> np.ndarray:
    """Image index of each detection; an image outside the evaluated set is an ``EvaluationError``."""
    indices = np.array([index_of.get(name, -1) for name in image_ids], dtype=np.int64)
    if (indices < 0).any():
        unknown = sorted({name for name in image_ids if name not in index_of})
        shown = ", ".join(unknown[:5]) + (" ..." if len(unknown) > 5 else "")
        raise EvaluationError(
            f"class {class_name}: detections on {len(unknown)} image(s) not in the evaluated image set "
            f"({shown}); add their label files / image-set lines or remove those detections"
        )
    return indices


def _check_result_classes(detections: dict[str, Task1Detections], present: list[str], wanted: list[str]) -> None:
    """Warn about result classes that are not evaluated; refuse results none of whose classes is in
    the ground truth (a naming mismatch such as ``Task1_Plane.txt`` against ``plane`` would score 0)."""
    extra = sorted(set(detections) - set(wanted))
    if extra:
        log.warning("result classes not evaluated (no ground truth or not requested): %s", extra)
    has_detections = any(len(dets) for dets in detections.values())
    if has_detections and not set(detections) & set(present):
        raise EvaluationError(
            f"no result class matches a ground-truth class: results have {sorted(detections)}, the ground "
            f"truth has {present}; name result files Task1_<class>.txt with the label's class names "
            "(exact case)"
        )


def evaluate_dota_arrays(
    detections: dict[str, Task1Detections],
    ground_truth: list[ImageLabels],
    *,
    classes=None,
    metric: str = "voc07",
    iou_threshold: float = 0.5,
) -> DotaEvalResult:
    """DOTA Task1 mAP of in-memory detections (``{class: Task1Detections}``, file order) against the
    labels of the evaluated images (one ``ImageLabels`` each, ``image_id`` as in the detections).

    ``classes``: the classes to evaluate (default: every class in the ground truth); a requested class
    absent from the ground truth is skipped with a warning, as it has no recall. Every detection, of
    any class, must be on an evaluated image; an empty image set is an ``EvaluationError``.
    """
    check_metric(metric)
    if not ground_truth:
        raise EvaluationError("no images to evaluate: the ground truth is empty; pass the labels of the "
                              "evaluated images (for DOTA, the labelTxt folder)")
    index_of = {labels.image_id: i for i, labels in enumerate(ground_truth)}
    if len(index_of) != len(ground_truth):
        raise EvaluationError("the ground truth lists an image id twice; each image must appear once")
    det_indices = {name: _image_indices(dets.image_ids, index_of, name) for name, dets in detections.items()}
    gt_image = np.repeat(np.arange(len(ground_truth)), [len(labels) for labels in ground_truth])
    gt_polys = np.concatenate([labels.polygons for labels in ground_truth] + [np.zeros((0, 4, 2))])
    gt_difficult = np.concatenate([labels.difficult for labels in ground_truth] + [np.zeros(0, int)])
    gt_class = np.asarray([name for labels in ground_truth for name in labels.classes], dtype=object)
    present = sorted(set(gt_class.tolist()))
    if not present:
        log.warning("the %d evaluated images hold no ground-truth object: no class to evaluate", len(ground_truth))
    wanted = present if classes is None else [name for name in classes if name in present]
    if classes is not None and len(wanted) < len(list(classes)):
        log.warning("classes without ground truth, not evaluated: %s", sorted(set(classes) - set(present)))
    _check_result_classes(detections, present, wanted)
    curves = {}
    for name in wanted:
        dets = detections.get(name, Task1Detections.empty())
        in_class = gt_class == name
        curves[name] = evaluate_detections(
            det_indices.get(name, np.zeros(0, np.int64)), dets.scores, dets.polygons,
            gt_image[in_class], gt_polys[in_class], gt_difficult[in_class],
            iou_threshold=iou_threshold, metric=metric, num_images=len(ground_truth),
        )
    return _summarise(curves, metric, iou_threshold)


def _summarise(curves: dict[str, ClassEvaluation], metric: str, iou_threshold: float) -> DotaEvalResult:
    last = lambda values: float(values[-1]) if len(values) else 0.0  # noqa: E731
    per_class_ap = {name: c.ap for name, c in curves.items()}
    return DotaEvalResult(
        mAP=float(np.mean(list(per_class_ap.values()))) if curves else 0.0,
        per_class_ap=per_class_ap,
        recall={name: last(c.recall) for name, c in curves.items()},
        precision={name: last(c.precision) for name, c in curves.items()},
        num_detections={name: c.num_detections for name, c in curves.items()},
        num_ground_truth={name: c.num_ground_truth for name, c in curves.items()},
        metric=metric,
        iou_threshold=iou_threshold,
        curves=curves,
    )


def load_ground_truth(
    labels_dir, imageset=None, *, labels_format: str = "dota", on_error: str = "raise"
) -> list[ImageLabels]:
    """Ground truth of the image set (default: every label file), image ids from the file stems:
    DOTA labels ``<labels_dir>/<image_id>.txt`` (``labels_format="dota"``) or HRSC2016 XML
    ``<labels_dir>/<image_id>.xml`` (``"hrsc"``, class ``ship``).

    A missing folder or label file, or an empty image set, is an ``EvaluationError``.
    """
    if labels_format not in LABEL_FORMATS:
        raise EvaluationError(f"unknown labels format {labels_format!r}; use one of {', '.join(LABEL_FORMATS)}")
    try:
        if labels_format == "hrsc":
            return load_hrsc_ground_truth(labels_dir, imageset, on_error=on_error)
        paths = imageset_label_files(labels_dir, ".txt", imageset, subfolder="labelTxt")
    except LabelFormatError:
        raise
    except DataError as exc:
        raise EvaluationError(str(exc)) from exc
    return [read_dota_labels(path, on_error=on_error) for path in paths]


def evaluate_dota(
    results,
    labels_dir,
    imageset=None,
    *,
    metric: str = "voc07",
    iou_threshold: float = 0.5,
    classes=None,
    labels_format: str = "dota",
) -> DotaEvalResult:
    """DOTA Task1 mAP of ``results`` (a folder of ``Task1_<class>.txt`` or ``{class: Task1Detections}``)
    against the labels in ``labels_dir`` (``labels_format`` ``"dota"`` or ``"hrsc"``, as
    ``load_ground_truth`` reads them), over the images of ``imageset`` (default: every label file).

    Example: ``evaluate_dota("out/task1", "DOTA/val/labelTxt", metric="voc07").mAP``;
    HRSC2016: ``evaluate_dota("out/task1", "HRSC2016/FullDataSet/Annotations", labels_format="hrsc")``.
    """
    check_metric(metric)
    ground_truth = load_ground_truth(labels_dir, imageset, labels_format=labels_format)
    if isinstance(results, (str, os.PathLike)):
        try:
            results = read_task1_dir(results)
        except DataError as exc:
            raise EvaluationError(str(exc)) from exc
    return evaluate_dota_arrays(
        results, ground_truth, classes=classes, metric=metric, iou_threshold=iou_threshold
    )
