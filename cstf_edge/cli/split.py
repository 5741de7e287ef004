"""``cstf-edge split``: cut a DOTA-layout data set into patches the way DOTA_devkit's ImgSplit does."""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

from cstf_edge.data.dota import IMAGE_SUFFIXES
from cstf_edge.errors import CstfError

log = logging.getLogger(__name__)

_EXAMPLES = """examples:
  cstf-edge split DOTA/train DOTA/train_1024
      1024 px patches overlapping by 200 px (DOTA_devkit defaults for single-scale training)
  cstf-edge split DOTA/val DOTA/val_ms --rates 0.5 1.0 1.5 --gap 500
      multi-scale patches; names carry the rate: P0003__0.5__0___0
  cstf-edge split HRSC_dota HRSC_800 --subsize 800 --gap 150 --ext .jpg

SRC must hold images/ and labelTxt/; DST receives images/ and labelTxt/ (label files without header lines).
"""


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "split",
        help="cut large images and their DOTA labels into overlapping patches",
        description="Split a DOTA-layout directory into patches (DOTA_devkit ImgSplit rules: last patch "
        "snapped to the image edge, cut objects clipped, difficult=2 when 70% or less is inside).",
        epilog=_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("src", help="source directory with images/ and labelTxt/")
    parser.add_argument("dst", help="output directory (images/ and labelTxt/ are created)")
    parser.add_argument("--subsize", type=int, default=1024, help="patch size in pixels (default 1024)")
    parser.add_argument("--gap", type=int, default=200, help="overlap between patches (default 200)")
    parser.add_argument("--rates", type=float, nargs="+", default=[1.0],
                        help="rescale factors applied before cutting (default 1.0)")
    parser.add_argument("--thresh", type=float, default=0.7,
                        help="inside fraction at or below which a cut object becomes difficult=2 (default 0.7)")
    parser.add_argument("--ext", default=".png", choices=IMAGE_SUFFIXES, help="patch image format (default .png)")
    parser.add_argument("--no-pad", action="store_true", help="do not zero-pad patches smaller than subsize")
    parser.add_argument("--float-coords", action="store_true",
                        help="keep float patch coordinates instead of the devkit's truncated integers")
    parser.add_argument("--on-error", choices=("raise", "warn"), default="raise",
                        help="malformed label lines: stop (default) or skip with a warning")
    parser.set_defaults(run=run)


def check_args(args) -> None:
    """Refuse option values the splitter cannot use, in one line (``CstfError``)."""
    if not 0 <= args.gap < args.subsize:
        raise CstfError(f"split: need --subsize > --gap >= 0, got --subsize {args.subsize} --gap {args.gap}")
    if not 0 < args.thresh <= 1:
        raise CstfError(f"split: --thresh is an inside fraction in (0, 1], got {args.thresh}")
    if any(not rate > 0 for rate in args.rates):
        raise CstfError(f"split: --rates must be positive, got {args.rates}")


def warn_existing_patches(dst) -> None:
    """Log a warning when ``dst/images`` already holds files (a rerun mixes old and new patches)."""
    images = Path(dst) / "images"
    if images.is_dir() and any(path.suffix.lower() in IMAGE_SUFFIXES for path in images.iterdir()):
        log.warning("%s already holds patches; patches of the same name are replaced, others are kept "
                    "(use an empty DST for a clean split)", images)


def run(args) -> int:
    check_args(args)
    from cstf_edge.data.split import split_dataset

    warn_existing_patches(args.dst)
    summary = split_dataset(
        args.src, args.dst, subsize=args.subsize, gap=args.gap, rates=args.rates, thresh=args.thresh,
        ext=args.ext, pad=not args.no_pad, integer_coords=not args.float_coords, on_error=args.on_error,
    )
    print(
        f"split {summary.images} images at rates {args.rates} into {summary.patches} patches in {args.dst}: "
        f"{summary.objects_in} objects in, {summary.objects_out} written "
        f"({summary.objects_cut} with difficult=2)"
        + (f"; {summary.skipped_labels} label files had no image" if summary.skipped_labels else "")
    )
    return 0
