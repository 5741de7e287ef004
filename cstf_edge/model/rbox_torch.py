"""Torch twins of the rotated-box convention and of ProbIoU (the one place in the model package).

``canonicalize_rboxes`` mirrors :func:`cstf_edge.geometry.canonicalize_rboxes` with tensor ops only (it
sits at the end of the exported graph); ``probiou`` mirrors :func:`cstf_edge.geometry.iou.probiou`
(``1 -`` Hellinger distance of the boxes' Gaussians, Ultralytics' clamping). Tests check both against the
numpy originals.
"""
from __future__ import annotations

import math

import torch

HALF_PI = math.pi / 2
SQUARE_RTOL = 1e-9  # as cstf_edge.geometry.boxes.SQUARE_RTOL
PROBIOU_EPS = 1e-7  # as cstf_edge.geometry.iou.PROBIOU_EPS


def canonicalize_rboxes(boxes: torch.Tensor) -> torch.Tensor:
    """``[..., 5]`` boxes with ``w >= h`` and angle in ``[-pi/2, pi/2)`` (squares: ``[-pi/4, pi/4)``)."""
    cx, cy, w, h, angle = boxes.unbind(-1)
    swap = w < h
    long_side = torch.maximum(w, h)
    short_side = torch.minimum(w, h)
    angle = torch.where(swap, angle + HALF_PI, angle)
    square = (long_side - short_side).abs() <= SQUARE_RTOL * long_side
    period = torch.where(square, torch.full_like(angle, HALF_PI), torch.full_like(angle, math.pi))
    low = -0.5 * period
    angle = angle - low
    angle = angle - period * torch.floor(angle / period) + low
    angle = torch.where(angle >= low + period, angle - period, angle)  # rounding at the top end
    return torch.stack([cx, cy, long_side, short_side, angle], dim=-1)


def gaussian_covariance(boxes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(var x, var y, cov xy) of the uniform density on each ``[..., 5]`` box."""
    var_w, var_h = boxes[..., 2] ** 2 / 12.0, boxes[..., 3] ** 2 / 12.0
    cos, sin = torch.cos(boxes[..., 4]), torch.sin(boxes[..., 4])
    return var_w * cos**2 + var_h * sin**2, var_w * sin**2 + var_h * cos**2, (var_w - var_h) * cos * sin


def probiou(a: torch.Tensor, b: torch.Tensor, eps: float = PROBIOU_EPS) -> torch.Tensor:
    """ProbIoU ``[...]`` of broadcastable rotated boxes ``a[..., 5]`` and ``b[..., 5]``, in ``[0, 1]``.

    Differentiable; invariant to a turn by pi and, for squares, by pi/2, so it needs no angle handling.
    """
    x1, y1, x2, y2 = a[..., 0], a[..., 1], b[..., 0], b[..., 1]
    a1, b1, c1 = gaussian_covariance(a)
    a2, b2, c2 = gaussian_covariance(b)
    sum_a, sum_b, sum_c = a1 + a2, b1 + b2, c1 + c2
    det_sum = sum_a * sum_b - sum_c**2
    t1 = (sum_a * (y1 - y2) ** 2 + sum_b * (x1 - x2) ** 2) / (det_sum + eps) * 0.25
    t2 = (sum_c * (x2 - x1) * (y1 - y2)) / (det_sum + eps) * 0.5
    det_1 = (a1 * b1 - c1**2).clamp_min(0.0)
    det_2 = (a2 * b2 - c2**2).clamp_min(0.0)
    t3 = 0.5 * torch.log(det_sum / (4 * torch.sqrt(det_1 * det_2) + eps) + eps)
    bhattacharyya = (t1 + t2 + t3).clamp(eps, 100.0)
    hellinger = torch.sqrt(1.0 - torch.exp(-bhattacharyya) + eps)
    return 1.0 - hellinger


def points_in_rboxes(points: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """Mask ``[..., M, A]``: is point ``points[A, 2]`` inside box ``boxes[..., M, 5]`` (edges included)."""
    offset = points[None, :, :] - boxes[..., :, None, :2]  # [..., M, A, 2]
    cos, sin = torch.cos(boxes[..., 4])[..., None], torch.sin(boxes[..., 4])[..., None]
    along = offset[..., 0] * cos + offset[..., 1] * sin
    across = -offset[..., 0] * sin + offset[..., 1] * cos
    return (along.abs() <= boxes[..., 2, None] / 2) & (across.abs() <= boxes[..., 3, None] / 2)
