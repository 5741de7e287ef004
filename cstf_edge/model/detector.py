"""The CSTF detector: backbone -> CSTF block -> PAN neck -> oriented head, sizes n/s/m from one definition.

Input: RGB images scaled to ``[0, 1]``, ``[B, 3, H, W]`` with ``H`` and ``W`` multiples of 32 (the
project's preprocessing: letterbox, BGR -> RGB, /255, CHW; see :func:`images_to_input`).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn

from cstf_edge.errors import CstfError
from cstf_edge.model.backbone import Backbone
from cstf_edge.model.cstf_block import CSTFBlock
from cstf_edge.model.head import OrientedHead
from cstf_edge.model.layers import set_activation
from cstf_edge.model.neck import PANNeck
from cstf_edge.model.rbox_torch import canonicalize_rboxes

STRIDES = (8, 16, 32)
BASE_WIDTHS = (64, 128, 256, 512, 1024)
BASE_DEPTHS = (3, 6, 6, 3)
BASE_NECK_DEPTH = 3


class ModelConfigError(CstfError):
    """An unknown model size or an input the model cannot take."""


@dataclass(frozen=True)
class ModelSpec:
    """Width/depth multipliers of one size, the channel cap, the correspondence width/heads and the
    activation of every convolution block (``silu``, or ``relu``, which an INT8 graph folds into the
    quantized convolution where SiLU costs a quantized sigmoid and multiply)."""

    width: float
    depth: float
    max_channels: int
    attention_dim: int
    heads: int
    activation: str = "silu"

    def widths(self) -> tuple[int, ...]:
        return tuple(_round_to_8(min(c, self.max_channels) * self.width) for c in BASE_WIDTHS)

    def depths(self) -> tuple[int, ...]:
        return tuple(max(1, round(d * self.depth)) for d in BASE_DEPTHS)

    def neck_depth(self) -> int:
        return max(1, round(BASE_NECK_DEPTH * self.depth))


MODEL_SPECS: dict[str, ModelSpec] = {
    "cstf-n": ModelSpec(width=0.25, depth=0.33, max_channels=1024, attention_dim=64, heads=2),
    "cstf-s": ModelSpec(width=0.50, depth=0.33, max_channels=1024, attention_dim=128, heads=4),
    "cstf-m": ModelSpec(width=0.75, depth=0.67, max_channels=768, attention_dim=192, heads=6),
    "cstf-n-relu": ModelSpec(width=0.25, depth=0.33, max_channels=1024, attention_dim=64, heads=2, activation="relu"),
}


def _round_to_8(value: float) -> int:
    return max(8, int(math.ceil(value / 8) * 8))


class CSTFDetector(nn.Module):
    """Oriented detector over a query image and an optional co-registered reference image.

    ``forward(images, reference=None)``: without a reference the query is its own reference (its
    backbone features are reused; tracing with one input bakes that choice in, with no data-dependent
    branch). Eval mode returns ``detections [B, N, 5 + C]``: canonical ``cx, cy, w, h, angle`` in input
    pixels then per-class sigmoid scores. Train mode returns a dict: ``cls_logits [B, N, C]``, ``boxes
    [B, N, 5]`` (decoded, not canonical), ``anchors [N, 2]``, ``strides [N, 1]``, ``saliency_logits``
    (query, one ``[B, 1, h, w]`` per level) and ``reference_saliency_logits``.
    """

    def __init__(self, spec: ModelSpec, num_classes: int):
        super().__init__()
        self.spec = spec
        self.num_classes = int(num_classes)
        self.strides = STRIDES
        widths = spec.widths()
        self.backbone = Backbone(widths, spec.depths())
        channels = self.backbone.out_channels
        self.cstf = CSTFBlock(channels, spec.attention_dim, spec.heads, STRIDES)
        self.neck = PANNeck(channels, spec.neck_depth())
        self.head = OrientedHead(channels, STRIDES, self.num_classes)
        set_activation(self, spec.activation)

    def forward(self, images: torch.Tensor, reference: torch.Tensor | None = None):
        query_feats = self.backbone(images)
        ref_feats = query_feats if reference is None else self.backbone(reference)
        feats, query_saliency, ref_saliency = self.cstf(query_feats, ref_feats)
        cls_logits, boxes, anchors, strides = self.head(self.neck(feats))
        if self.training:
            return {
                "cls_logits": cls_logits,
                "boxes": boxes,
                "anchors": anchors,
                "strides": strides,
                "saliency_logits": query_saliency,
                "reference_saliency_logits": ref_saliency,
            }
        return torch.cat([canonicalize_rboxes(boxes), torch.sigmoid(cls_logits.float())], dim=-1)


def build_model(name: str = "cstf-n", num_classes: int = 15) -> CSTFDetector:
    """A freshly initialised detector of size ``name`` (one of ``MODEL_SPECS``)."""
    if name not in MODEL_SPECS:
        raise ModelConfigError(f"unknown model size {name!r}; choose one of {sorted(MODEL_SPECS)}")
    if num_classes < 1:
        raise ModelConfigError(f"num_classes must be at least 1, got {num_classes}")
    return CSTFDetector(MODEL_SPECS[name], num_classes)


def spec_dict(model: CSTFDetector) -> dict:
    """The model's size parameters as plain JSON-able values."""
    return {**asdict(model.spec), "num_classes": model.num_classes, "strides": list(model.strides)}


def check_input_shape(height: int, width: int) -> None:
    """Raise unless the network input ``height x width`` is a positive multiple of the coarsest stride
    (twice that, since the correspondence pools the stride-32 map once more)."""
    multiple = 2 * STRIDES[-1]
    if height <= 0 or width <= 0 or height % multiple or width % multiple:
        raise ModelConfigError(
            f"input size {height}x{width} is not a multiple of {multiple}; use e.g. 512, 640 or 1024"
        )


def images_to_input(images: np.ndarray | torch.Tensor, device: torch.device | str = "cpu") -> torch.Tensor:
    """uint8 BGR ``[B, H, W, 3]`` (already letterboxed to the network size) -> float RGB ``[B, 3, H, W]``
    in ``[0, 1]`` on ``device`` (the conversion runs on the device, after a uint8 copy)."""
    batch = torch.as_tensor(images).to(device, non_blocking=True)
    if batch.ndim != 4 or batch.shape[-1] != 3:
        raise ModelConfigError(f"images must be uint8 [B, H, W, 3] BGR, got shape {tuple(batch.shape)}")
    check_input_shape(int(batch.shape[1]), int(batch.shape[2]))
    return batch.flip(-1).permute(0, 3, 1, 2).float().div_(255.0).contiguous()
