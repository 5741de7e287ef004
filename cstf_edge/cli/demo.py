"""``cstf-edge demo``: SynthRS scenes -> FP32/INT8 ONNX -> tiled detection -> DOTA mAP -> bench report."""
from __future__ import annotations

import argparse
import json

from cstf_edge.cli.train import require_train_extra

_EXAMPLES = """what it does (under 5 minutes on 2 CPU cores, 30-45 s measured; no data or GPU needed):
  1. makes SynthRS scenes (8 of 1024 px and one of 2560 px that needs tiling) in OUT/scenes
  2. exports the shipped cstf-n-relu weights to FP32, FP16 and INT8 ONNX (INT8 calibrated on 16 other scenes)
  3. runs the INT8 model through the runtime on every scene (the large one tiled) -> OUT/detections
     (DOTA labels, Task1 files, JSON, GeoJSON; rendered images of the detections of score >= 0.25
     in OUT/detections/vis)
  4. scores the Task1 files with the DOTA evaluator
  5. benches torch-fp32, onnxruntime-fp32 and onnxruntime-int8 side by side -> OUT/bench/report.md and
     accuracy_vs_fps.png (with --device cuda also the FP16 variants on the GPU)

examples:
  cstf-edge demo
  cstf-edge demo --out /tmp/demo --scenes 16 --json
"""


def register(subparsers) -> None:
    parser = subparsers.add_parser("demo", help="the whole pipeline on SynthRS scenes, in minutes, no data needed",
                                   description=__doc__, epilog=_EXAMPLES,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="demo_out", help="output folder (default demo_out)")
    parser.add_argument("--scenes", type=int, default=8, help="SynthRS scenes of 1024 px (default 8)")
    parser.add_argument("--large", type=int, default=2560, help="side of the large tiled scene (default 2560)")
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda:N for the GPU variants")
    parser.add_argument("--iters", type=int, default=10, help="timed iterations per bench variant (default 10)")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    require_train_extra()
    from cstf_edge.demo import VIS_CONF, DemoOptions, run_demo
    from cstf_edge.errors import CstfError

    if args.scenes < 1 or args.large < 1025:
        raise CstfError("--scenes must be >= 1 and --large > 1024 (the large scene must need tiling)")
    result = run_demo(DemoOptions(out=args.out, scenes=args.scenes, large=args.large, device=args.device,
                                  iters=args.iters, progress=not args.json))
    if args.json:
        print(json.dumps(result, indent=2, default=str))
        return 0
    print(f"demo finished in {result['seconds']} s")
    print(f"  scenes:          {result['scenes']}")
    print(f"  artifacts:       {', '.join(result['artifacts'].values())}")
    print(f"  detections:      {result['detections']} ({result['detections_found']} boxes; DOTA, Task1, JSON, "
          f"GeoJSON)")
    print(f"  rendered:        {result['rendered']} (detections of score >= {VIS_CONF})")
    print(f"  INT8 run mAP50 (VOC07, conf >= 0.05): {result['map50_voc07_int8_run']}")
    for row in result["bench_rows"]:
        print(f"  bench {row['variant']:24s} mAP50 {row['map50_voc07']:6.2f}  {row['fps']:6.2f} FPS")
    print(f"  bench report:    {result['bench_report']}")
    print(f"  bench plot:      {result['bench_plot']}")
    return 1 if result["failed_sources"] else 0
