"""``cstf-edge info``: parameters and GFLOPs of a CSTF detector size, beside YOLOv8n-obb's."""
from __future__ import annotations

import argparse
import json

from cstf_edge.cli.train import require_train_extra

_EXAMPLES = """examples:
  cstf-edge info                                  cstf-n at 1024 x 1024, beside YOLOv8n-obb
  cstf-edge info --model cstf-s --imgsz 640
  cstf-edge info --model cstf-m --json            {"model": ..., "params": ..., "params_M": ..., "gflops": ...}

GFLOPs count one forward pass at batch 1 (a multiply-add counts 2, as Ultralytics counts). The
reference line is YOLOv8n-obb as Ultralytics lists it: 3.1 M parameters, 23.3 GFLOPs at 1024.
"""


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "info", help="parameters and GFLOPs of a model size (beside YOLOv8n-obb)",
        description="Count the parameters and the FLOPs of one forward pass of a CSTF detector size.",
        epilog=_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--model", default="cstf-n",
                        help="model size: cstf-n, cstf-s, cstf-m or cstf-n-relu (default cstf-n)")
    parser.add_argument("--imgsz", type=int, default=1024, help="square input size, a multiple of 64 (default 1024)")
    parser.add_argument("--num-classes", type=int, default=5,
                        help="output classes (default 5, as the shipped SynthRS weights; DOTA has 15)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.set_defaults(run=run)


def format_summary(summary) -> str:
    ref = summary.as_dict()["reference"]
    rows = [("model", "params", f"GFLOPs@{summary.imgsz}", "CSTF block GFLOPs"),
            (summary.model, f"{summary.params_m:.3f} M", f"{summary.gflops:.2f}", f"{summary.cstf_block_gflops:.2f}"),
            (f"{ref['name']} (reference)", f"{ref['params_M']:.1f} M", f"{ref['gflops']:.1f}@{ref['imgsz']}", "-")]
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows)


def run(args) -> int:
    require_train_extra()
    from cstf_edge.model.summary import summarize_model

    summary = summarize_model(args.model, args.imgsz, args.num_classes)
    print(json.dumps(summary.as_dict()) if args.json else format_summary(summary))
    return 0
