"""Validation of the PyTorch reference: the runtime's :class:`~cstf_edge.runtime.Detector` over the model in
memory (``TorchRunner.from_model``), so validation, export gates and the bench share one preprocessing,
one tiling (images larger than the input cut into DOTA's windows overlapping by ``gap``, merged with
class-aware rotated NMS) and one post-processing; scored against the original labels with the DOTA Task1
rules (``cstf_edge.eval.detector_map``).
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Mapping

import numpy as np

from cstf_edge.data.annotations import ImageLabels
from cstf_edge.data.task1 import Task1Detections, write_task1_dir
from cstf_edge.eval import DotaEvalResult, evaluate_dota_arrays
from cstf_edge.eval.detector_map import detect_labelled, evaluated_classes
from cstf_edge.model.detector import CSTFDetector
from cstf_edge.runtime.backends.torch import TorchRunner
from cstf_edge.runtime.detector import DEFAULT_OVERLAP, DetectionResult, Detector

log = logging.getLogger(__name__)

TILE_GAP = DEFAULT_OVERLAP  # DOTA's split overlap


def model_detector(model: CSTFDetector, class_names, *, imgsz: int, batch: int = 8, conf: float = 0.01,
                   iou: float = 0.5, gap: int = TILE_GAP) -> Detector:
    """A runtime Detector over ``model`` as it is (its device; put back in its training mode on exit). An
    overlap as large as the input (tiny inputs in tests) becomes a quarter of it."""
    overlap = gap if gap < imgsz else imgsz // 4
    return _RestoringDetector(TorchRunner.from_model(model, class_names, imgsz), conf=conf, iou=iou,
                              overlap=overlap, batch=batch)


class _RestoringDetector(Detector):
    """Puts the model back in training mode on exit when it was training (validation between epochs)."""

    def __enter__(self) -> "Detector":
        self._was_training = self.runner.model.training
        return super().__enter__()

    def __exit__(self, *exc_info) -> None:
        model = self.runner.model
        super().__exit__(*exc_info)
        model.train(self._was_training)


def detect_large(model: CSTFDetector, image: np.ndarray, *, imgsz: int, reference: np.ndarray | None = None,
                 gap: int = TILE_GAP, batch: int = 8, conf: float = 0.01, iou: float = 0.5) -> DetectionResult:
    """Detections of ``model`` on a BGR ``image`` of any size, in its pixels (tiled when larger than ``imgsz``)."""
    names = [str(i) for i in range(model.num_classes)]
    with model_detector(model, names, imgsz=imgsz, batch=batch, conf=conf, iou=iou, gap=gap) as detector:
        return detector.detect_large(image, reference)


def detect_labelled_set(model: CSTFDetector, labels: list[ImageLabels], class_names, *, imgsz: int,
                        batch: int = 16, conf: float = 0.01, iou: float = 0.5,
                        reference: Mapping[str, str | Path] | None = None, gap: int = TILE_GAP,
                        progress: bool = True) -> dict[str, Task1Detections]:
    """Per-class detections (original-image pixels) of ``model`` on the images of ``labels``."""
    with model_detector(model, class_names, imgsz=imgsz, batch=batch, conf=conf, iou=iou, gap=gap) as detector:
        return detect_labelled(detector, labels, progress, "validate", reference)


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
