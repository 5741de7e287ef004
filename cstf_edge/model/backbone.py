"""The compact CNN backbone: stride 8, 16 and 32 feature maps from one width/depth-scaled definition."""
from __future__ import annotations

import torch
from torch import nn

from cstf_edge.model.layers import ConvBNAct, CSPBlock, SpatialPyramidPool


class Backbone(nn.Module):
    """Stem and four stages (strides 4, 8, 16, 32) of CSP blocks; SPPF closes the stride-32 stage.

    ``widths`` are the output channels of the stem and the four stages, ``depths`` the bottleneck counts
    of the four stages. ``forward`` returns the stride 8, 16, 32 maps.
    """

    def __init__(self, widths: tuple[int, int, int, int, int], depths: tuple[int, int, int, int]):
        super().__init__()
        c0, c1, c2, c3, c4 = widths
        self.stem = ConvBNAct(3, c0, 3, 2)
        self.stage1 = nn.Sequential(ConvBNAct(c0, c1, 3, 2), CSPBlock(c1, c1, depths[0]))
        self.stage2 = nn.Sequential(ConvBNAct(c1, c2, 3, 2), CSPBlock(c2, c2, depths[1]))
        self.stage3 = nn.Sequential(ConvBNAct(c2, c3, 3, 2), CSPBlock(c3, c3, depths[2]))
        self.stage4 = nn.Sequential(
            ConvBNAct(c3, c4, 3, 2), CSPBlock(c4, c4, depths[3]), SpatialPyramidPool(c4, c4)
        )
        self.out_channels = (c2, c3, c4)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        p3 = self.stage2(self.stage1(self.stem(x)))
        p4 = self.stage3(p3)
        p5 = self.stage4(p4)
        return p3, p4, p5
