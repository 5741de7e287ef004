"""``cstf-edge eval-match``: matching accuracy of point matchers on pair folders with ground truth."""
from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
from pathlib import Path

from tqdm import tqdm

from cstf_edge._io import atomic_write_bytes, atomic_write_text
from cstf_edge.errors import CstfError
from cstf_edge.eval.match_metrics import TOLERANCE, PairResult, aggregate, evaluate_pair, result_dict
from cstf_edge.eval.match_plot import plot_success
from cstf_edge.match import MATCHERS, TRANSFORMS, MatchPair, make_matcher, read_pairs

log = logging.getLogger(__name__)

_EXAMPLES = """examples:
  cstf-edge eval-match ../shared/data/multimodal/srif_dataset
      the shipped CSTF matcher, SIFT and ORB on every SRIF pair, per-modality table (Optical-SAR is shown
      but not scored: its GT is known to be wrong)
  cstf-edge synth data/sarpairs --n 1 --size 512 --pairs 20 --pair-modalities optical,sar
  cstf-edge eval-match data/sarpairs ../shared/data/multimodal/srif_dataset/Nighttime --out runs/match
      several folders in one run; runs/match/report.json and report.md hold every pair and the tables,
      success.png the success rate per modality and method
  cstf-edge eval-match data/sarpairs --methods sift --transform similarity --json

Folders: the SRIF layout (<Modality>/pairN_1.jpg, pairN_2.jpg, gt_N.txt: a 2x3 affine taking pairN_1
points to pairN_2, 1-based MATLAB pixel coordinates; a modality folder itself also works) or a SynthRS set
written with `cstf-edge synth ... --pairs N` (pairs/transforms/<id>.txt).
Metrics per modality: success rate (estimated transform within 3 px RMSE of the GT on a 10 x 10 grid over
the query), mean correct matches (GT reprojection error < 3 px), correct-match ratio, RMSE of correct
matches, seconds per pair (matching + estimation). CSTF: mutual dual-softmax matches with confidence >= 0.02,
query tried in 4 quarter turns, one realigned pass, then the dense refinement's correspondences where it
is trusted; CSTF-NET: the network's matches alone (no dense refinement). SIFT/ORB: ratio test 0.8, no
cross-check. Estimator: OpenCV USAC_MAGSAC, 3 px, at least 8 inliers or the pair fails.
"""


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "eval-match",
        help="matching accuracy (success rate, correct matches) on pair folders with ground truth",
        description="Evaluate point matchers (CSTF, and the OpenCV SIFT and ORB baselines) on reference/query pairs with "
        "ground-truth transforms, with one robust estimator, and report per modality.",
        epilog=_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("dirs", nargs="+", metavar="DIR", help="folder of pairs (SRIF layout or SynthRS --pairs)")
    parser.add_argument("--methods", default="cstf,cstf-net,sift,orb",
                        help=f"comma list of {', '.join(MATCHERS)} (default all)")
    parser.add_argument("--model", help="CSTF matcher weights or .onnx (default: the shipped matcher weights)")
    parser.add_argument("--device", default="cpu", help="device of the CSTF matcher (default cpu)")
    parser.add_argument("--transform", choices=TRANSFORMS, default="affine",
                        help="transform the robust estimator fits (default affine)")
    parser.add_argument("--out", help="write report.json, report.md and success.png to this folder")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON instead of the table")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    parser.set_defaults(run=run)


def _methods(text: str) -> list[str]:
    methods = [m.strip().lower() for m in text.split(",") if m.strip()]
    unknown = [m for m in methods if m not in MATCHERS]
    if not methods or unknown:
        raise CstfError(f"--methods: unknown {', '.join(unknown) or '(empty)'}; choose from {', '.join(MATCHERS)}")
    return list(dict.fromkeys(methods))


def _cell(summary: dict | None) -> str:
    if summary is None or not summary["pairs"]:
        return f"{'-':>30}"
    rmse = summary["rmse"]
    return (f"{summary['success_rate'] * 100:6.1f}% {summary['num_correct']:6.1f} {summary['correct_ratio']:5.2f} "
            f"{'   -' if math.isnan(rmse) else f'{rmse:4.2f}'} {summary['seconds']:5.2f}")


def format_table(report: dict, methods: list[str]) -> str:
    """Per-modality rows, methods side by side (success %, correct, ratio, RMSE, s), the overall last."""
    rows = [(name, by_method, next(iter(by_method.values()))["note"], next(iter(by_method.values()))["pairs"])
            for name, by_method in report["modalities"].items()]
    width = max([len(r[0]) for r in rows] + [7])
    head = f"{'modality':<{width}} {'pairs':>5} " + " | ".join(f"{m.upper() + ': success correct ratio rmse s':>34}"
                                                                for m in methods)
    lines = [head]
    for name, by_method, note, pairs in rows:
        cells = " | ".join(f"{_cell(by_method.get(m)):>34}" for m in methods)
        lines.append(f"{name:<{width}} {pairs:5d} {cells}" + (f"  ({note})" if note else ""))
    overall = report["overall"]
    pairs = max((s["pairs"] for s in overall.values()), default=0)
    lines.append(f"{'overall':<{width}} {pairs:5d} " + " | ".join(f"{_cell(overall.get(m)):>34}" for m in methods))
    return "\n".join(lines)


def _markdown(report: dict, methods: list[str], args, picture: bool) -> str:
    return (f"# eval-match\n\nFolders: {', '.join(args.dirs)}  \nTransform: {args.transform}, tolerance "
            f"{TOLERANCE:g} px\n\n```\n{format_table(report, methods)}\n```\n\nPer pair: report.json\n"
            + ("\n![success rate per modality and method](success.png)\n" if picture else ""))


def _evaluate(pairs: list[MatchPair], methods: list[str], args) -> list[PairResult]:
    matchers = [make_matcher(m, args.model, args.device) if m.startswith("cstf") else make_matcher(m)
                for m in methods]
    results = []
    with contextlib.ExitStack() as stack:
        for matcher in matchers:
            if hasattr(matcher, "__enter__"):
                stack.enter_context(matcher)  # load the model before timing the first pair
        for pair in tqdm(pairs, desc="pairs", disable=args.no_progress):
            results.extend(evaluate_pair(pair, matcher, args.transform) for matcher in matchers)
    return results


def run(args) -> int:
    methods = _methods(args.methods)
    pairs = [pair for folder in args.dirs for pair in read_pairs(folder)]
    results = _evaluate(pairs, methods, args)
    report = aggregate(results)
    if args.out:
        out = Path(args.out)
        full = {**report, "transform": args.transform, "tolerance": TOLERANCE, "dirs": list(args.dirs),
                "pairs": [result_dict(r) for r in results]}
        atomic_write_text(out / "report.json", json.dumps(_finite(full), indent=1, allow_nan=False) + "\n")
        picture = plot_success(report, methods, f"{', '.join(Path(d).name for d in args.dirs)}: "
                               f"{args.transform}, success = grid RMSE < {TOLERANCE:g} px")
        if picture is not None:
            atomic_write_bytes(out / "success.png", picture)
        atomic_write_text(out / "report.md", _markdown(report, methods, args, picture is not None))
        log.info("wrote report.json, report.md%s to %s", "" if picture is None else " and success.png", out)
    print(json.dumps(_finite(report), allow_nan=False) if args.json else format_table(report, methods))
    return 0


def _finite(value):
    """``value`` with every nan/inf float replaced by None (strict JSON)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


__all__ = ["format_table", "register", "run"]
