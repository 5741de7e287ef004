"""Validation of the PyTorch reference: detections on a labelled set, scored with the DOTA Task1 rules.

Images no larger than the network input go through the same letterbox the trainer uses (the data set
without augmentation); detections are mapped back to original-image pixels through the inverse of each
sample's transform. Larger images are tiled as DOTA is split (:func:`detect_large`: windows of the input
size that overlap by ``gap`` pixels, placed by ``cstf_edge.data.split.window_origins``); each tile's
detections are shifted to full-image pixels and merged across tiles with class-aware rotated NMS.
Everything is scored against the original labels with :func:`cstf_edge.eval.evaluate_dota_arrays`.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Mapping

import numpy as np
from tqdm import tqdm

from cstf_edge._io import read_image
from cstf_edge.data.annotations import ImageLabels
from cstf_edge.data.augment import PAD_VALUE, transform_polygons
from cstf_edge.data.dataset import OrientedDetectionDataset
from cstf_edge.data.split import crop_window, window_origins
from cstf_edge.data.task1 import Task1Detections, write_task1_dir
from cstf_edge.eval import DotaEvalResult, evaluate_dota_arrays
from cstf_edge.eval.detector_map import evaluated_classes
from cstf_edge.geometry import rbox_to_poly
from cstf_edge.geometry.nms import class_aware_nms
from cstf_edge.model.detector import CSTFDetector
from cstf_edge.model.predict import Detections, predict

log = logging.getLogger(__name__)

TILE_GAP = 200  # DOTA's split overlap


def detect_large(model: CSTFDetector, image: np.ndarray, *, imgsz: int, reference: np.ndarray | None = None,
                 gap: int = TILE_GAP, batch: int = 8, conf: float = 0.01, iou: float = 0.5) -> Detections:
    """Detections of ``model`` on a BGR ``image`` of any size, in its pixels: tiles of ``imgsz`` overlapping
    by ``gap`` (DOTA's windows), per-tile NMS, then class-aware rotated NMS (``iou``) across tiles."""
    height, width = image.shape[:2]
    origins = window_origins(width, height, imgsz, gap)
    parts = []
    for start in range(0, len(origins), batch):
        chunk = origins[start:start + batch]
        tiles = np.stack([crop_window(image, left, up, imgsz, PAD_VALUE) for left, up in chunk])
        refs = None if reference is None else np.stack([crop_window(reference, left, up, imgsz, PAD_VALUE) for left, up in chunk])
        for (left, up), found in zip(chunk, predict(model, tiles, refs, conf=conf, iou=iou)):
            rboxes = found.rboxes.copy()
            rboxes[:, :2] += (left, up)
            parts.append(Detections(rboxes, found.scores, found.class_ids))
    rboxes = np.concatenate([p.rboxes for p in parts]).reshape(-1, 5)
    scores = np.concatenate([p.scores for p in parts])
    class_ids = np.concatenate([p.class_ids for p in parts])
    keep = class_aware_nms(rboxes, scores, class_ids, iou)
    return Detections(rboxes[keep], scores[keep], class_ids[keep])


def _collect(found: dict[str, list], image_id: str, result: Detections, class_names, to_image=None) -> None:
    polygons = rbox_to_poly(result.rboxes).reshape(-1, 4, 2)
    if to_image is not None:
        polygons = transform_polygons(polygons, to_image)
    for class_id, score, polygon in zip(result.class_ids, result.scores, polygons):
        found[class_names[class_id]].append((image_id, float(score), polygon))


def detect_labelled_set(model: CSTFDetector, labels: list[ImageLabels], class_names, *, imgsz: int,
                        batch: int = 16, conf: float = 0.01, iou: float = 0.5,
                        reference: Mapping[str, str | Path] | None = None, gap: int = TILE_GAP,
                        progress: bool = True) -> dict[str, Task1Detections]:
    """Per-class detections (original-image pixels) of ``model`` on the images of ``labels``; images with a
    side longer than ``imgsz`` are tiled (:func:`detect_large`). ``reference``: ``image_id -> path`` of
    co-registered reference images, or None (each query is its own reference)."""
    dataset = OrientedDetectionDataset(labels, class_names, image_shape=imgsz, augment=None, reference=reference,
                                       unknown_classes="drop")
    found: dict[str, list] = {name: [] for name in class_names}
    large = []
    with tqdm(total=len(dataset), desc="validate", unit="image", disable=not progress) as bar:
        for start in range(0, len(dataset), batch):
            samples = [dataset[i] for i in range(start, min(start + batch, len(dataset)))]
            large += [start + k for k, s in enumerate(samples) if max(s.original_shape) > imgsz]
            small = [s for s in samples if max(s.original_shape) <= imgsz]
            if small:
                refs = None if reference is None else np.stack([s.reference for s in small])
                results = predict(model, np.stack([s.image for s in small]), refs, conf=conf, iou=iou)
                for sample, result in zip(small, results):
                    _collect(found, sample.image_id, result, class_names, np.linalg.inv(sample.transform))
            bar.update(len(small))
        for index in large:
            item = labels[index]
            ref = None if reference is None else read_image(reference[item.image_id])
            result = detect_large(model, read_image(item.image_path), imgsz=imgsz, reference=ref, gap=gap,
                                  batch=batch, conf=conf, iou=iou)
            _collect(found, item.image_id, result, class_names)
            bar.update(1)
    return {name: Task1Detections([d[0] for d in dets], [d[1] for d in dets],
                                  np.array([d[2] for d in dets]).reshape(-1, 4, 2))
            for name, dets in found.items()}


def validate(model: CSTFDetector, labels: list[ImageLabels], class_names, *, imgsz: int, batch: int = 16,
             conf: float = 0.01, iou: float = 0.5, metric: str = "voc07",
             reference: Mapping[str, str | Path] | None = None, save_dir: str | Path | None = None,
             progress: bool = True) -> DotaEvalResult:
    """DOTA Task1 mAP (IoU > 0.5) of ``model`` on ``labels`` (each with ``image_path`` set), over the
    classes of :func:`evaluated_classes` (e.g. only ``ship`` on HRSC2016's class-agnostic labels).
    ``save_dir``: also write the detections there as ``Task1_<class>.txt``."""
    classes = evaluated_classes(labels, class_names)
    detections = detect_labelled_set(model, labels, class_names, imgsz=imgsz, batch=batch, conf=conf,
                                     iou=iou, reference=reference, progress=progress)
    if save_dir is not None:
        write_task1_dir(save_dir, detections)
    return evaluate_dota_arrays(detections, labels, classes=classes, metric=metric)
