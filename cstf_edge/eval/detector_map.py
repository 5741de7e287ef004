"""mAP of a deployed artifact: run a :class:`cstf_edge.runtime.Detector` (any backend) over a labelled set
and score it with the DOTA Task1 rules. Export gates, ``cstf-edge bench`` and validation share it, so every
precision and backend is measured by the same code on the same images.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Mapping

import numpy as np
from tqdm import tqdm

from cstf_edge._io import read_image
from cstf_edge.data.annotations import ImageLabels
from cstf_edge.data.task1 import Task1Detections
from cstf_edge.errors import EvaluationError
from cstf_edge.eval.dota_map import DotaEvalResult, evaluate_dota_arrays

log = logging.getLogger(__name__)

MAP_CONF = 0.001
MAP_NMS_IOU = 0.5


def detect_labelled(detector, labels: list[ImageLabels], progress: bool = True, desc: str = "detect",
                    references: Mapping[str, str | Path] | None = None) -> dict[str, Task1Detections]:
    """Per-class detections of ``detector`` (scene tiled when larger than its tile) on each labelled image;
    ``references``: ``image_id -> path`` of co-registered reference images (None: none)."""
    found: dict[str, list] = {name: [] for name in detector.class_names}
    for item in tqdm(labels, desc=desc, unit="image", disable=not progress, leave=False):
        with detector.times("decode"):
            image = read_image(item.image_path)
            reference = None if references is None else read_image(references[item.image_id])
        result = detector.detect_large(image, reference)
        for name, score, polygon in zip(result.names, result.scores, result.polygons):
            found[name].append((item.image_id, float(score), polygon))
    return {name: Task1Detections([d[0] for d in dets], [d[1] for d in dets],
                                  np.array([d[2] for d in dets]).reshape(-1, 4, 2))
            for name, dets in found.items()}


def evaluated_classes(labels: list[ImageLabels], class_names) -> list[str]:
    """The model's classes that the ground truth has objects of (in the model's order). Ground-truth
    classes the model has no output for are left out with a warning; none in common is an error."""
    present = {name for item in labels for name in item.classes}
    classes = [name for name in class_names if name in present]
    unknown = sorted(present - set(class_names))
    if not classes:
        raise EvaluationError(f"the model's classes {list(class_names)} share none with the ground truth's "
                              f"{sorted(present)}; evaluate on data labelled with the model's classes")
    if unknown:
        log.warning("ground-truth classes the model does not detect, not evaluated: %s", unknown)
    return classes


def evaluate_detector(detector, labels: list[ImageLabels], metrics=("voc07", "voc12"),
                      progress: bool = True, desc: str = "detect") -> dict[str, DotaEvalResult]:
    """``{metric: DotaEvalResult}`` of ``detector`` on ``labels`` (each with ``image_path``)."""
    classes = evaluated_classes(labels, detector.class_names)
    detections = detect_labelled(detector, labels, progress, desc)
    return {metric: evaluate_dota_arrays(detections, labels, classes=classes, metric=metric) for metric in metrics}
