"""The anchor-free oriented head and the decoding of its outputs into rotated boxes in input pixels.

Per level and per cell (anchor point at the cell centre), the head predicts class logits, four distances
``l, t, r, b`` from the anchor to the box sides in the box's own frame (softplus, in stride units), and an
angle ``theta = (sigmoid(a) - 1/4) * pi`` in ``[-pi/4, 3pi/4)``. Width ``l + r`` and height ``t + b`` are
free (either may be the longer), so every box has two representations in that range, ``(w, h, theta)`` and
``(h, w, theta +- pi/2)``: no box sits on a discontinuity of the parameterisation, and the ProbIoU loss,
which compares Gaussians, is invariant to both symmetries (a turn by pi; by pi/2 for a square). The eval
output is canonicalised with tensor ops (``rbox_torch.canonicalize_rboxes``).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from cstf_edge.model.layers import ConvBNAct

BOX_CHANNELS = 5  # l, t, r, b, angle
CLASS_PRIOR = 0.01  # initial foreground probability of every class logit (focal-loss init)


class LevelHead(nn.Module):
    """Decoupled classification and box branches for one pyramid level."""

    def __init__(self, channels: int, num_classes: int, cls_hidden: int, box_hidden: int):
        super().__init__()
        self.cls_branch = nn.Sequential(ConvBNAct(channels, cls_hidden, 3), ConvBNAct(cls_hidden, cls_hidden, 3))
        self.box_branch = nn.Sequential(ConvBNAct(channels, box_hidden, 3), ConvBNAct(box_hidden, box_hidden, 3))
        self.cls_out = nn.Conv2d(cls_hidden, num_classes, 1)
        self.box_out = nn.Conv2d(box_hidden, BOX_CHANNELS, 1)
        nn.init.constant_(self.cls_out.bias, -math.log((1 - CLASS_PRIOR) / CLASS_PRIOR))
        nn.init.zeros_(self.box_out.bias)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.cls_out(self.cls_branch(x)), self.box_out(self.box_branch(x))


def anchor_points(feature: torch.Tensor, stride: int) -> torch.Tensor:
    """Cell centres ``[H * W, 2]`` (x, y) in input pixels of a ``[B, C, H, W]`` map."""
    height, width = feature.shape[2], feature.shape[3]
    ys = (torch.arange(height, device=feature.device, dtype=torch.float32) + 0.5) * stride
    xs = (torch.arange(width, device=feature.device, dtype=torch.float32) + 0.5) * stride
    grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([grid_x.flatten(), grid_y.flatten()], dim=-1)


def decode_boxes(raw: torch.Tensor, anchors: torch.Tensor, strides: torch.Tensor) -> torch.Tensor:
    """Rotated boxes ``[B, A, 5]`` (input pixels, not canonical) from raw box outputs ``[B, A, 5]``,
    anchors ``[A, 2]`` and per-anchor strides ``[A, 1]``."""
    dist = F.softplus(raw[..., :4].float()) * strides  # l, t, r, b
    angle = (torch.sigmoid(raw[..., 4:5].float()) - 0.25) * math.pi
    left, top, right, bottom = dist.split(1, dim=-1)
    dx, dy = (right - left) * 0.5, (bottom - top) * 0.5
    cos, sin = torch.cos(angle), torch.sin(angle)
    cx = anchors[:, 0:1] + dx * cos - dy * sin
    cy = anchors[:, 1:2] + dx * sin + dy * cos
    return torch.cat([cx, cy, left + right, top + bottom, angle], dim=-1)


class OrientedHead(nn.Module):
    """Heads over the neck's levels; returns class logits ``[B, A, C]``, decoded boxes ``[B, A, 5]``,
    anchors ``[A, 2]`` and strides ``[A, 1]`` with the levels' anchors concatenated fine to coarse."""

    def __init__(self, channels: tuple[int, ...], strides: tuple[int, ...], num_classes: int):
        super().__init__()
        self.strides = tuple(strides)
        cls_hidden = max(channels[0], min(num_classes, 100))
        box_hidden = max(32, channels[0] // 2)
        self.levels = nn.ModuleList(LevelHead(c, num_classes, cls_hidden, box_hidden) for c in channels)

    def forward(self, feats):
        cls_all, raw_all, anchors, strides = [], [], [], []
        for level, x, stride in zip(self.levels, feats, self.strides):
            cls, raw = level(x)
            cls_all.append(cls.flatten(2).transpose(1, 2))
            raw_all.append(raw.flatten(2).transpose(1, 2))
            points = anchor_points(x, stride)
            anchors.append(points)
            strides.append(torch.full_like(points[:, :1], float(stride)))
        anchors_t, strides_t = torch.cat(anchors), torch.cat(strides)
        boxes = decode_boxes(torch.cat(raw_all, dim=1), anchors_t, strides_t)
        return torch.cat(cls_all, dim=1), boxes, anchors_t, strides_t
