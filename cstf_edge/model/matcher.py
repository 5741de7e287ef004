"""CSTFMatcher: the detector's correspondence mechanism turned into an image matcher (DESIGN.md, Matching).

One network over a reference and a query image (the project's preprocessing: letterboxed, RGB, /255):

1. **Shared backbone** (the detector's stem and first three stages, same layer names, so the detector's
   weights initialise it) on each image, reduced to a per-image contrast-normalised gray input: colour
   does not carry across sensors, and an instance normalisation removes each image's gain and offset.
2. **Keypoint saliency** on each image (the detector's :class:`KeypointSaliency` over strides 8 and 16,
   combined on the stride-16 grid): which tokens are distinctive.
3. **Coarse descriptors** on the stride-16 grid, made pair-aware by one self- and one cross-attention
   layer (query tokens attend to reference tokens and back; the paper's "correspondence maps that
   leverage information from multiple image regions simultaneously").
4. **Correspondence as classification**: scaled cosine similarity of every query token with every
   reference token, biased by the reference token's matchability (the saliency before peak sharpening,
   log, times a learned gain that starts small), plus a learned no-match bin; the
   SoftMax over reference tokens (+ bin) times the SoftMax over query tokens (+ bin) is the dual-softmax
   match probability. A query token's match is its most probable reference token, kept only when the
   choice is mutual (that reference token's most probable query token is it).
5. **Sub-pixel refinement**: on the stride-4 fine map, the query point of coarse token ``(r, c)`` (the
   centre of fine cell ``(4r, 4c)``, which is also the token's centre: see :data:`FEATURE_CENTRE`) is
   correlated with a ``WINDOW x WINDOW`` window of the reference fine map around its matched token; the
   SoftMax-weighted mean offset moves the reference point off the grid.

Everything is static-shaped (no data-dependent Python control flow), so eval mode traces to ONNX with two
inputs, ``reference [1 or B, 3, H, W]`` (broadcast over the query batch, so the runtime can try several
query rotations against one reference) and ``query [B, 3, H, W]``, and outputs, per query token,
``ref_points [B, N, 2]`` and ``query_points [B, N, 2]`` (network-input pixels, continuous convention:
pixel ``(i, j)`` centred at ``(j + 0.5, i + 0.5)``), ``confidence [B, N]`` (dual-softmax probability,
0 when not mutual) and ``saliency [B, N]`` (the query keypoint score). Train mode returns the pieces the
losses need (``match_loss.py``). ``H`` and ``W`` must be multiples of 16.

Where the paper is silent (all of this), these are our choices: strides 16/4, one attention layer of each
kind, a scalar no-match logit, the 7 x 7 refinement window, the gray instance-normalised input.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from cstf_edge.model.detector import MODEL_SPECS, ModelConfigError
from cstf_edge.model.layers import ConvBNAct, CSPBlock
from cstf_edge.model.saliency import KeypointSaliency, combine_scales

COARSE_STRIDE = 16
FINE_STRIDE = 4
CELLS = COARSE_STRIDE // FINE_STRIDE  # fine cells per coarse token side
QUERY_CELL = 0  # the query point of coarse token (r, c) is the centre of its fine cell (CELLS*r, CELLS*c)
FEATURE_CENTRE = 0.5
"""Where a feature cell sits: cell ``i`` of a map of stride ``s`` is centred at continuous ``s * i + 0.5``, not
``s * i + s / 2``: every stride-2 convolution (3 x 3, padding 1) centres output ``i`` on input ``2 i``, and
pixel ``2 i`` is centred at ``2 i + 0.5``. A point convention that ignored this would put a half-token shift
into the coarse ground truth and a rotation-dependent 1.5 px bias into the refined points."""
WINDOW = 7  # refinement window side, in fine cells (covers the whole coarse token and a margin)
INPUT_NAMES = ("reference", "query")


@dataclass(frozen=True)
class MatcherSpec:
    """Size of a matcher: the backbone size it shares with the detector and its descriptor widths."""

    backbone: str = "cstf-n"
    descriptor_dim: int = 128
    fine_dim: int = 32
    heads: int = 4


class MatcherBackbone(nn.Module):
    """The detector backbone's stem and stages 1-3 (strides 4, 8, 16), same attribute names."""

    def __init__(self, widths: tuple[int, ...], depths: tuple[int, ...]):
        super().__init__()
        c0, c1, c2, c3 = widths[:4]
        self.stem = ConvBNAct(3, c0, 3, 2)
        self.stage1 = nn.Sequential(ConvBNAct(c0, c1, 3, 2), CSPBlock(c1, c1, depths[0]))
        self.stage2 = nn.Sequential(ConvBNAct(c1, c2, 3, 2), CSPBlock(c2, c2, depths[1]))
        self.stage3 = nn.Sequential(ConvBNAct(c2, c3, 3, 2), CSPBlock(c3, c3, depths[2]))
        self.out_channels = (c1, c2, c3)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        p2 = self.stage1(self.stem(x))
        p3 = self.stage2(p2)
        return p2, p3, self.stage3(p3)


