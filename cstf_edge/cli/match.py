"""``cstf-edge match``: register a query image onto a reference image with the CSTF matcher."""
from __future__ import annotations

import argparse
import contextlib
import json
import logging
import time
from pathlib import Path

from cstf_edge._io import read_image
from cstf_edge.match import TRANSFORMS, estimate_transform, make_matcher
from cstf_edge.match.cstf import MIN_CONFIDENCE
from cstf_edge.match.outputs import summary, write_outputs

log = logging.getLogger(__name__)

_EXAMPLES = """examples:
  cstf-edge match ref.png query.png --out runs/pair1
      shipped matcher weights, affine transform; writes matches.csv, transform.txt, warped.png,
      matches.png (inliers green), checkerboard.png and result.json into runs/pair1
  cstf-edge match optical.tif sar.tif --transform homography --json
  cstf-edge match ref.png query.png --model artifacts/cstf-matcher-512.onnx --max-keypoints 500
  cstf-edge match ref.png query.png --method sift --out runs/sift   the OpenCV baseline, same outputs

Exit code 0 when a transform was found and trusted, 1 when not: too few matches or inliers, or a
degenerate matrix (then no transform.txt is written and the JSON's "transform" is null, with a "reason"), or
a transform of the network's matches that the dense refinement could not confirm (written, with "confirmed":
false in the JSON and a warning). 2 for bad input. The transform maps reference pixels to query pixels
(x = column, y = row, OpenCV pixel centres). The query may be turned by any angle: the matcher tries it in
four quarter turns, matches once more with the query resampled onto the reference by the transform found so
far, then refines that
transform by dense template matching of orientation channels (--no-refine: the network's matches alone).
With the refinement, matches.csv holds its correspondences (confidence: the correlation peak's margin).
"""


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "match", help="register a query image onto a reference (optical, SAR, infrared, map, night...)",
        description="Match a query image to a reference image of the same place from another sensor or time "
        "with the CSTF matcher (correspondence as classification with a no-match bin, mutual best, "
        "sub-pixel refinement), then fit a robust transform (OpenCV USAC/MAGSAC).",
        epilog=_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("reference", help="reference image")
    parser.add_argument("query", help="query image")
    parser.add_argument("--model", help="matcher weights (.safetensors) or exported .onnx (default: shipped weights)")
    parser.add_argument("--method", choices=("cstf", "sift", "orb"), default="cstf", help="matcher (default cstf)")
    parser.add_argument("--transform", choices=TRANSFORMS, default="affine", help="model fitted (default affine)")
    parser.add_argument("--max-keypoints", type=int, help="keep at most N matches (most confident and salient)")
    parser.add_argument("--min-confidence", type=float, default=MIN_CONFIDENCE,
                        help=f"dual-softmax threshold (default {MIN_CONFIDENCE})")
    parser.add_argument("--rotations", type=int, choices=(1, 2, 4), default=4,
                        help="query quarter turns tried: 4 for any rotation (default), 1 when roughly upright")
    parser.add_argument("--passes", type=int, default=2, help="matching passes, realigned after the first (default 2)")
    parser.add_argument("--no-refine", action="store_true",
                        help="skip the dense refinement: write and fit the network's matches")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    parser.add_argument("--out", help="folder for the matches, transform and pictures")
    parser.add_argument("--json", action="store_true", help="print {num_matches, num_inliers, transform, seconds}")
    parser.set_defaults(run=run)


def _matcher(args):
    if args.method != "cstf":
        return make_matcher(args.method)
    return make_matcher("cstf", args.model, args.device, max_keypoints=args.max_keypoints,
                        min_confidence=args.min_confidence, rotations=args.rotations, passes=args.passes,
                        refine=not args.no_refine)


def run(args) -> int:
    reference, query = read_image(Path(args.reference)), read_image(Path(args.query))
    matcher = _matcher(args)
    with contextlib.ExitStack() as stack:
        if hasattr(matcher, "__enter__"):
            stack.enter_context(matcher)  # load the model before the clock starts: "seconds" is matching + fit
        start = time.perf_counter()
        matches = matcher.match(reference, query)
        estimate = estimate_transform(matches.ref_xy, matches.qry_xy, args.transform)
        seconds = time.perf_counter() - start
    result = summary(matches, estimate, seconds, getattr(matcher, "last_turn", None),
                     getattr(matcher, "last_refined", None), getattr(matcher, "last_stage", None))
    unconfirmed = estimate.ok and result.get("stage") == "network" and not args.no_refine
    if "stage" in result:
        result["confirmed"] = estimate.ok and not unconfirmed
    if unconfirmed:
        log.warning("the dense refinement could not confirm this transform (stage: network alone; on the tuning "
                    "pairs such transforms were wrong more often than right): exit code 1; check "
                    "checkerboard.png before relying on it")
    if args.out:
        for path in write_outputs(Path(args.out), reference, query, matches, estimate, result):
            log.info("wrote %s", path)
    if args.json:
        print(json.dumps(result))
    elif estimate.ok:
        stage = f", stage: {result['stage']}" if "stage" in result else ""
        print(f"{len(matches)} matches, {estimate.num_inliers} inliers, {seconds:.2f} s{stage}; transform "
              f"(reference -> query):\n" + "\n".join(" ".join(f"{v:12.6g}" for v in row) for row in estimate.transform))
    else:
        print(f"no reliable transform: {estimate.reason} ({len(matches)} matches, {seconds:.2f} s)")
    return 0 if estimate.ok and not unconfirmed else 1
