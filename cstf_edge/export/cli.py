"""Command line of the export (``python -m cstf_edge.export`` and ``cstf-edge export`` are the same)."""
from __future__ import annotations

import argparse
import json
import logging

from cstf_edge.export.options import (CALIB_METHODS, PRECISIONS, TARGETS, WEIGHT_ROUNDINGS, build_options,
                                      parse_batch_range, parse_scopes)

log = logging.getLogger(__name__)

DESCRIPTION = ("Turn a checkpoint into deployable artifacts (FP32/FP16/INT8 ONNX, TensorRT engines) and prove each "
               "keeps the reference model's accuracy: parity against PyTorch, mAP on a validation set.")

EXAMPLES = """profiles (export/*.toml) hold the usual choices; flags override them:
  cpu-int8             ONNX Runtime on a CPU: FP32 + INT8 (U8/S8 Q/DQ), 1024 px, batch 1, the shipped cstf-n-relu
                       weights (INT8 1.7-1.9x FP32 on a 2-core AMD EPYC; the SiLU cstf-n weights: 1.5x)
  cpu-int8-relu        the same, the cstf-n-relu weights named explicitly
  orin-nano-int8       TensorRT on Jetson Orin Nano: INT8 Q/DQ (Model Optimizer), DLA core 0 with GPU fallback
  orin-fp16            TensorRT on Jetson Orin: FP16, batch 1
  ground-station-fp16  TensorRT on a data-centre GPU: FP16, dynamic batch 1:8
  ground-station-int8  TensorRT on a data-centre GPU: INT8 Q/DQ, dynamic batch 1:8

outputs (in --out): <name>.fp32.onnx, .fp16.onnx, .int8.onnx, each with <artifact>.report.json (parity, mAP,
latency), <name>.int8.sensitivity.json, export_report.json. Exit code 0 when every gate passed, 1 when an
artifact was written but failed a gate, 2 for bad input (nothing half-written is left).

examples:
  python -m cstf_edge.export --profile export/cpu-int8.toml
      shipped weights -> FP32 + INT8 ONNX with parity and accuracy gates (about 40-60 s on 2 cores)
  python -m cstf_edge.export --weights runs/dota/weights.safetensors --precision fp16 --imgsz 1024 --out art
  python -m cstf_edge.export --profile export/ground-station-int8.toml --calib calibration/my-scenes.toml
  cstf-edge export --precision int8 --calib calibration/synthrs-calib.toml --calib-method entropy --json
  python -m cstf_edge.export --matcher cstf_edge/weights/cstf-matcher-synthrs.safetensors --out artifacts
      the matcher as a two-input ONNX (reference, query; up to 4 query turns per call) for cstf-edge match
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--weights", help="weights .safetensors (default: the shipped cstf-n-relu SynthRS weights)")
    parser.add_argument("--profile", help="an export profile, e.g. export/cpu-int8.toml")
    parser.add_argument("--precision", choices=PRECISIONS, help="fp32, fp16 (also writes fp32) or int8 (also fp32 "
                        "and fp16); default fp32")
    parser.add_argument("--target", choices=TARGETS, help="onnxruntime (default) or tensorrt")
    parser.add_argument("--calib", help="calibration manifest (calibration/*.toml), needed for int8")
    parser.add_argument("--calib-method", choices=CALIB_METHODS, help="default minmax")
    parser.add_argument("--val", help="validation set for the accuracy gates: a SynthRS manifest or a labelled folder")
    parser.add_argument("--imgsz", type=int, help="network input size, a multiple of 64 (default 1024)")
    parser.add_argument("--batch", type=int, help="static batch (default 1)")
    parser.add_argument("--dynamic-batch", metavar="MIN:MAX", help="dynamic batch range, e.g. 1:8")
    parser.add_argument("--with-reference", action="store_true", default=None,
                        help="export the two-input model (images, reference)")
    parser.add_argument("--no-sensitivity", dest="sensitivity", action="store_false", default=None,
                        help="skip the INT8 per-layer sensitivity sweep")
    parser.add_argument("--fp32-groups", metavar="SCOPES",
                        help="INT8: comma list of node-name scopes kept FP32 besides those the sweep keeps, "
                        "e.g. /backbone/stem")
    parser.add_argument("--weight-rounding", choices=WEIGHT_ROUNDINGS,
                        help="INT8: how convolution weights reach the INT8 grid: sum-preserving (default; each "
                        "kernel's rounding errors cancel) or nearest (the quantizer's own rounding)")
    parser.add_argument("--workspace-gib", type=float, help="TensorRT builder workspace (default 4)")
    parser.add_argument("--dla-core", type=int, help="TensorRT: build for this DLA core (Jetson), GPU fallback on")
    parser.add_argument("--name", help="artifact base name (default <model>-<imgsz>)")
    parser.add_argument("--out", help="output folder (default artifacts)")
    parser.add_argument("--matcher", metavar="WEIGHTS", help="export a CSTF matcher (cstf-edge train-match weights) "
                        "to <out>/<name or cstf-matcher-IMGSZ>.onnx instead of the detector (imgsz default 512)")
    parser.add_argument("--json", action="store_true", help="print the summary report as JSON")


def options_from_args(args: argparse.Namespace):
    overrides = {key: getattr(args, key) for key in (
        "weights", "precision", "target", "calib", "calib_method", "val", "imgsz", "batch", "with_reference",
        "sensitivity", "weight_rounding", "workspace_gib", "dla_core", "name", "out")}
    overrides["dynamic_batch"] = parse_batch_range(args.dynamic_batch) if args.dynamic_batch else None
    overrides["fp32_groups"] = parse_scopes(args.fp32_groups)
    return build_options(args.profile, overrides)


def format_summary(summary: dict) -> str:
    lines = [f"{'artifact':44s} {'MB':>6s} {'parity':>7s} {'mAP07':>7s} {'mAP12':>7s} {'ms/img':>7s}"]
    for report in summary["artifacts"].values():
        acc = report.get("accuracy", {})
        lines.append(f"{report['artifact']:44s} {report['bytes'] / 1e6:6.1f} "
                     f"{report['parity']['detection_parity']:7.3f} {acc.get('map50_voc07', float('nan')):7.2f} "
                     f"{acc.get('map50_voc12', float('nan')):7.2f} {report.get('latency_ms_batch1_cpu', float('nan')):7.1f}")
    for name, gate in summary["gates"].items():
        lines.append(f"gate {name}: {gate['value']} (limit {gate['limit']}) {'passed' if gate['passed'] else 'FAILED'}")
    return "\n".join(lines)


def run_matcher_export(args: argparse.Namespace) -> int:
    from pathlib import Path

    from cstf_edge.export.matcher_onnx import export_matcher

    imgsz = args.imgsz or 512
    path = Path(args.out or "artifacts") / f"{args.name or f'cstf-matcher-{imgsz}'}.onnx"
    info, figures = export_matcher(args.matcher, path, imgsz)
    report = {"artifact": str(path), "imgsz": imgsz, "max_query_batch": info.max_batch, "parity": figures}
    print(json.dumps(report, indent=2) if args.json else
          f"wrote {path}: parity with PyTorch, confidence {figures['confidence_max_abs']:.2g}, points "
          f"{figures['points_max_abs']:.2g} px")
    return 0


def run(args: argparse.Namespace) -> int:
    from cstf_edge.export import run_export

    if args.matcher:
        return run_matcher_export(args)

    summary = run_export(options_from_args(args), progress=not args.json)
    print(json.dumps(summary, indent=2, default=str) if args.json else format_summary(summary))
    if not summary["passed"]:
        log.error("a gate failed (see above and %s/export_report.json)", summary["options"]["out"])
        return 1
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m cstf_edge.export", description=DESCRIPTION, epilog=EXAMPLES,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    return parser
