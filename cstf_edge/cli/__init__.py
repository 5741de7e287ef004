"""The ``cstf-edge`` command. Each subcommand lives in its own module of this package and is a thin call
into the library; a module exposes ``register(subparsers)`` which adds its parser and sets ``run``.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import sys

from cstf_edge import __version__
from cstf_edge.errors import CstfError

log = logging.getLogger("cstf_edge")

# Subcommand modules, in the order `--help` lists them.
_SUBCOMMANDS = ("demo", "synth", "split", "eval_dota", "eval_match", "info", "train", "val", "export", "run", "bench",
                "train_match", "match")

_EPILOG = """examples:
  cstf-edge demo                                      the whole pipeline on SynthRS scenes in a few minutes
  cstf-edge synth data/synth --n 200 --seed 1         make a SynthRS data set (DOTA layout)
  cstf-edge split DOTA/train DOTA/train_1024          cut large images into 1024 px patches
  cstf-edge eval-dota --results out/ --labels data/synth/labelTxt --json
  cstf-edge eval-match ../shared/data/multimodal/srif_dataset   SIFT/ORB matching success per modality
  cstf-edge info --model cstf-n --imgsz 1024          parameters and GFLOPs beside YOLOv8n-obb
  cstf-edge train --data data/synth --val data/synth_val --epochs 15 --out runs/synth
  cstf-edge val --data data/synth_val --json          mAP of the shipped weights (or --weights W)
  cstf-edge run scenes/ --model cstf-n.onnx --out out  detect with an exported model (DOTA, Task1, JSON)
  cstf-edge export --profile export/cpu-int8.toml     FP32 + INT8 ONNX with parity and accuracy gates
  cstf-edge bench --data calibration/synthrs-val.toml  accuracy vs FPS of torch/ONNX Runtime/TensorRT x precisions
  cstf-edge train-match --out runs/match              self-supervised matcher training on SynthRS pairs
  cstf-edge match ref.png query.png --out runs/pair   register a query onto a reference (any sensor, any angle)
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cstf-edge",
        description="Oriented-object detection for overhead imagery, from training to deployed engines.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"cstf-edge {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in _SUBCOMMANDS:
        importlib.import_module(f"cstf_edge.cli.{name}").register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    if not getattr(args, "run", None):
        parser.print_help()
        return 2
    try:
        return int(args.run(args) or 0)
    except CstfError as exc:
        log.error("%s", exc)
        return 2
    except OSError as exc:  # a backstop: library code turns the file-system errors it expects into DataError
        log.error("%s: %s", exc.filename if exc.filename is not None else "error", exc.strerror or exc)
        return 2
    except KeyboardInterrupt:
        log.error("interrupted")
        return 130


if __name__ == "__main__":
    sys.exit(main())
