"""Training losses: quality focal classification, ProbIoU box regression, keypoint-saliency auxiliary.

- Classification: quality focal loss (Li et al., GFL): binary cross-entropy against the soft targets of
  the task-aligned assigner, modulated by ``|target - p|^2``; summed, divided by the sum of targets.
- Box: ``1 - ProbIoU`` between decoded prediction and target on the positives, weighted by the target
  score. ProbIoU compares Gaussians, so a box turned by pi (or a square by pi/2) costs nothing: the angle
  needs no special care beyond the head's discontinuity-free parameterisation (``head.py``).
- Saliency: each level's keypoint map is pulled towards a Gaussian heatmap on the object centres (sigma
  ``max(stride / 2, sqrt(w h) / 6)`` pixels), with the same focal modulation; divided by the object count.
All losses are computed in float32 whatever the autocast precision.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from cstf_edge.model.assign import TaskAlignedAssigner
from cstf_edge.model.rbox_torch import probiou

SALIENCY_SIGMA_FRACTION = 1.0 / 6.0


@dataclass
class LossWeights:
    """Weights of the loss terms in the total."""

    cls: float = 1.0
    box: float = 5.0
    saliency: float = 1.0


@dataclass
class Targets:
    """Padded ground truth of a batch: ``boxes [B, M, 5]`` canonical, ``labels [B, M]`` class ids,
    ``valid [B, M]`` bool (False for padding)."""

    boxes: torch.Tensor
    labels: torch.Tensor
    valid: torch.Tensor

    def to(self, device) -> "Targets":
        return Targets(self.boxes.to(device), self.labels.to(device), self.valid.to(device))


def quality_focal_loss(logits: torch.Tensor, targets: torch.Tensor, gamma: float = 2.0) -> torch.Tensor:
    """Elementwise quality focal loss of logits against soft targets in ``[0, 1]``."""
    modulation = (targets - torch.sigmoid(logits)).abs().pow(gamma)
    return F.binary_cross_entropy_with_logits(logits, targets, reduction="none") * modulation


def saliency_targets(logit_shape, stride: int, targets: Targets) -> torch.Tensor:
    """Gaussian centre heatmap ``[B, 1, H, W]`` in ``[0, 1]`` for one level (maximum over objects)."""
    height, width = logit_shape[-2:]
    device = targets.boxes.device
    ys = (torch.arange(height, device=device, dtype=torch.float32) + 0.5) * stride
    xs = (torch.arange(width, device=device, dtype=torch.float32) + 0.5) * stride
    grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
    boxes = targets.boxes.float()
    dx = grid_x.flatten()[None, None] - boxes[..., 0:1]  # [B, M, HW]
    dy = grid_y.flatten()[None, None] - boxes[..., 1:2]
    size = torch.sqrt(boxes[..., 2:3] * boxes[..., 3:4]).clamp_min(0)
    sigma = torch.maximum(size * SALIENCY_SIGMA_FRACTION, torch.full_like(size, stride / 2))
    heat = torch.exp(-(dx**2 + dy**2) / (2 * sigma**2)) * targets.valid[..., None]
    if heat.shape[1] == 0:
        return heat.new_zeros(heat.shape[0], 1, height, width)
    return heat.amax(dim=1).view(-1, 1, height, width)


class DetectionLoss:
    """``loss(outputs, targets) -> (total, terms)``: ``outputs`` the detector's train-mode dict,
    ``targets`` a :class:`Targets`; ``terms`` holds the detached weighted terms by name."""

    def __init__(self, num_classes: int, strides=(8, 16, 32), weights: LossWeights | None = None,
                 assigner: TaskAlignedAssigner | None = None):
        self.num_classes = num_classes
        self.strides = tuple(strides)
        self.weights = weights or LossWeights()
        self.assigner = assigner or TaskAlignedAssigner()

    def __call__(self, outputs: dict, targets: Targets) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        cls_logits = outputs["cls_logits"].float()
        boxes = outputs["boxes"].float()
        assignment = self.assigner(
            torch.sigmoid(cls_logits.detach()), boxes.detach(), outputs["anchors"], outputs["strides"],
            targets.boxes.float(), targets.labels, targets.valid,
        )
        score_sum = assignment.scores.sum().clamp_min(1.0)
        cls_loss = quality_focal_loss(cls_logits, assignment.scores).sum() / score_sum
        box_loss = self._box_loss(boxes, assignment, score_sum)
        sal_loss = self._saliency_loss(outputs["saliency_logits"], targets)
        terms = {
            "cls": cls_loss * self.weights.cls,
            "box": box_loss * self.weights.box,
            "saliency": sal_loss * self.weights.saliency,
        }
        total = sum(terms.values())
        return total, {name: value.detach() for name, value in terms.items()}

    @staticmethod
    def _box_loss(boxes, assignment, score_sum) -> torch.Tensor:
        fg = assignment.fg_mask
        weight = assignment.scores.sum(dim=-1)[fg]
        overlap = probiou(boxes[fg], assignment.boxes[fg])
        return ((1.0 - overlap) * weight).sum() / score_sum

    def _saliency_loss(self, saliency_logits, targets: Targets) -> torch.Tensor:
        num_objects = targets.valid.sum().clamp_min(1)
        total = saliency_logits[0].new_zeros(()).float()
        for logits, stride in zip(saliency_logits, self.strides):
            heat = saliency_targets(logits.shape, stride, targets)
            total = total + quality_focal_loss(logits.float(), heat).sum()
        return total / num_objects
