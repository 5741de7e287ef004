"""Inference helper for the PyTorch reference, with the runtime's post-processing
(``cstf_edge.runtime.postprocess``: confidence filtering, class-aware exact rotated NMS). Boxes stay in
network-input pixels; mapping them back to the original image (the letterbox inverse) is the caller's job.
"""
from __future__ import annotations

import numpy as np
import torch

from cstf_edge.model.detector import CSTFDetector, images_to_input
from cstf_edge.runtime.postprocess import Detections, postprocess


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
