"""Scale-invariant keypoint saliency: a light head per pyramid level, peak-sharpened and max-combined.

Our reading of "scale-invariant keypoints detected independently in both reference and query images"
(DESIGN.md): each level scores every token; a DoG detector keeps local extrema, so each level's map is
sharpened by comparing it with its 3x3 max-pool (a soft, differentiable version of ``x == maxpool(x)``:
``s * exp(-PEAK_SHARPNESS * (maxpool(s) - s))``, 1 on a peak and decaying below it); the levels are then
combined by a maximum over scales on a common grid (max-pool down from finer levels, nearest-neighbour
up from coarser ones). The paper gives neither the head nor the sharpening: these are our choices.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from cstf_edge.model.layers import ConvBNAct

PEAK_SHARPNESS = 10.0
"""How fast a token's score falls with its gap below the local 3x3 maximum (score units)."""


class SaliencyHead(nn.Module):
    """One level's keypoint logit map ``[B, 1, H, W]``: a 3x3 ConvBNAct then a 1x1 convolution."""

    def __init__(self, channels: int, hidden: int):
        super().__init__()
        self.body = ConvBNAct(channels, hidden, 3)
        self.out = nn.Conv2d(hidden, 1, 1)
        nn.init.constant_(self.out.bias, -4.0)  # most tokens are not keypoints

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.body(x))


def sharpen_peaks(score: torch.Tensor) -> torch.Tensor:
    """Soft non-maximum suppression of a ``[B, 1, H, W]`` score map in ``[0, 1]`` (see module docstring)."""
    local_max = F.max_pool2d(score, 3, 1, 1)
    return score * torch.exp(-PEAK_SHARPNESS * (local_max - score))


def combine_scales(maps: list[torch.Tensor], strides: tuple[int, ...], target_stride: int) -> torch.Tensor:
    """Maximum over levels of score maps resampled to the grid of ``target_stride``.

    Finer maps are max-pooled by their stride ratio, coarser ones repeated (nearest); the input size must
    be a multiple of the coarsest stride so the grids line up (the detector requires it).
    """
    resampled = []
    for score, stride in zip(maps, strides):
        if stride < target_stride:
            ratio = target_stride // stride
            score = F.max_pool2d(score, ratio, ratio)
        elif stride > target_stride:
            score = F.interpolate(score, scale_factor=float(stride // target_stride), mode="nearest")
        resampled.append(score)
    combined = resampled[0]
    for score in resampled[1:]:
        combined = torch.maximum(combined, score)
    return combined


class KeypointSaliency(nn.Module):
    """Saliency heads over pyramid levels; returns the raw logits per level (the auxiliary loss's input)
    and the sharpened, scale-combined score on the grids of ``target_strides``."""

    def __init__(self, channels: tuple[int, ...], strides: tuple[int, ...], hidden: int):
        super().__init__()
        self.strides = tuple(strides)
        self.heads = nn.ModuleList(SaliencyHead(c, hidden) for c in channels)

    def forward(
        self, features: tuple[torch.Tensor, ...], target_strides: tuple[int, ...]
    ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        logits = [head(x) for head, x in zip(self.heads, features)]
        sharpened = [sharpen_peaks(torch.sigmoid(logit)) for logit in logits]
        combined = [combine_scales(sharpened, self.strides, stride) for stride in target_strides]
        return logits, combined
