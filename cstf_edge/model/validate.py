"""Validation of the PyTorch reference: detections on a labelled set, scored with the DOTA Task1 rules.

Images go through the same letterbox the trainer uses (the data set without augmentation); detections are
mapped back to original-image pixels through the inverse of each sample's transform, and scored against
the original labels with :func:`cstf_edge.eval.evaluate_dota_arrays`.
"""
from __future__ import annotations

import numpy as np
from tqdm import tqdm

from cstf_edge.data.annotations import ImageLabels
from cstf_edge.data.augment import transform_polygons
from cstf_edge.data.dataset import OrientedDetectionDataset
from cstf_edge.data.task1 import Task1Detections
from cstf_edge.eval import DotaEvalResult, evaluate_dota_arrays
from cstf_edge.geometry import rbox_to_poly
from cstf_edge.model.detector import CSTFDetector
from cstf_edge.model.predict import predict


def detect_labelled_set(model: CSTFDetector, labels: list[ImageLabels], class_names, *, imgsz: int,
                        batch: int = 16, conf: float = 0.01, iou: float = 0.5,
                        progress: bool = True) -> dict[str, Task1Detections]:
    """Per-class detections (original-image pixels) of ``model`` on the images of ``labels``."""
    dataset = OrientedDetectionDataset(labels, class_names, image_shape=imgsz, augment=None,
                                       unknown_classes="drop")
    found: dict[str, list] = {name: [] for name in class_names}
    starts = range(0, len(dataset), batch)
    for start in tqdm(starts, desc="validate", unit="batch", disable=not progress):
        samples = [dataset[i] for i in range(start, min(start + batch, len(dataset)))]
        results = predict(model, np.stack([s.image for s in samples]), conf=conf, iou=iou)
        for sample, result in zip(samples, results):
            polygons = transform_polygons(rbox_to_poly(result.rboxes), np.linalg.inv(sample.transform))
            for class_id, score, polygon in zip(result.class_ids, result.scores, polygons):
                found[class_names[class_id]].append((sample.image_id, float(score), polygon))
    return {name: Task1Detections([d[0] for d in dets], [d[1] for d in dets],
                                  np.array([d[2] for d in dets]).reshape(-1, 4, 2))
            for name, dets in found.items()}


def validate(model: CSTFDetector, labels: list[ImageLabels], class_names, *, imgsz: int, batch: int = 16,
             conf: float = 0.01, iou: float = 0.5, metric: str = "voc07",
             progress: bool = True) -> DotaEvalResult:
    """DOTA Task1 mAP of ``model`` on ``labels`` (each with ``image_path`` set)."""
    detections = detect_labelled_set(model, labels, class_names, imgsz=imgsz, batch=batch, conf=conf,
                                     iou=iou, progress=progress)
    return evaluate_dota_arrays(detections, labels, metric=metric)
