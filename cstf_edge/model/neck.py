"""The PAN neck: a top-down path (stride 32 -> 8) then a bottom-up path (8 -> 32), CSP blocks at each join."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from cstf_edge.model.layers import ConvBNAct, CSPBlock


class PANNeck(nn.Module):
    """Fuses stride 8/16/32 maps of ``channels``; outputs maps of ``channels`` at the same strides."""

    def __init__(self, channels: tuple[int, int, int], depth: int):
        super().__init__()
        c3, c4, c5 = channels
        self.top_down4 = CSPBlock(c5 + c4, c4, depth, shortcut=False)
        self.top_down3 = CSPBlock(c4 + c3, c3, depth, shortcut=False)
        self.down3 = ConvBNAct(c3, c3, 3, 2)
        self.bottom_up4 = CSPBlock(c3 + c4, c4, depth, shortcut=False)
        self.down4 = ConvBNAct(c4, c4, 3, 2)
        self.bottom_up5 = CSPBlock(c4 + c5, c5, depth, shortcut=False)
        self.out_channels = channels

    def forward(self, feats: tuple[torch.Tensor, torch.Tensor, torch.Tensor]):
        p3, p4, p5 = feats
        t4 = self.top_down4(torch.cat([F.interpolate(p5, scale_factor=2.0, mode="nearest"), p4], 1))
        n3 = self.top_down3(torch.cat([F.interpolate(t4, scale_factor=2.0, mode="nearest"), p3], 1))
        n4 = self.bottom_up4(torch.cat([self.down3(n3), t4], 1))
        n5 = self.bottom_up5(torch.cat([self.down4(n4), p5], 1))
        return n3, n4, n5
