"""``cstf-edge run``: detect with an exported model (ONNX Runtime, TensorRT) over images, folders, globs,
videos, cameras and GeoTIFFs, writing DOTA labels, Task1 results, JSON, GeoJSON and drawings."""
from __future__ import annotations

import argparse
import json
import sys

from cstf_edge.errors import CstfError

_EXAMPLES = """sources (SOURCE, one or more):
  an image file, a folder (its images, rasters and videos), a quoted glob ('scenes/*.tif'), a video file
  (frame by frame), a camera index (0). GeoTIFF/COG rasters are read window by window through rasterio
  (pip install cstf-edge[geo]); other images are decoded whole, up to 1 GiB of pixels.
  Pixels become uint8 BGR by one rule: --bands (default: band 1 for 1-2 bands, bands 1,2,3 as R,G,B for
  3 or more); 16-bit and float data stretched per band from its 2nd-98th percentile over the whole scene;
  one band replicated to three (panchromatic, SAR).
  Images larger than --tile are cut into tiles overlapping by --overlap px, merged with rotated NMS.

outputs (--out DIR, written atomically; --format picks):
  dota     DIR/labelTxt/<image>.txt   x1 y1 ... x4 y4 class 0
  task1    DIR/Task1_<class>.txt      score with: cstf-edge eval-dota --results DIR --labels LABELS
  json     DIR/json/<image>.json      boxes, polygons, scores, classes, timings (task1 implies json)
  geojson  DIR/geojson/<image>.geojson  polygons in the raster's CRS (pixels when not georeferenced)
  --save-vis  DIR/vis/<image>.jpg     boxes drawn in class colours
  always   DIR/summary.json           counts, failures, timings, one entry per image

exit status: 0 all sources done (or skipped), 1 some source failed (listed with the reason),
2 bad arguments or model (nothing was run), 130 interrupted (results so far written).

examples:
  cstf-edge run DOTA/val/images --model cstf-n.onnx --out out/val
  cstf-edge eval-dota --results out/val --labels DOTA/val/labelTxt
      detect on a folder and score the Task1 results
  cstf-edge run scene.tif --model cstf-n-int8.onnx --tile 1024 --overlap 200 --format geojson,json --save-vis
      an 8000 x 8000 GeoTIFF read window by window, polygons in its CRS
  cstf-edge run 'sar/*.tif' --model cstf-n.onnx --bands 1 --classes ship --conf 0.4 --json
  cstf-edge run traffic.mp4 --model cstf-n.engine --device cuda:0 --pipeline cuda --save-vis --format json
  cstf-edge run DOTA/test/images --model cstf-n.onnx --out out/test --skip-existing   resume a run
"""


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "run", help="detect with an exported model over images, folders, videos and GeoTIFFs", epilog=_EXAMPLES,
        description="Run an exported CSTF model (.onnx through ONNX Runtime, .engine through TensorRT) over "
        "SOURCE(s) with the project's preprocessing, tiling and rotated NMS, and write the detections.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("sources", nargs="+", metavar="SOURCE", help="image, folder, glob, video or camera index")
    parser.add_argument("--model", required=True, help="exported model: .onnx, .engine/.plan (with its .json)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    parser.add_argument("--pipeline", choices=("cpu", "cuda", "auto"), default="cpu",
                        help="pre/post-processing on the CPU (numpy) or the GPU (CUDA, needs cuda-python); auto: "
                        "cuda when --device is a CUDA device and cuda-python imports (default cpu)")
    parser.add_argument("--imgsz", type=int, help="network input; must match the model (default: the model's)")
    parser.add_argument("--tile", type=int, help="tile side for large images (default: the network input)")
    parser.add_argument("--overlap", type=int, default=200, help="overlap of neighbouring tiles in px (default 200)")
    parser.add_argument("--conf", type=float, default=0.25, help="confidence threshold (default 0.25)")
    parser.add_argument("--iou", type=float, default=0.1, help="rotated NMS IoU threshold (default 0.1)")
    parser.add_argument("--classes", help="keep only these classes: names or 0-based ids, comma separated")
    parser.add_argument("--out", default="runs/detect", help="output folder (default runs/detect)")
    parser.add_argument("--format", default="dota,task1,json",
                        help="comma separated: dota, task1, json, geojson (default dota,task1,json)")
    parser.add_argument("--save-vis", action="store_true", help="also write DIR/vis/<image>.jpg with boxes drawn")
    parser.add_argument("--vis-conf", type=float, metavar="SCORE",
                        help="draw only detections of this score or more in the pictures (default: all that "
                             "--conf keeps; the files always hold all)")
    parser.add_argument("--batch", type=int, default=1,
                        help="images or tiles per forward pass, when the model allows it (default 1)")
    parser.add_argument("--reference", metavar="PATH",
                        help="reference image (or folder of them, matched by name) for two-input models")
    parser.add_argument("--bands", help="1-based bands to use, 1 or 3 of them, e.g. 4,3,2 or 1 (see below)")
    parser.add_argument("--skip-existing", action="store_true",
                        help="skip images whose outputs exist (resume); Task1 files still cover all images")
    parser.add_argument("--max-frames", type=int, help="stop a video or camera after this many frames")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON (without per-image entries)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    parser.set_defaults(run=run)


def _bands(text: str | None) -> list[int] | None:
    if not text:
        return None
    try:
        return [int(token) for token in text.split(",") if token.strip()]
    except ValueError:
        raise CstfError(f"--bands {text!r}: give 1-based band numbers, e.g. 4,3,2") from None


def config_from_args(args):
    """The :class:`~cstf_edge.runtime.run.RunConfig` of parsed arguments."""
    from cstf_edge.runtime.run import RunConfig

    return RunConfig(sources=list(args.sources), model=args.model, device=args.device, out=args.out,
                     imgsz=args.imgsz, tile=args.tile, overlap=args.overlap, conf=args.conf, iou=args.iou,
                     classes=args.classes, formats=args.format, save_vis=args.save_vis, vis_conf=args.vis_conf,
                     batch=args.batch,
                     reference=args.reference, bands=_bands(args.bands), skip_existing=args.skip_existing,
                     max_frames=args.max_frames, progress=not args.no_progress, pipeline=args.pipeline)


def run(args) -> int:
    from cstf_edge.runtime.run import run as run_job

    summary = run_job(config_from_args(args))
    if args.json:
        print(json.dumps(summary.to_dict(images=False)))
    else:
        print(summary.line())
    for failure in summary.failures:
        print(f"failed: {failure['path']}: {failure['reason']}", file=sys.stderr)
    if summary.interrupted:
        return 130
    return 1 if summary.failed else 0