def normalized_gray(images: torch.Tensor) -> torch.Tensor:
    """``[B, 3, H, W]`` in [0, 1] -> the per-image zero-mean, unit-variance gray, repeated to 3 channels."""
    gray = images.mean(dim=1, keepdim=True)
    mean = gray.mean(dim=(2, 3), keepdim=True)
    std = (gray - mean).pow(2).mean(dim=(2, 3), keepdim=True).add(1e-6).sqrt()
    return ((gray - mean) / std).expand(-1, 3, -1, -1)


class TokenAttention(nn.Module):
    """Multi-head attention of ``x`` tokens over ``source`` tokens, pre-norm, with an MLP, residual."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.scale = 1.0 / math.sqrt(dim // heads)
        self.norm = nn.LayerNorm(dim)
        self.qkv_q = nn.Linear(dim, dim)
        self.qkv_kv = nn.Linear(dim, 2 * dim)
        self.merge = nn.Linear(dim, dim)
        self.mlp = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        return x.reshape(b, n, self.heads, d // self.heads).transpose(1, 2)

    def forward(self, x: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
        q = self._split(self.qkv_q(self.norm(x)))
        k, v = self.qkv_kv(self.norm(source)).chunk(2, dim=-1)
        k, v = self._split(k), self._split(v)
        attention = torch.softmax(q @ k.transpose(-1, -2) * self.scale, dim=-1)
        out = (attention @ v).transpose(1, 2).reshape(x.shape)
        x = x + self.merge(out)
        return x + self.mlp(x)


def tokens(feature: torch.Tensor) -> torch.Tensor:
    """``[B, C, h, w]`` -> ``[B, h*w, C]`` (row-major tokens)."""
    return feature.flatten(2).transpose(1, 2)


def window_offsets(device=None) -> torch.Tensor:
    """``[WINDOW*WINDOW, 2]`` (dx, dy) offsets of the refinement window, in fine cells, row-major."""
    r = torch.arange(WINDOW, device=device, dtype=torch.float32) - WINDOW // 2
    dy, dx = torch.meshgrid(r, r, indexing="ij")
    return torch.stack([dx.reshape(-1), dy.reshape(-1)], dim=1)


def reference_windows(fine: torch.Tensor) -> torch.Tensor:
    """``[B, C, 4h, 4w]`` fine map -> ``[B, W*W, C, h*w]``: for each coarse token, the fine features of the
    window centred on its fine cell ``(4r + QUERY_CELL, 4c + QUERY_CELL)`` (zero outside the image)."""
    radius = WINDOW // 2
    b, c, fh, fw = fine.shape
    h, w = fh // CELLS, fw // CELLS
    padded = F.pad(fine, (radius, radius, radius, radius))
    slices = []
    for dy in range(WINDOW):
        for dx in range(WINDOW):
            part = padded[:, :, dy + QUERY_CELL: dy + QUERY_CELL + CELLS * h: CELLS,
                          dx + QUERY_CELL: dx + QUERY_CELL + CELLS * w: CELLS]
            slices.append(part.reshape(b, c, h * w))
    return torch.stack(slices, dim=1)


def token_points(h: int, w: int, device=None) -> torch.Tensor:
    """``[h*w, 2]`` continuous (x, y) of each coarse token's query point, in input pixels."""
    offset = FINE_STRIDE * QUERY_CELL + FEATURE_CENTRE
    ys, xs = torch.meshgrid(torch.arange(h, device=device, dtype=torch.float32),
                            torch.arange(w, device=device, dtype=torch.float32), indexing="ij")
    return torch.stack([xs.reshape(-1), ys.reshape(-1)], dim=1) * COARSE_STRIDE + offset


