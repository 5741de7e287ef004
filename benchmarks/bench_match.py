"""Benchmark of ``cstf-edge match`` speed on this CPU: one 512 x 512 pair, CSTF through ONNX Runtime against
the OpenCV baselines, measured in one run.

For each variant, the median wall time of a whole pair after warm-up: preprocessing, inference, mapping
back, turn selection, the realigned pass, the dense refinement and the robust affine fit (what
``eval-match`` times), and for CSTF also the inference alone. CSTF runs with 1, 2 and 4 query turns tried
(4 is the default: any rotation), and ``cstf-net`` (4 turns, no dense refinement) shows what the
refinement costs. The target is under 0.5 s per 512 x 512 pair through ONNX Runtime.

    python benchmarks/bench_match.py [--model artifacts/cstf-matcher-512.onnx] [--repeat 9] [--threads 2] [--json]

Without --model the shipped matcher weights are exported to ONNX first (into a temporary folder). The pair
is a SynthRS optical/SAR pair of 512 px (seed 5, pair 0), made on the fly.
"""
from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from cstf_edge.data.modality import to_bgr
from cstf_edge.data.synthrs.pairs import make_pair
from cstf_edge.match import estimate_transform, make_matcher
from cstf_edge.runtime.preprocess import letterbox, to_tensor

TARGET_S = 0.5


def _median_seconds(function, repeat: int) -> float:
    function()
    function()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _pair_seconds(matcher, reference, query, repeat: int) -> float:
    def once():
        matches = matcher.match(reference, query)
        estimate_transform(matches.ref_xy, matches.qry_xy, "affine")
    return _median_seconds(once, repeat)


def run(model: Path, repeat: int, threads: int | None) -> dict:
    pair = make_pair(5, 0, 512, modalities=("optical", "sar"))
    reference, query = to_bgr(pair.reference), to_bgr(pair.query)
    rows = {}
    for name, rotations in (("cstf", 1), ("cstf", 2), ("cstf", 4), ("cstf-net", 4)):
        options = {"threads": threads} if threads else {}
        with make_matcher(name, str(model), "cpu", rotations=rotations, **options) as matcher:
            seconds = _pair_seconds(matcher, reference, query, repeat)
            spec = matcher.runner.info.preprocess
            feed = {"reference": to_tensor(letterbox(reference, spec)[0][None], spec),
                    "query": to_tensor(np.stack([letterbox(query, spec)[0]] * rotations), spec)}
            infer = _median_seconds(lambda: matcher.runner.infer(feed), repeat)
        rows[f"{name}-onnxruntime-{rotations}turn"] = {"seconds_per_pair": seconds, "inference_seconds": infer}
    for name in ("sift", "orb"):
        rows[name] = {"seconds_per_pair": _pair_seconds(make_matcher(name), reference, query, repeat)}
    return {"pair": "SynthRS optical/SAR, seed 5 pair 0, 512 x 512", "target_seconds": TARGET_S,
            "threads": threads, "rows": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="matcher .onnx (default: export the shipped weights)")
    parser.add_argument("--repeat", type=int, default=9)
    parser.add_argument("--threads", type=int, help="ONNX Runtime intra-op threads (default: all cores)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        model = Path(args.model) if args.model else None
        if model is None:
            from cstf_edge.export.matcher_onnx import export_matcher
            from cstf_edge.match.cstf import SHIPPED_MATCHER

            model = Path(tmp) / "cstf-matcher-512.onnx"
            export_matcher(SHIPPED_MATCHER, model, 512)
        report = run(model, args.repeat, args.threads)
    if args.json:
        print(json.dumps(report, indent=1))
        return
    print(f"{report['pair']}; target < {TARGET_S} s per pair (CSTF, ONNX Runtime)")
    for name, row in report["rows"].items():
        infer = f"  (inference {row['inference_seconds']:.3f} s)" if "inference_seconds" in row else ""
        print(f"{name:28s} {row['seconds_per_pair']:.3f} s per pair{infer}")


if __name__ == "__main__":
    main()
