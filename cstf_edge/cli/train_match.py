"""``cstf-edge train-match``: self-supervised training of the CSTF matcher."""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

log = logging.getLogger(__name__)

_EXAMPLES = """examples:
  cstf-edge train-match --out runs/match
      SynthRS scenes (seed 11, 300 scenes, rendered once into the cache) as optical/SAR/infrared pairs,
      5000 steps of 8 pairs at 256 px, difficulty ramped up over the first 40 %, initialised from the backbone
      of the SiLU detector weights
  cstf-edge train-match --out runs/match --resume                 continue exactly where it stopped
  cstf-edge train-match --images my_tiles/ --out runs/mine --steps 2000 --init runs/match/matcher.safetensors

Pairs are made on the fly with exact ground truth: a random affine warp of the query (any rotation,
scale ratio 0.5-2, shear, translation) and a random modality change (SynthRS's other renders; speckle,
intensity maps, inversion, blur, map-like quantisation, edges, night). The run folder holds
matcher.safetensors (for cstf-edge match / eval-match / export), last.safetensors, metrics.csv and
metrics.png. Never train on pairs you evaluate on (the SRIF pairs are test data).
"""


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "train-match", help="train the CSTF matcher on self-made pairs (SynthRS or a folder of images)",
        description="Self-supervised training of the CSTF matcher on pairs made on the fly with exact ground truth.",
        epilog=_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="run folder")
    parser.add_argument("--images", help="folder of images to make pairs from (default: SynthRS scenes)")
    parser.add_argument("--scenes", type=int, default=300, help="SynthRS scenes in the pool (default 300)")
    parser.add_argument("--scene-seed", type=int, default=11, help="SynthRS data-set seed of the pool (default 11)")
    parser.add_argument("--steps", type=int, default=5000, help="optimiser steps (default 5000)")
    parser.add_argument("--batch", type=int, default=8, help="pairs per step (default 8)")
    parser.add_argument("--imgsz", type=int, default=256, help="training pair size, a multiple of 16 (default 256)")
    parser.add_argument("--curriculum", type=float, default=0.4,
                        help="share of the steps over which pair difficulty ramps up (default 0.4; 0: none)")
    parser.add_argument("--lr", type=float, default=1e-3, help="peak learning rate (default 1e-3)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the pairs and the initialisation (default 0)")
    parser.add_argument("--init", default="detector",
                        help="'detector' (the SiLU detector weights' backbone, default), 'none', or matcher weights")
    parser.add_argument("--save-every", type=int, default=200, help="checkpoint every N steps (default 200)")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: all cores)")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    parser.set_defaults(run=run)


def run(args) -> int:
    from cstf_edge.model.train_match import MatchTrainConfig, train_matcher

    config = MatchTrainConfig(
        out=Path(args.out), steps=args.steps, batch=args.batch, imgsz=args.imgsz, lr=args.lr, seed=args.seed,
        scenes=args.scenes, scene_seed=args.scene_seed, images=args.images, curriculum=args.curriculum,
        init=None if args.init == "none" else args.init, save_every=args.save_every, resume=args.resume,
        threads=args.threads, progress=not args.no_progress)
    run_dir = train_matcher(config)
    log.info("matcher weights: %s", run_dir / "matcher.safetensors")
    return 0
