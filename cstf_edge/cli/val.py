"""``cstf-edge val``: DOTA-rules mAP of PyTorch weights on a labelled folder (large images tiled)."""
from __future__ import annotations

import argparse
import json
import logging

from cstf_edge.cli.eval_dota import format_table
from cstf_edge.cli.train import require_train_extra
from cstf_edge.errors import CstfError

log = logging.getLogger(__name__)

_EXAMPLES = """data layouts (--data):
  DOTA:      DIR/images + DIR/labelTxt; objects of classes the model lacks are left out (with a warning)
  HRSC2016:  DIR/AllImages + DIR/Annotations (XML), read class-agnostically as 'ship': the model's 'ship'
             detections are scored, its other classes are ignored
Images with a side longer than --imgsz are cut into --imgsz tiles overlapping by 200 px (DOTA's split
windows); tile detections are mapped to full-image pixels and merged with class-aware rotated NMS.
mAP counts a detection as correct at polygon IoU > 0.5 (DOTA Task1 rules, difficult objects ignored).

examples:
  cstf-edge synth data/val --n 100 --size 512 --seed 2
  cstf-edge val --data data/val
      the shipped cstf-n-relu SynthRS weights, VOC07 mAP50 as a per-class table
  cstf-edge val --weights runs/synth/weights.safetensors --data DOTA/val --imgsz 1024 --metric voc12 --json
      {"mAP": ..., "per_class_ap": {...}, "metric": ..., "num_detections": ..., "num_ground_truth": ...}
  cstf-edge val --data HRSC2016/Test --save out/hrsc_task1      also write Task1_<class>.txt results
"""


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "val", help="mAP of PyTorch weights on a labelled set (DOTA rules)", epilog=_EXAMPLES,
        description="Run the PyTorch model with the project's pre/post-processing and rotated NMS, and score "
        "it with the DOTA Task1 evaluator (same output as eval-dota).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--weights", help="weights .safetensors (default: the shipped cstf-n-relu SynthRS weights)")
    parser.add_argument("--data", required=True, help="labelled folder, DOTA or HRSC2016 layout (see below)")
    parser.add_argument("--imgsz", type=int,
                        help="network input, a multiple of 64 (default: the size the weights were trained at)")
    parser.add_argument("--metric", choices=("voc07", "voc12"), default="voc07",
                        help="voc07: 11-point AP (DOTA/HRSC default); voc12: area under the curve")
    parser.add_argument("--conf", type=float, default=0.001, help="confidence floor (default 0.001, for mAP)")
    parser.add_argument("--iou", type=float, default=0.5, help="rotated NMS IoU threshold (default 0.5)")
    parser.add_argument("--batch", type=int, default=8, help="images (or tiles) per forward pass (default 8)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    parser.add_argument("--save", metavar="DIR", help="also write the detections as DIR/Task1_<class>.txt")
    parser.add_argument("--json", action="store_true", help="print the eval-dota JSON summary")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    parser.set_defaults(run=run)


def _check(args) -> None:
    if not 0.0 <= args.conf < 1.0:
        raise CstfError(f"--conf must be in [0, 1), got {args.conf}")
    if not 0.0 < args.iou <= 1.0:
        raise CstfError(f"--iou must be in (0, 1], got {args.iou}")
    if args.batch < 1:
        raise CstfError(f"--batch must be at least 1, got {args.batch}")


def run(args) -> int:
    _check(args)
    require_train_extra()
    from cstf_edge.model.checkpoint import load_weights, shipped_weights
    from cstf_edge.model.train import resolve_device
    from cstf_edge.data.labelled import load_labelled_dir
    from cstf_edge.model.validate import validate

    weights = args.weights or shipped_weights()
    labels = load_labelled_dir(args.data)
    model, meta = load_weights(weights, resolve_device(args.device))
    imgsz = args.imgsz or int(meta["imgsz"])
    log.info("%s (%s: %s) on %d images of %s at %d px", weights, meta["model"], ", ".join(meta["class_names"]),
             len(labels), args.data, imgsz)
    result = validate(model, labels, meta["class_names"], imgsz=imgsz, batch=args.batch, conf=args.conf,
                      iou=args.iou, metric=args.metric, save_dir=args.save, progress=not args.no_progress)
    print(json.dumps(result.summary()) if args.json else format_table(result))
    return 0
