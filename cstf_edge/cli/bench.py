"""``cstf-edge bench``: a thin call into :mod:`cstf_edge.bench` (accuracy vs FPS, every variant in one run)."""
from __future__ import annotations

import argparse
import logging

log = logging.getLogger(__name__)

_DESCRIPTION = """Accuracy against speed for every variant (backend x precision x batch) side by side, in one run,
on this machine. Missing ONNX files / TensorRT engines are exported first (the INT8 calibration cache makes a
repeated export cheap). Per variant: mAP VOC07 and VOC12 on --data, the drop and detection-level parity against
the PyTorch FP32 reference; latency p50/p90/p99/mean per stage (decode, pre, infer, post, tiling/merge), FPS,
megapixels/s, peak memory and model size. Variants that cannot run here are listed with the reason."""

_EXAMPLES = """outputs (in --out): report.md, report.csv, report.json, accuracy_vs_fps.png

examples:
  cstf-edge bench --data calibration/synthrs-val.toml --max-images 20 --iters 20
      the shipped weights at 1024 px: torch FP32 against ONNX Runtime FP32/FP16/INT8 on this CPU
  cstf-edge bench --weights runs/synth/weights.safetensors --data DOTA/val --backends onnxruntime \\
      --precisions fp32,int8 --batch 1,4 --out runs/bench-dota
  cstf-edge bench --data data/val --device cuda:0 --backends torch,tensorrt --precisions fp16,int8 --json
      a GPU machine: PyTorch FP16 (timed by CUDA events) and TensorRT engines built here
  cstf-edge bench --data calibration/synthrs-val.toml --backends torch,onnxruntime --precisions fp32,int8 \\
      --peers yolov8n-obb.onnx
      beside cstf-n, YOLOv8n-obb (exported by Ultralytics) at FP32 and INT8 through the same runtime path
  python benchmarks/run.py ...      the same command as a script

--data: a labelled folder (DOTA: images/ + labelTxt/; HRSC2016: AllImages/ + Annotations/) or a SynthRS
manifest (.toml, e.g. calibration/synthrs-val.toml, generated into the cache on first use).
Bad arguments exit with code 2."""


def register(subparsers) -> None:
    parser = subparsers.add_parser("bench", help="accuracy vs FPS of every backend/precision/batch, one report",
                                   description=_DESCRIPTION, epilog=_EXAMPLES,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    parser.set_defaults(run=run)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from cstf_edge.bench.options import BenchOptions

    parser.add_argument("--weights", help="weights .safetensors (default: the shipped cstf-n-relu SynthRS weights)")
    parser.add_argument("--data", required=True, help="labelled folder (DOTA/HRSC2016) or SynthRS manifest .toml")
    parser.add_argument("--backends", default="torch,onnxruntime,tensorrt",
                        help="comma list of torch, onnxruntime (ort), tensorrt (trt) (default: all three)")
    parser.add_argument("--precisions", default="fp32,fp16,int8", help="comma list of fp32, fp16, int8 (default: all)")
    parser.add_argument("--imgsz", type=int, default=1024, help="network input, a multiple of 64 (default 1024)")
    parser.add_argument("--batch", default="1", help="comma list of batch sizes, e.g. 1,4 (default 1)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    parser.add_argument("--warmup", type=int, default=10, help="untimed iterations per variant (default 10)")
    parser.add_argument("--iters", type=int, default=100, help="timed iterations per variant (default 100)")
    parser.add_argument("--max-images", type=int, help="use only the first N images of --data (default: all)")
    parser.add_argument("--out", default="runs/bench", help="report folder (default runs/bench)")
    parser.add_argument("--artifacts", help="where exported models are kept and reused (default OUT/artifacts)")
    parser.add_argument("--calib", help="INT8 calibration manifest (default calibration/synthrs-calib.toml)")
    parser.add_argument("--calib-method", default="minmax", choices=("minmax", "entropy", "percentile"),
                        help="INT8 calibration method of the export (default minmax)")
    parser.add_argument("--no-sensitivity", action="store_true",
                        help="skip the export's per-layer INT8 sensitivity sweep (faster, maybe less accurate)")
    parser.add_argument("--fp32-groups", metavar="SCOPES", default="",
                        help="INT8 export: comma list of node scopes kept FP32, as the export's --fp32-groups "
                        "(e.g. /backbone/stem; none by default)")
    parser.add_argument("--peers", nargs="?", const="yolov8n-obb", default="",
                        help="also run Ultralytics OBB peers through the same runtime path: a comma list of model "
                        "names built from their yaml (untrained: timed only), trained .pt weights, or .onnx files "
                        "Ultralytics exported (`yolo export ... format=onnx opset=17`); --peers alone means "
                        "yolov8n-obb. Names and .pt need pip install 'cstf-edge[peers]'")
    parser.add_argument("--sequential", action="store_true",
                        help="time each variant alone, one after the other (default: all loaded, timed in turns, "
                        "so load from other processes hits every variant alike)")
    parser.add_argument("--settle", type=float, default=BenchOptions.settle,
                        help="idle seconds before each timed iteration in turns, so the previous variant's spinning "
                        f"worker threads do not slow the next (default {BenchOptions.settle})")
    parser.add_argument("--json", action="store_true", help="print report.json")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bars")


def options_from_args(args):
    from cstf_edge.bench import BenchOptions, parse_batches, parse_names
    from cstf_edge.bench.options import BACKEND_ALIASES
    from cstf_edge.export.options import parse_scopes

    return BenchOptions(
        data=args.data, weights=args.weights, imgsz=args.imgsz, device=args.device, warmup=args.warmup,
        backends=parse_names(args.backends, "--backends", BACKEND_ALIASES),
        precisions=parse_names(args.precisions, "--precisions"), batches=parse_batches(args.batch),
        iters=args.iters, out=args.out, artifacts=args.artifacts, calib=args.calib, calib_method=args.calib_method,
        sensitivity=not args.no_sensitivity, max_images=args.max_images,
        fp32_groups=parse_scopes(args.fp32_groups) or (),
        peers=tuple(p.strip() for p in args.peers.split(",") if p.strip()),
        interleave=not args.sequential, settle=args.settle, progress=not args.no_progress,
    ).check()


def run(args) -> int:
    from cstf_edge.bench import run_bench
    from cstf_edge.bench.report import to_json

    report = run_bench(options_from_args(args))
    if args.json:
        print(to_json(report), end="")
    else:
        _print_summary(report, args.out)
    return 0


def _print_summary(report: dict, out: str) -> None:
    width = max([18] + [len(r["label"]) for r in report["rows"] + report["unavailable"]])
    for row in report["rows"]:
        latency, score = row["speed"]["latency_ms"], row["accuracy"]["map50_voc07"]
        score = "     –" if score is None else f"{score:6.2f}"
        print(f"{row['label']:<{width}} mAP07 {score}  p50 {latency['p50']:8.2f} ms  "
              f"FPS {row['speed']['fps']:8.2f}" + (f"  x{row['speedup_vs_reference']:.2f}"
                                                   if row.get("speedup_vs_reference") else ""))
    for skipped in report["unavailable"]:
        print(f"{skipped['label']:<{width}} not run: {skipped['reason']}")
    print(f"report: {out}/report.md (+ report.csv, report.json, accuracy_vs_fps.png)")
