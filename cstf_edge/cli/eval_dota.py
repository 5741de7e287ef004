"""``cstf-edge eval-dota``: DOTA Task1 (oriented-box) mAP with the official devkit's rules."""
from __future__ import annotations

import argparse
import json

from cstf_edge.data.task1 import labels_as_detections
from cstf_edge.errors import EvaluationError
from cstf_edge.eval.dota_map import LABEL_FORMATS, METRICS, DotaEvalResult, evaluate_dota, load_ground_truth

_EXAMPLES = """examples:
  cstf-edge eval-dota --results out/task1 --labels DOTA/val/labelTxt
      VOC07 11-point mAP of out/task1/Task1_<class>.txt over every label file, as a table
  cstf-edge eval-dota --results out/task1 --labels DOTA/val/labelTxt --imageset val.txt --metric voc12 --json
      VOC12 area mAP over the images listed in val.txt, printed as JSON:
      {"mAP": ..., "per_class_ap": {...}, "metric": ..., "num_detections": ..., "num_ground_truth": ...}

  cstf-edge eval-dota --results annotator_b/labelTxt --results-format labels --labels annotator_a/labelTxt
      score one annotation against another: every labelled object is a detection of score 1.0
      (a data set scored against itself gives mAP 1.0)

  cstf-edge eval-dota --results out/task1 --labels HRSC2016/FullDataSet/Annotations --labels-format hrsc
      HRSC2016 mAP (class 'ship', Task1_ship.txt) through the same scoring code

Result lines: image_id score x1 y1 x2 y2 x3 y3 x4 y4. A detection's image must have a label file.
"""


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "eval-dota",
        help="DOTA Task1 mAP of Task1_<class>.txt results (official devkit rules)",
        description="Evaluate oriented detections with the DOTA devkit's Task1 rules: exact polygon IoU "
        "> threshold, difficult objects ignored, each object matched once.",
        epilog=_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--results", required=True, help="folder of Task1_<class>.txt result files")
    parser.add_argument("--results-format", choices=("task1", "labels"), default="task1",
                        help="task1: Task1_<class>.txt files (default); labels: DOTA label files "
                        "<image_id>.txt, each object a detection of score 1.0")
    parser.add_argument("--labels", required=True,
                        help="folder of DOTA label files <image_id>.txt (e.g. DOTA/val/labelTxt), or with "
                        "--labels-format hrsc of HRSC2016 XML files (e.g. HRSC2016/FullDataSet/Annotations)")
    parser.add_argument("--labels-format", choices=LABEL_FORMATS, default="dota",
                        help="dota: labelTxt files (default); hrsc: HRSC2016 XML, every object class 'ship'")
    parser.add_argument("--imageset", help="file listing the image ids to evaluate (default: every label file)")
    parser.add_argument("--metric", choices=METRICS, default="voc07",
                        help="voc07: 11-point AP (DOTA/HRSC default); voc12: area under the curve")
    parser.add_argument("--iou", type=float, default=0.5, help="IoU a match must exceed (default 0.5)")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    parser.set_defaults(run=run)


def format_table(result: DotaEvalResult) -> str:
    """A readable per-class table with the mAP last."""
    width = max([len(name) for name in result.per_class_ap] + [5])
    lines = [f"{'class':<{width}}  {'AP':>7}  {'recall':>7}  {'prec.':>7}  {'dets':>7}  {'objects':>7}"]
    for name, ap in result.per_class_ap.items():
        lines.append(
            f"{name:<{width}}  {ap:7.4f}  {result.recall[name]:7.4f}  {result.precision[name]:7.4f}  "
            f"{result.num_detections[name]:7d}  {result.num_ground_truth[name]:7d}"
        )
    lines.append(f"{'mAP':<{width}}  {result.mAP:7.4f}  ({result.metric}, IoU > {result.iou_threshold:g})")
    return "\n".join(lines)


def run(args) -> int:
    if not 0.0 <= args.iou < 1.0:
        raise EvaluationError(f"--iou must be in [0, 1), got {args.iou}")
    results = args.results
    if args.results_format == "labels":
        results = labels_as_detections(load_ground_truth(args.results))
    result = evaluate_dota(results, args.labels, args.imageset, metric=args.metric, iou_threshold=args.iou,
                           labels_format=args.labels_format)
    print(json.dumps(result.summary()) if args.json else format_table(result))
    return 0
