"""Losses of the CSTF matcher from exact ground-truth transforms.

* **Coarse (correspondence classification)**: each query token's point, mapped into the reference by the
  ground truth, names its reference token (the one centred nearest); the loss is the negative log of the row and the column
  SoftMax at that pair (SuperGlue / LoFTR style). A query token whose point falls outside the reference or
  on the query's empty border must choose the no-match bin (row), and so must a reference token whose
  point falls outside the query's content (column).
* **Fine (sub-pixel)**: given the ground-truth reference token, the expected window offset must equal the
  true offset (L2, in fine cells, only where the truth lies inside the window).
* **Saliency**: each image's keypoint logits learn, by binary cross-entropy, which tokens have a true
  counterpart that the coarse step ranks first (a learned "matchable keypoint" score).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from cstf_edge.model.matcher import (COARSE_STRIDE, FEATURE_CENTRE, FINE_STRIDE, WINDOW, CSTFMatcher,
                                     token_points)

FINE_WEIGHT = 1.0
SALIENCY_WEIGHT = 0.2


def _project(transform: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """``[B, 3, 3]`` transforms applied to ``[B, N, 2]`` points."""
    xyw = torch.cat([points, torch.ones_like(points[..., :1])], dim=-1) @ transform.transpose(1, 2)
    return xyw[..., :2] / xyw[..., 2:3]


def _inside(points: torch.Tensor, size: int) -> torch.Tensor:
    return ((points >= 0) & (points < size)).all(dim=-1)


def _mask_at(mask: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """``mask [B, S, S]`` read at the pixels holding ``points [B, N, 2]`` (False outside)."""
    size = mask.shape[-1]
    ij = points.floor().long().clamp(0, size - 1)
    flat = mask.flatten(1).gather(1, ij[..., 1] * size + ij[..., 0])
    return flat.bool() & _inside(points, size)


def targets(transform: torch.Tensor, query_mask: torch.Tensor, h: int, w: int) -> dict[str, torch.Tensor]:
    """Ground truth per query token (reference token index, validity, fine offset) and per reference
    token (whether it has a counterpart), from ``transform [B, 3, 3]`` (reference -> query)."""
    size = query_mask.shape[-1]
    points = token_points(h, w, transform.device).unsqueeze(0).expand(transform.shape[0], -1, -1)
    in_ref = _project(torch.linalg.inv(transform), points)
    query_valid = _inside(in_ref, size) & _mask_at(query_mask, points)
    cell = torch.round((in_ref - FEATURE_CENTRE) / COARSE_STRIDE).long()  # the token centred nearest
    index = (cell[..., 1].clamp(0, h - 1) * w + cell[..., 0].clamp(0, w - 1))
    offset = (in_ref - token_points(h, w, transform.device)[index]) / FINE_STRIDE
    ref_valid = _mask_at(query_mask, _project(transform, points))
    return {"index": index, "query_valid": query_valid, "offset": offset, "ref_valid": ref_valid}


def coarse_loss(log_rows: torch.Tensor, log_cols: torch.Tensor, gt: dict) -> torch.Tensor:
    index, valid = gt["index"], gt["query_valid"]
    pair_rows = log_rows[:, :-1, :].gather(2, index.unsqueeze(-1)).squeeze(-1)
    pair_cols = log_cols[:, :-1, :].gather(2, index.unsqueeze(-1)).squeeze(-1)
    matched = -(pair_rows + pair_cols)[valid]
    unmatched_q = -log_rows[:, :-1, -1][~valid]
    unmatched_r = -log_cols[:, -1, :-1][~gt["ref_valid"]]
    terms = [t.mean() for t in (matched, unmatched_q, unmatched_r) if t.numel()]
    return torch.stack(terms).sum() if terms else log_rows.sum() * 0.0


def fine_loss(matcher: CSTFMatcher, fine_q: torch.Tensor, fine_r: torch.Tensor, gt: dict) -> torch.Tensor:
    inside = gt["query_valid"] & (gt["offset"].abs() <= WINDOW // 2).all(dim=-1)
    if not inside.any():
        return fine_q.sum() * 0.0
    predicted, _ = matcher.refine(fine_q, fine_r, gt["index"])
    return (predicted - gt["offset"]).pow(2).sum(-1)[inside].mean()


def saliency_loss(logits: list[torch.Tensor], matchable: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """BCE of each level's logits against the stride-16 ``matchable [B, h*w]`` map resampled to it."""
    target = matchable.float().reshape(-1, 1, h, w)
    total = 0.0
    for level in logits:
        resized = F.interpolate(target, size=level.shape[-2:], mode="nearest")
        total = total + F.binary_cross_entropy_with_logits(level, resized)
    return total / len(logits)


def matcher_loss(matcher: CSTFMatcher, out: dict, transform: torch.Tensor,
                 query_mask: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
    """Total loss and its terms for one training batch."""
    h, w = out["grid"]
    gt = targets(transform, query_mask, h, w)
    coarse = coarse_loss(out["log_rows"], out["log_cols"], gt)
    fine = fine_loss(matcher, out["fine_query"], out["fine_reference"], gt)
    with torch.no_grad():
        best = out["log_rows"][:, :-1, :-1].argmax(dim=2)
        matchable = gt["query_valid"] & (best == gt["index"])
    saliency = saliency_loss(out["saliency_logits"], matchable, h, w)
    total = coarse + FINE_WEIGHT * fine + SALIENCY_WEIGHT * saliency
    with torch.no_grad():
        recall = float(matchable.sum()) / max(1, int(gt["query_valid"].sum()))
    return total, {"coarse": float(coarse.detach()), "fine": float(fine.detach()), "saliency": float(saliency.detach()),
                   "recall": recall}

