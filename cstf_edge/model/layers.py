"""Convolutional building blocks shared by the backbone, the neck and the head.

Every block is Conv -> BatchNorm -> SiLU (BatchNorm folds into the convolution at export), so the graph
holds only ops that ONNX opset 17 and TensorRT 10 run natively; :func:`set_activation` turns a built
model's SiLUs into ReLUs (the ``cstf-n-relu`` size).
"""
from __future__ import annotations

import copy

import torch
from torch import nn

from cstf_edge.errors import CstfError


class ConvBNAct(nn.Module):
    """``k x k`` convolution (same padding), BatchNorm, SiLU (``act=False``: no activation)."""

    def __init__(self, c_in: int, c_out: int, k: int = 1, stride: int = 1, groups: int = 1, act: bool = True):
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, k, stride, k // 2, groups=groups, bias=False)
        # Variance-preserving init, so that eval-mode activations of a fresh model (BatchNorm running
        # statistics still at 0/1) neither vanish nor explode through ~60 layers.
        nn.init.kaiming_normal_(self.conv.weight, mode="fan_in", nonlinearity="relu")
        self.bn = nn.BatchNorm2d(c_out, eps=1e-3, momentum=0.03)
        self.act = nn.SiLU(inplace=True) if act else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))


ACTIVATIONS = {"silu": nn.SiLU, "relu": nn.ReLU}


def set_activation(model: nn.Module, name: str) -> None:
    """Replace every SiLU of ``model`` by ``ACTIVATIONS[name]`` (in place; no parameters change, so weights
    trained with one activation load into the other, for fine-tuning)."""
    if name not in ACTIVATIONS:
        raise CstfError(f"unknown activation {name!r}; choose from {', '.join(ACTIVATIONS)}")
    if name == "silu":
        return
    for parent in list(model.modules()):
        for child_name, child in parent.named_children():
            if isinstance(child, nn.SiLU):
                setattr(parent, child_name, ACTIVATIONS[name](inplace=True))


class Bottleneck(nn.Module):
    """Two 3x3 convolutions with an optional residual connection."""

    def __init__(self, channels: int, shortcut: bool = True):
        super().__init__()
        self.cv1 = ConvBNAct(channels, channels, 3)
        self.cv2 = ConvBNAct(channels, channels, 3)
        self.shortcut = shortcut

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.cv2(self.cv1(x))
        return x + y if self.shortcut else y


class CSPBlock(nn.Module):
    """Cross-stage-partial block with ``depth`` bottlenecks whose outputs are all concatenated (the C2f
    layout of the YOLOv8 family: cheap, and good gradient flow at small widths)."""

    def __init__(self, c_in: int, c_out: int, depth: int = 1, shortcut: bool = True):
        super().__init__()
        self.hidden = c_out // 2
        self.cv1 = ConvBNAct(c_in, 2 * self.hidden, 1)
        self.blocks = nn.ModuleList(Bottleneck(self.hidden, shortcut) for _ in range(depth))
        self.cv2 = ConvBNAct((2 + depth) * self.hidden, c_out, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        first = self.cv1(x)
        parts = list(first) if isinstance(first, tuple) else list(first.chunk(2, dim=1))
        for block in self.blocks:
            parts.append(block(parts[-1]))
        return self.cv2(torch.cat(parts, dim=1))


class HalvesConv(nn.Module):
    """A :class:`ConvBNAct` as two convolutions, one per half of its output channels: the same numbers as
    the convolution followed by ``chunk(2)`` (convolution, BatchNorm and SiLU are per output channel), but
    the exported graph has no slices. In an INT8 graph each slice of a quantized tensor costs a dequantize
    and a copy; ONNX Runtime spent about 7 ms of 72 there on cstf-n at 1024 x 1024."""

    def __init__(self, conv: ConvBNAct):
        super().__init__()
        half = conv.conv.out_channels // 2
        self.halves = nn.ModuleList(_output_slice(conv, start, start + half) for start in (0, half))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.halves[0](x), self.halves[1](x)


def _output_slice(conv: ConvBNAct, start: int, stop: int) -> ConvBNAct:
    part = copy.deepcopy(conv)
    part.conv.weight = nn.Parameter(conv.conv.weight[start:stop].detach().clone())
    part.conv.out_channels = stop - start
    for name in ("weight", "bias"):
        setattr(part.bn, name, nn.Parameter(getattr(conv.bn, name)[start:stop].detach().clone()))
    for name in ("running_mean", "running_var"):
        setattr(part.bn, name, getattr(conv.bn, name)[start:stop].clone())
    part.bn.num_features = stop - start
    return part


def split_csp_inputs(model: nn.Module) -> nn.Module:
    """A copy of ``model`` (for export, inference only) whose CSP blocks compute their two input halves with
    :class:`HalvesConv`; the original is unchanged, so its checkpoint keys stay as trained."""
    model = copy.deepcopy(model)
    for module in model.modules():
        if isinstance(module, CSPBlock) and isinstance(module.cv1, ConvBNAct):
            module.cv1 = HalvesConv(module.cv1)
    return model


def batchnorm_as_depthwise(norm: nn.BatchNorm2d) -> nn.Conv2d:
    """The inference-time affine map of ``norm`` as a depthwise 1x1 convolution (``y = a * x + b`` per channel,
    ``a = gamma / sqrt(var + eps)``, ``b = beta - a * mean``): the same numbers up to rounding. ONNX Runtime
    quantizes a convolution into its NHWC INT8 path, where a BatchNormalization that cannot fold into a
    convolution (one after a residual sum) stays a float island between dequantize and quantize nodes."""
    if norm.running_mean is None:
        raise CstfError(f"{norm}: a BatchNorm without running statistics has no fixed inference-time affine map")
    mean, var = norm.running_mean.detach(), norm.running_var.detach()
    gamma = norm.weight.detach() if norm.affine else torch.ones_like(mean)
    beta = norm.bias.detach() if norm.affine else torch.zeros_like(mean)
    scale = gamma / torch.sqrt(var + norm.eps)
    conv = nn.Conv2d(norm.num_features, norm.num_features, 1, groups=norm.num_features, bias=True)
    with torch.no_grad():
        conv.weight.copy_(scale.view(-1, 1, 1, 1))
        conv.bias.copy_(beta - scale * mean)
    return conv.to(device=mean.device, dtype=mean.dtype).eval()


class SpatialPyramidPool(nn.Module):
    """Three chained 5x5 max-pools concatenated (SPPF): a large receptive field at stride 32."""

    def __init__(self, c_in: int, c_out: int, k: int = 5):
        super().__init__()
        hidden = c_in // 2
        self.cv1 = ConvBNAct(c_in, hidden, 1)
        self.cv2 = ConvBNAct(hidden * 4, c_out, 1)
        self.pool = nn.MaxPool2d(k, 1, k // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.cv1(x)
        p1 = self.pool(x)
        p2 = self.pool(p1)
        return self.cv2(torch.cat([x, p1, p2, self.pool(p2)], dim=1))
