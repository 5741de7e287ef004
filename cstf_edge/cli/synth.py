"""``cstf-edge synth OUT``: write a SynthRS data set (DOTA layout) of synthetic overhead scenes."""
from __future__ import annotations

import argparse

from cstf_edge.data.classes import SYNTH_CLASSES
from cstf_edge.data.synthrs import MODALITIES
from cstf_edge.data.synthrs.compose import SIZE_RANGE
from cstf_edge.data.synthrs.writer import generate_dataset

_EPILOG = f"""layout: OUT/images + OUT/labelTxt (optical), OUT/<modality>/images + labelTxt for the others,
OUT/pairs/{{reference,query}}/{{images,labelTxt}} and OUT/pairs/transforms/<id>.txt (3x3 H, reference
pixel -> query pixel in continuous coordinates: pixel (row i, column j) covers [j, j+1) x [i, i+1), as the
labels; OpenCV warps, with pixel centres at integers, need T(-0.5) @ H @ T(+0.5)). OUT/synthrs.json records
the parameters: a rerun with the same ones resumes (--n and --pairs may grow), other ones are refused.
Classes: {', '.join(SYNTH_CLASSES)}.
examples:
  cstf-edge synth data/synth --n 200 --seed 1
  cstf-edge synth data/sarset --n 100 --modalities optical,sar --pairs 50 --workers 2
  cstf-edge synth data/ships --n 20 --classes ship=12,storage-tank=3
"""


def _list(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "synth", help="make a SynthRS synthetic data set (DOTA layout)", epilog=_EPILOG,
        description="Render synthetic overhead scenes (optical, SAR, infrared) with oriented-box labels.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("out", help="output folder (created; existing scenes of the same data set are kept and skipped)")
    parser.add_argument("--n", type=int, default=100, help="number of scenes (default 100)")
    parser.add_argument("--size", type=int, default=1024, help=f"scene side in pixels, {SIZE_RANGE[0]} to {SIZE_RANGE[1]} (default 1024)")
    parser.add_argument("--seed", type=int, default=0, help="data set seed; scene i depends on (seed, i) only")
    parser.add_argument("--modalities", type=_list, default=["optical"],
                        help=f"comma list of {', '.join(MODALITIES)} (default optical)")
    parser.add_argument("--pairs", type=int, default=0, help="also write N reference/query pairs")
    parser.add_argument("--pair-modalities", type=_list, default=["optical", "sar"],
                        help="reference,query modalities of the pairs (default optical,sar)")
    parser.add_argument("--classes", default=None,
                        help="only these classes (ship,plane) or exact counts per scene (ship=5,plane=2)")
    parser.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    summary = generate_dataset(
        args.out, args.n, size=args.size, seed=args.seed, modalities=args.modalities, classes=args.classes,
        pairs=args.pairs, pair_modalities=args.pair_modalities, workers=args.workers,
        progress=not args.no_progress,
    )
    counts = ", ".join(f"{cls} {count}" for cls, count in sorted(summary.class_counts.items())) or "none"
    print(f"{summary.out}: {summary.scenes_written} scenes written, {summary.scenes_skipped} already there, "
          f"{summary.pairs_written} pairs; objects: {counts}")
    return 0
