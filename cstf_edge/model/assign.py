"""Task-aligned assignment of anchor points to ground-truth rotated boxes (TOOD, rotated with ProbIoU).

For every ground truth the candidates are the anchors whose centre lies inside the rotated box, plus on
each level the anchor of the cell holding the box centre (so a box thinner than a stride still gets
candidates). Among them the ``topk`` with the highest alignment ``score^alpha * ProbIoU^beta`` become
positives; an anchor claimed by several boxes keeps the one it overlaps most. Classification targets are
the alignment normalised per box to that box's best ProbIoU (a quality target for the focal loss).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from cstf_edge.model.rbox_torch import points_in_rboxes, probiou

TIE_BREAK = 1e-12  # ranks candidates above non-candidates when every alignment underflows to 0


@dataclass
class Assignment:
    """``fg_mask [B, A]`` bool, ``boxes [B, A, 5]`` target boxes, ``scores [B, A, C]`` soft class targets,
    ``gt_index [B, A]`` the matched ground truth (meaningful where ``fg_mask``)."""

    fg_mask: torch.Tensor
    boxes: torch.Tensor
    scores: torch.Tensor
    gt_index: torch.Tensor


class TaskAlignedAssigner:
    """See the module docstring. Inputs are detached; shapes: scores ``[B, A, C]`` (probabilities),
    boxes ``[B, A, 5]``, anchors ``[A, 2]``, strides ``[A, 1]``, ground truths ``[B, M, 5]`` with labels
    ``[B, M]`` and validity ``[B, M]`` (padding is False)."""

    def __init__(self, topk: int = 10, alpha: float = 0.5, beta: float = 6.0):
        self.topk = topk
        self.alpha = alpha
        self.beta = beta

    @torch.no_grad()
    def __call__(self, scores, boxes, anchors, strides, gt_boxes, gt_labels, gt_valid) -> Assignment:
        batch, num_anchors, num_classes = scores.shape
        if gt_boxes.shape[1] == 0:
            return _empty_assignment(scores, boxes)
        candidates = self._candidates(anchors, strides, gt_boxes) & gt_valid[..., None]
        overlaps = probiou(gt_boxes[:, :, None, :], boxes[:, None, :, :]).clamp_min(0) * candidates
        label_index = gt_labels.clamp_min(0)[..., None].expand(-1, -1, num_anchors)
        class_scores = scores.transpose(1, 2).gather(1, label_index)  # [B, M, A]
        alignment = class_scores.pow(self.alpha) * overlaps.pow(self.beta) * candidates
        ranked = alignment + TIE_BREAK * candidates
        k = min(self.topk, num_anchors)
        top = ranked.topk(k, dim=-1).indices
        positive = torch.zeros_like(candidates).scatter_(-1, top, True) & candidates
        positive = _one_box_per_anchor(positive, overlaps)
        fg_mask = positive.any(dim=1)
        gt_index = positive.float().argmax(dim=1)  # [B, A]
        target_boxes = gt_boxes.gather(1, gt_index[..., None].expand(-1, -1, 5))
        target_labels = gt_labels.gather(1, gt_index).clamp_min(0)
        quality = _normalised_alignment(alignment * positive, overlaps * positive)  # [B, A]
        target_scores = torch.zeros_like(scores)
        target_scores.scatter_(-1, target_labels[..., None], (quality * fg_mask)[..., None].to(scores.dtype))
        return Assignment(fg_mask, target_boxes, target_scores, gt_index)

    @staticmethod
    def _candidates(anchors, strides, gt_boxes) -> torch.Tensor:
        inside = points_in_rboxes(anchors, gt_boxes)  # [B, M, A]
        offset = (anchors[None, None] - gt_boxes[:, :, None, :2]).abs()  # [B, M, A, 2]
        centre_cell = (offset <= strides[None, None] / 2).all(dim=-1)
        return inside | centre_cell


def _one_box_per_anchor(positive: torch.Tensor, overlaps: torch.Tensor) -> torch.Tensor:
    """Where an anchor is positive for several boxes, keep only the box of highest overlap."""
    claimed = positive.sum(dim=1, keepdim=True) > 1  # [B, 1, A]
    best = (overlaps + TIE_BREAK * positive).argmax(dim=1, keepdim=True)  # [B, 1, A]
    best_mask = torch.zeros_like(positive).scatter_(1, best, True)
    return torch.where(claimed, best_mask & positive.any(dim=1, keepdim=True), positive)


def _normalised_alignment(alignment: torch.Tensor, overlaps: torch.Tensor) -> torch.Tensor:
    """Per anchor, its alignment divided by its box's best alignment, times that box's best overlap."""
    best_alignment = alignment.amax(dim=-1, keepdim=True)
    best_overlap = overlaps.amax(dim=-1, keepdim=True)
    normalised = alignment * best_overlap / (best_alignment + 1e-9)
    return normalised.amax(dim=1)


def _empty_assignment(scores: torch.Tensor, boxes: torch.Tensor) -> Assignment:
    batch, num_anchors = scores.shape[:2]
    return Assignment(
        fg_mask=torch.zeros(batch, num_anchors, dtype=torch.bool, device=scores.device),
        boxes=torch.zeros_like(boxes),
        scores=torch.zeros_like(scores),
        gt_index=torch.zeros(batch, num_anchors, dtype=torch.long, device=scores.device),
    )
