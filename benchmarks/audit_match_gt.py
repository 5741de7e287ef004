"""Audit matching ground truth: does the GT transform align a pair as well as the methods' estimates do?

For every pair of an ``eval-match`` report, the query is warped onto the reference by the GT transform and by
each method's estimated transform, and the alignment is scored densely: zero-mean normalised
cross-correlation of the orientation channels (``cstf_edge.match.refine.orientation_channels``, robust to
contrast reversal) over the overlap. Where independent methods agree with each other, several pixels from
the GT, and all align the images better than the GT does, the GT is the likelier culprit. (The
score is what the dense refinement maximises, so CSTF beating the GT on it is weak evidence alone; agreement
with an independent method such as SIFT is the stronger part.) All transforms of a pair are scored over the
same pixels (where every warp lands). Writes a table
per pair (``gt_audit.md``, ``gt_audit.json``) and, with ``--picture NAME``, ``gt_audit.png``: that pair's query
edges (red) on the reference under the GT (left) and under the first method's estimate (right), a
``--zoom X,Y,SIDE`` window of the reference enlarged twice.

    python benchmarks/audit_match_gt.py benchmarks/results/match-cpu-2026-11-28-global/report.json \\
        ../shared/data/multimodal/srif_dataset --modalities Optical-Optical,Optical-Map,Nighttime \\
        --picture Optical-Optical/pair6 --zoom 150,150,200 --out benchmarks/results/match-cpu-2026-11-28-global
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import cv2
import numpy as np

from cstf_edge._io import atomic_write_text, read_image, write_image
from cstf_edge.eval.match_metrics import grid_rmse
from cstf_edge.match.baselines import to_gray
from cstf_edge.match.outputs import warp_to_reference
from cstf_edge.match.pairs import read_pairs
from cstf_edge.match.refine import orientation_channels

EDGE_MARGIN = 8  # px of the overlap's border left out (interpolation and padding)
MIN_OVERLAP = 1000  # px: a warp that covers less of the reference is not scored


def _warped(query: np.ndarray, transform: np.ndarray, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """The query (gray) warped onto the reference frame by ``transform`` (reference -> query), and where it
    lands (eroded by ``EDGE_MARGIN``)."""
    aligned = warp_to_reference(query, transform, (size[1], size[0]))
    valid = cv2.warpPerspective(np.ones(query.shape, np.uint8), transform, size,
                                flags=cv2.INTER_NEAREST | cv2.WARP_INVERSE_MAP)
    return aligned, cv2.erode(valid, np.ones((2 * EDGE_MARGIN + 1,) * 2, np.uint8)) > 0


def alignment_scores(reference: np.ndarray, query: np.ndarray,
                     transforms: list[np.ndarray]) -> tuple[list[float], int]:
    """Zero-mean NCC of orientation channels between the reference and the query warped onto it by each
    transform (reference -> query), all over the same pixels (where every warp lands, those covering under
    :data:`MIN_OVERLAP` px left out and scored nan), and how many pixels that is; nan when they hardly
    overlap or one side has no structure there."""
    ref, qry = to_gray(reference), to_gray(query)
    size = (ref.shape[1], ref.shape[0])
    warps = [_warped(qry, t, size) for t in transforms]
    usable = [valid.sum() >= MIN_OVERLAP for _, valid in warps]  # a transform far off scores nan, alone
    common = np.logical_and.reduce([valid for (_, valid), ok in zip(warps, usable) if ok] or [np.zeros(1, bool)])
    if common.sum() < MIN_OVERLAP:
        return [float("nan")] * len(transforms), int(common.sum())
    a = orientation_channels(ref)[common]
    a = a - a.mean(0)
    scores = []
    for (aligned, _), ok in zip(warps, usable):
        if not ok:
            scores.append(float("nan"))
            continue
        b = orientation_channels(aligned)[common]
        b = b - b.mean(0)
        norm = np.sqrt((a * a).sum() * (b * b).sum())
        scores.append(float((a * b).sum() / norm) if norm > 0 else float("nan"))
    return scores, int(common.sum())


def overlay(reference: np.ndarray, query: np.ndarray, transform: np.ndarray, zoom: tuple[int, int, int],
            label: str) -> np.ndarray:
    """The reference (gray) with the query's edges, warped by ``transform``, drawn in red: the ``zoom``
    window (x, y, side) enlarged twice, labelled."""
    ref = cv2.cvtColor(to_gray(reference), cv2.COLOR_GRAY2BGR)
    warped = warp_to_reference(to_gray(query), transform, ref.shape)
    ref[cv2.Canny(warped, 60, 160) > 0] = (0, 0, 255)
    x, y, side = zoom
    window = cv2.resize(ref[y:y + side, x:x + side], None, fx=2, fy=2, interpolation=cv2.INTER_NEAREST)
    cv2.putText(window, label, (8, 28), cv2.FONT_HERSHEY_SIMPLEX, 0.8, (255, 255, 0), 2, cv2.LINE_AA)
    return window


def _finite(value):
    """nan -> None, recursively (JSON has no nan)."""
    if isinstance(value, float):
        return value if np.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("report", help="report.json written by cstf-edge eval-match --out")
    parser.add_argument("pairs", nargs="+", help="the pair folders the report was made on")
    parser.add_argument("--modalities", default="", help="comma list (default: all in the report)")
    parser.add_argument("--methods", default="cstf,cstf-net,sift")
    parser.add_argument("--picture", help="pair name (e.g. Optical-Optical/pair6) to draw")
    parser.add_argument("--zoom", default="0,0,256", help="X,Y,SIDE: the window of the reference drawn")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    rows = json.loads(Path(args.report).read_text())["pairs"]
    estimates = {(r["name"], r["method"]): r["transform"] for r in rows if r["transform"] is not None}
    wanted, methods = set(filter(None, args.modalities.split(","))), args.methods.split(",")
    zoom = tuple(int(v) for v in args.zoom.split(","))
    table, drawn = [], False
    for folder in args.pairs:
        for pair in read_pairs(folder):
            if wanted and pair.modality not in wanted:
                continue
            reference, query = read_image(pair.reference), read_image(pair.query)
            found = [m for m in methods if (pair.name, m) in estimates]
            matrices = [np.array(estimates[(pair.name, m)]) for m in found]
            scores, pixels = alignment_scores(reference, query, [pair.transform] + matrices)
            row = {"pair": pair.name, "pixels_scored": pixels, "gt_score": round(scores[0], 4)}
            for method, matrix, score in zip(found, matrices, scores[1:]):
                row[method] = {"score": round(score, 4), "px_from_gt": round(grid_rmse(
                    matrix, pair.transform, (query.shape[1], query.shape[0])), 2)}
            table.append(row)
            if pair.name == args.picture and found and found[0] == methods[0]:
                pictures = [overlay(reference, query, pair.transform, zoom, "ground truth"),
                            overlay(reference, query, matrices[0], zoom, methods[0])]
                write_image(Path(args.out) / "gt_audit.png", np.hstack(pictures))
                drawn = True
    if args.picture and not drawn:
        print(f"no picture: {args.picture} is not among the pairs or has no {methods[0]} estimate")
    lines = ["| pair | GT score | " + " | ".join(f"{m} score (px from GT)" for m in methods) + " |",
             "|---|---|" + "---|" * len(methods)]
    for row in table:
        cells = [f"{row[m]['score']:.3f} ({row[m]['px_from_gt']:.1f})" if m in row else "-" for m in methods]
        lines.append(f"| {row['pair']} | {row['gt_score']:.3f} | " + " | ".join(cells) + " |")
    out = Path(args.out)
    atomic_write_text(out / "gt_audit.md", "\n".join(lines) + "\n")
    atomic_write_text(out / "gt_audit.json", json.dumps(_finite(table), indent=1) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
