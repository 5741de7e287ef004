"""The CSTF block (Cross Spatial Temporal attention Fusion), as DESIGN.md reads the paper.

Pipeline, per query level it runs on (strides 16 and 32):

1. **Keypoints** (``saliency.py``): independent saliency maps on query and reference pyramids.
2. **Correspondence as classification** (:class:`Correspondence`): each query token classifies which
   reference token it matches: a SoftMax over the reference tokens plus a learned "no match" bin. The
   logit of reference token ``j`` for query token ``i`` in head ``h`` is
   ``t_h * cos(q_i, k_j) + g_h * kp_j``: cosine similarity of L2-normalised projections (CM-Net style
   descriptor matching) scaled by a learned temperature ``t_h``, biased by the reference keypoint score
   ``kp_j`` with a learned gain ``g_h``. The no-match logit is a 1x1 convolution of the query feature
   (the paper says nothing on it: a per-token learned bin lets a token with no counterpart, e.g. a new
   ship, put its mass there instead of on a random match). Several heads attend to several regions.
3. **FCN fusion** (:class:`Fusion`): the attended reference context, the query feature, the correspondence
   confidence (maximum and normalised entropy of the SoftMax, per head) and the query keypoint score are
   fused by 1x1 and 3x3 convolutions, added residually, then normalised (BatchNorm: the figure's
   "normalisation", foldable at export).

Bounded cost (the paper is silent; our choice): global correspondence only between stride-32 query tokens
and stride-32 reference tokens; the stride-16 query tokens attend to the reference stride-32 map
average-pooled to stride 64. With ``N = (S/32)^2`` tokens at input ``S`` the SoftMax matrices hold
``heads * (N^2 + 4N * N/4) = 2 * heads * N^2`` values. Measured peak memory of the whole block, cstf-n
(2 heads), batch 1, fp32, CPU, forward without gradient (``benchmarks/bench_model.py``): 86 MiB at
1024 x 1024 input, 575 MiB at 2048 x 2048 (``MEMORY_NOTE``); at 2048 a deployment should tile (DOTA
split) rather than grow the matrices.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from cstf_edge.model.layers import ConvBNAct, batchnorm_as_depthwise
from cstf_edge.model.saliency import KeypointSaliency

MEMORY_NOTE = (
    "CSTF block, cstf-n (2 heads), batch 1, fp32, no gradient, CPU, peak resident memory growth measured by "
    "benchmarks/bench_model.py: 86 MiB at 1024 x 1024 input, 575 MiB at 2048 x 2048 (the SoftMax matrices "
    "grow with the square of the input area: tile large scenes). 2.4 of the model's 20.7 GFLOPs at 1024 "
    "without a reference."
)


class Correspondence(nn.Module):
    """Multi-head correspondence SoftMax of query tokens over reference tokens plus a no-match bin.

    Returns the attended reference context ``[B, dim, Hq, Wq]`` and the confidence maps
    ``[B, 2 * heads, Hq, Wq]`` (per head: SoftMax maximum, then entropy divided by ``log(K + 1)``).
    """

    def __init__(self, c_query: int, c_ref: int, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.head_dim = dim // heads
        self.q_proj = nn.Conv2d(c_query, dim, 1)
        self.k_proj = nn.Conv2d(c_ref, dim, 1)
        self.v_proj = nn.Conv2d(c_ref, dim, 1)
        self.no_match = nn.Conv2d(c_query, heads, 1)
        self.log_temperature = nn.Parameter(torch.full((heads, 1, 1), 2.3))  # exp(2.3) ~ 10
        self.keypoint_gain = nn.Parameter(torch.ones(heads, 1, 1))

    def _split_heads(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, dim, H, W]`` -> ``[B, heads, dim / heads, H * W]`` (explicit reshape: ``unflatten`` with -1
        leaves ``Mod`` nodes in the ONNX graph)."""
        return x.reshape(x.shape[0], self.heads, self.head_dim, -1)

    def forward(
        self, query: torch.Tensor, ref: torch.Tensor, ref_keypoints: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        q = F.normalize(self._split_heads(self.q_proj(query)), dim=2).transpose(2, 3)  # [B, h, Nq, d]
        k = F.normalize(self._split_heads(self.k_proj(ref)), dim=2)  # [B, h, d, Nk]
        v = self._split_heads(self.v_proj(ref)).transpose(2, 3)  # [B, h, Nk, d]
        kp = ref_keypoints.flatten(1).unsqueeze(1).unsqueeze(1)  # [B, 1, 1, Nk]
        no_match = self.no_match(query).flatten(2).unsqueeze(-1)  # [B, h, Nq, 1]
        logits = torch.matmul(*self._augmented(q, k, kp, no_match))  # [B, h, Nq, Nk + 1]
        prob = torch.softmax(logits, dim=-1)
        context = torch.matmul(prob, torch.cat([v, torch.zeros_like(v[:, :, :1])], dim=2))  # no-match: no value
        context = context.transpose(2, 3).reshape(query.shape[0], -1, query.shape[2], query.shape[3])
        return context, self._confidence(prob, logits, ref_keypoints, query)

    def _augmented(self, q, k, kp, no_match) -> tuple[torch.Tensor, torch.Tensor]:
        """Query/reference matrices whose product is every logit at once:
        ``[t * q, 1, nm] . [[k, 0], [g * kp, 0], [0, 1]] = [t * q.k + g * kp | nm]``. One MatMul instead of a
        scale, a bias add and a concatenation over the ``Nq x (Nk + 1)`` matrix (the dominant cost of the block
        on a CPU); the same numbers up to summation order."""
        bias = self.keypoint_gain * kp  # [B, h, 1, Nk]
        q_aug = torch.cat([q * self.log_temperature.exp(), torch.ones_like(no_match), no_match], dim=-1)
        k_aug = torch.cat([k, bias, torch.zeros_like(bias)], dim=2)  # [B, h, d + 2, Nk]
        one = torch.ones_like(bias[..., :1])
        bin_column = torch.cat([torch.zeros_like(k[..., :1]), torch.zeros_like(one), one], dim=2)  # [B, h, d + 2, 1]
        return q_aug, torch.cat([k_aug, bin_column], dim=-1)

    def _confidence(self, prob, logits, ref_keypoints, query) -> torch.Tensor:
        """SoftMax maximum and normalised entropy per head, ``[B, 2 * heads, Hq, Wq]``.

        The entropy is ``-sum p log p = log Z - E_p[s]`` for logits ``s`` and partition ``Z``, with
        ``log Z = max s - log(max p)`` (as ``max p = exp(max s) / Z``): no log over the ``Nq x (Nk + 1)``
        matrix (``E_p[s]`` is still one product and sum over it). The same value up to rounding: a near
        one-hot row can come out a few 1e-5 below zero, hence the clamp. ``max p >= 1 / (Nk + 1)``, so its log
        is safe in any precision.
        """
        peak = prob.amax(dim=-1)  # [B, h, Nq]
        expected_logit = (prob * logits).sum(dim=-1)  # E_p[s]
        entropy = (logits.amax(dim=-1) - torch.log(peak) - expected_logit).clamp_min(0.0)
        # log(K + 1) from the (small) keypoint map, so a dynamic-shape export stays right.
        bins = torch.ones_like(ref_keypoints.flatten(1)).sum(dim=1) + 1.0  # [B]
        entropy = entropy / torch.log(bins).view(-1, 1, 1)
        return torch.cat([peak, entropy], dim=1).reshape(query.shape[0], -1, query.shape[2], query.shape[3])


class Fusion(nn.Module):
    """FCN fusion: ``norm(x + conv1x1(dwconv3x3(conv1x1([x, context, confidence, keypoint]))))``.

    The 3x3 stage is depthwise (then a pointwise 1x1): a full 3x3 at 256 channels would cost 0.6 M
    parameters, a fifth of cstf-n, for context the attention already brings.
    """

    def __init__(self, channels: int, dim: int, heads: int):
        super().__init__()
        self.mix = ConvBNAct(channels + dim + 2 * heads + 1, channels, 1)
        self.refine = nn.Sequential(
            ConvBNAct(channels, channels, 3, groups=channels), ConvBNAct(channels, channels, 1, act=False)
        )
        self.norm = nn.BatchNorm2d(channels, eps=1e-3, momentum=0.03)

    def forward(self, x, context, confidence, keypoint) -> torch.Tensor:
        fused = self.mix(torch.cat([x, context, confidence, keypoint], dim=1))
        return self.norm(x + self.refine(fused))


def fusion_norms_as_convs(model: nn.Module) -> nn.Module:
    """``model`` (an export copy: changed in place, and returned) with every :class:`Fusion` normalisation as the
    equivalent depthwise 1x1 convolution (:func:`~cstf_edge.model.layers.batchnorm_as_depthwise`); its
    checkpoint keys are no longer the trained ones."""
    for module in model.modules():
        if isinstance(module, Fusion) and isinstance(module.norm, nn.BatchNorm2d):
            module.norm = batchnorm_as_depthwise(module.norm)
    return model


class CSTFBlock(nn.Module):
    """Keypoints on both pyramids, correspondence of the stride-16/32 query tokens, fusion.

    ``forward(query_feats, ref_feats)`` takes the backbone's stride 8/16/32 maps of query and reference
    and returns the query maps with strides 16 and 32 fused, plus the saliency logits per level
    (query, reference) for the auxiliary loss.
    """

    def __init__(self, channels: tuple[int, int, int], dim: int, heads: int, strides=(8, 16, 32)):
        super().__init__()
        self.strides = tuple(strides)
        self.saliency = KeypointSaliency(channels, self.strides, hidden=max(16, channels[0] // 2))
        self.match_fine = Correspondence(channels[1], channels[2], dim, heads)
        self.match_coarse = Correspondence(channels[2], channels[2], dim, heads)
        self.fuse_fine = Fusion(channels[1], dim, heads)
        self.fuse_coarse = Fusion(channels[2], dim, heads)

    def forward(self, query_feats, ref_feats):
        p3, p4, p5 = query_feats
        r5 = ref_feats[2]
        coarse, fine = self.strides[2], self.strides[1]
        q_logits, (q_kp_fine, q_kp_coarse) = self.saliency(query_feats, (fine, coarse))
        if ref_feats is query_feats:  # no reference given: an argument-identity choice, fixed at tracing
            r_logits, r_kp_coarse = q_logits, q_kp_coarse
        else:
            r_logits, (r_kp_coarse,) = self.saliency(ref_feats, (coarse,))
        # Stride-16 queries see the reference at stride 64 (bounded cost, module docstring).
        r5_pooled = F.avg_pool2d(r5, 2, 2)
        r_kp_pooled = F.max_pool2d(r_kp_coarse, 2, 2)
        ctx4, conf4 = self.match_fine(p4, r5_pooled, r_kp_pooled)
        ctx5, conf5 = self.match_coarse(p5, r5, r_kp_coarse)
        p4 = self.fuse_fine(p4, ctx4, conf4, q_kp_fine)
        p5 = self.fuse_coarse(p5, ctx5, conf5, q_kp_coarse)
        return (p3, p4, p5), q_logits, r_logits
