"""Inference helpers for the PyTorch reference: confidence filtering, then class-aware rotated NMS
(``cstf_edge.geometry.nms``, numpy). Boxes stay in network-input pixels; mapping them back to the
original image (the letterbox inverse) is the caller's job.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from cstf_edge.geometry.nms import class_aware_nms
from cstf_edge.model.detector import CSTFDetector, images_to_input


@dataclass
class Detections:
    """One image's detections: ``rboxes [K, 5]`` canonical (input pixels), ``scores [K]``,
    ``class_ids [K]``, sorted by decreasing score."""

    rboxes: np.ndarray
    scores: np.ndarray
    class_ids: np.ndarray

    def __len__(self) -> int:
        return len(self.scores)


def postprocess(detections: np.ndarray, conf: float = 0.25, iou: float = 0.5, max_candidates: int = 3000,
                max_det: int = 300) -> Detections:
    """One image's raw ``detections [N, 5 + C]`` -> filtered, NMS-ed :class:`Detections`.

    Each anchor contributes its best class (single label), as the DOTA evaluation expects one class per box.
    """
    class_scores = detections[:, 5:]
    class_ids = class_scores.argmax(axis=1)
    scores = class_scores[np.arange(len(class_scores)), class_ids]
    candidates = np.flatnonzero(scores >= conf)
    candidates = candidates[np.argsort(-scores[candidates], kind="stable")[:max_candidates]]
    rboxes = detections[candidates, :5].astype(np.float64)
    keep = class_aware_nms(rboxes, scores[candidates], class_ids[candidates], iou)[:max_det]
    return Detections(rboxes[keep], scores[candidates][keep].astype(np.float32), class_ids[candidates][keep])


@torch.no_grad()
def predict(model: CSTFDetector, images: np.ndarray, reference: np.ndarray | None = None,
            conf: float = 0.25, iou: float = 0.5, max_det: int = 300) -> list[Detections]:
    """Detections per image of uint8 BGR ``images [B, H, W, 3]`` already at the network size."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    query = images_to_input(images, device)
    ref = None if reference is None else images_to_input(reference, device)
    raw = model(query, ref).float().cpu().numpy()
    model.train(was_training)
    return [postprocess(item, conf, iou, max_det=max_det) for item in raw]