class CSTFMatcher(nn.Module):
    """Reference/query matcher (module docstring). ``forward(reference, query)``."""

    def __init__(self, spec: MatcherSpec = MatcherSpec()):
        super().__init__()
        if spec.backbone not in MODEL_SPECS:
            raise ModelConfigError(f"unknown backbone size {spec.backbone!r}; choose one of {sorted(MODEL_SPECS)}")
        self.spec = spec
        size = MODEL_SPECS[spec.backbone]
        self.backbone = MatcherBackbone(size.widths(), size.depths())
        c_fine, c_mid, c_coarse = self.backbone.out_channels
        dim, fine_dim = spec.descriptor_dim, spec.fine_dim
        self.saliency = KeypointSaliency((c_mid, c_coarse), (8, 16), hidden=32)
        self.down = ConvBNAct(c_mid, c_coarse, 3, 2)
        self.coarse_in = nn.Sequential(ConvBNAct(2 * c_coarse, dim, 3), nn.Conv2d(dim, dim, 1))
        self.self_attention = TokenAttention(dim, spec.heads)
        self.cross_attention = TokenAttention(dim, spec.heads)
        self.coarse_out = nn.Linear(dim, dim)
        self.fine_in = ConvBNAct(c_fine, fine_dim, 3)
        self.fine_from_coarse = nn.Conv2d(dim, fine_dim, 1)
        self.fine_out = nn.Sequential(ConvBNAct(fine_dim, fine_dim, 3), nn.Conv2d(fine_dim, fine_dim, 1))
        self.log_temperature = nn.Parameter(torch.tensor(math.log(10.0)))
        self.keypoint_gain = nn.Parameter(torch.tensor(0.1))
        self.no_match = nn.Parameter(torch.tensor(1.0))
        self.fine_temperature = nn.Parameter(torch.tensor(math.log(1.0 / math.sqrt(fine_dim))))

    # -- pieces ---------------------------------------------------------------------------------------
    def _features(self, images: torch.Tensor):
        """Fine map, coarse map, saliency logits per level, and two stride-16 scores: the keypoint score
        (peak-sharpened, DoG-like: for ranking keypoints) and the plain matchability (for the bias)."""
        p2, p3, p4 = self.backbone(normalized_gray(images))
        logits, (keypoints,) = self.saliency((p3, p4), (COARSE_STRIDE,))
        matchable = combine_scales([torch.sigmoid(x) for x in logits], self.saliency.strides, COARSE_STRIDE)
        coarse = self.coarse_in(torch.cat([p4, self.down(p3)], dim=1))
        return p2, coarse, logits, keypoints, matchable

    def _fine(self, p2: torch.Tensor, coarse_tokens: torch.Tensor, h: int, w: int) -> torch.Tensor:
        coarse = coarse_tokens.transpose(1, 2).reshape(coarse_tokens.shape[0], -1, h, w)
        up = F.interpolate(self.fine_from_coarse(coarse), scale_factor=float(CELLS), mode="nearest")
        return self.fine_out(self.fine_in(p2) + up)

    def log_assignment(self, desc_q: torch.Tensor, desc_r: torch.Tensor, saliency_r: torch.Tensor):
        """Row and column log-SoftMaxes ``[B, Nq + 1, Nr + 1]`` of the similarity with the no-match bin
        (last row/column)."""
        sim = torch.exp(self.log_temperature) * (desc_q @ desc_r.transpose(1, 2))
        sim = sim + self.keypoint_gain * torch.log(saliency_r.flatten(1).unsqueeze(1) + 1e-4)
        b, nq, nr = sim.shape
        sim = torch.cat([sim, self.no_match.expand(b, nq, 1)], dim=2)
        sim = torch.cat([sim, self.no_match.expand(b, 1, nr + 1)], dim=1)
        return torch.log_softmax(sim, dim=2), torch.log_softmax(sim, dim=1)

    def refine(self, fine_q: torch.Tensor, fine_r: torch.Tensor, index: torch.Tensor):
        """Expected (dx, dy) ``[B, N, 2]`` (fine cells) of each query point in the window of its matched
        reference token ``index [B, N]``, and the window's SoftMax ``[B, W*W, N]``."""
        b, c = fine_q.shape[:2]
        query = fine_q[:, :, QUERY_CELL::CELLS, QUERY_CELL::CELLS].reshape(b, c, -1)
        windows = reference_windows(fine_r)
        gathered = torch.gather(windows, 3, index[:, None, None, :].expand(-1, windows.shape[1], c, -1))
        correlation = (gathered * query.unsqueeze(1)).sum(dim=2) * torch.exp(self.fine_temperature)
        weights = torch.softmax(correlation, dim=1)
        offsets = torch.einsum("bkn,kd->bnd", weights, window_offsets(fine_q.device))
        return offsets, weights

    # -- forward --------------------------------------------------------------------------------------
    def forward(self, reference: torch.Tensor, query: torch.Tensor):
        p2_q, coarse_q, logits_q, sal_q, _ = self._features(query)
        p2_r, coarse_r, logits_r, _, sal_r = self._features(reference)
        batch = query.shape[0]
        h, w = coarse_q.shape[2], coarse_q.shape[3]
        tok_q, tok_r = tokens(coarse_q), tokens(coarse_r)
        tok_q, tok_r = self.self_attention(tok_q, tok_q), self.self_attention(tok_r, tok_r)
        # one reference for every query (turn) of the batch: broadcast after its own self-attention
        tok_r = tok_r.expand(batch, -1, -1)
        p2_r, sal_r = p2_r.expand(batch, -1, -1, -1), sal_r.expand(batch, -1, -1, -1)
        tok_q, tok_r = self.cross_attention(tok_q, tok_r), self.cross_attention(tok_r, tok_q)
        desc_q = F.normalize(self.coarse_out(tok_q), dim=-1)
        desc_r = F.normalize(self.coarse_out(tok_r), dim=-1)
        rows, cols = self.log_assignment(desc_q, desc_r, sal_r)
        fine_q, fine_r = self._fine(p2_q, tok_q, h, w), self._fine(p2_r, tok_r, h, w)
        if self.training:
            return {"log_rows": rows, "log_cols": cols, "fine_query": fine_q, "fine_reference": fine_r,
                    "saliency_logits": logits_q, "reference_saliency_logits": logits_r, "grid": (h, w)}
        return self._matches(rows, cols, fine_q, fine_r, sal_q, h, w)

    def _matches(self, rows, cols, fine_q, fine_r, sal_q, h: int, w: int):
        probability = torch.exp(rows[:, :-1, :-1] + cols[:, :-1, :-1])
        confidence, index = probability.max(dim=2)
        best_query = probability.argmax(dim=1)
        query_ids = torch.arange(index.shape[1], device=index.device).unsqueeze(0)
        mutual = torch.gather(best_query, 1, index) == query_ids
        offsets, _ = self.refine(fine_q, fine_r, index)
        points = token_points(h, w, fine_q.device)
        ref_points = points[index] + FINE_STRIDE * offsets
        query_points = points.unsqueeze(0).expand(index.shape[0], -1, -1)
        return ref_points, query_points, confidence * mutual.to(confidence.dtype), sal_q.flatten(1)


def build_matcher(backbone: str = "cstf-n") -> CSTFMatcher:
    """A freshly initialised matcher on the ``backbone`` size of the detector."""
    return CSTFMatcher(MatcherSpec(backbone=backbone))


def matcher_spec_dict(matcher: CSTFMatcher) -> dict:
    """The matcher's size as plain JSON-able values."""
    return asdict(matcher.spec)


def check_matcher_input(height: int, width: int) -> None:
    """Raise unless ``height x width`` is a positive multiple of the coarse stride."""
    if height <= 0 or width <= 0 or height % COARSE_STRIDE or width % COARSE_STRIDE:
        raise ModelConfigError(f"matcher input {height}x{width} is not a multiple of {COARSE_STRIDE}; use e.g. 512")
