"""``cstf-edge export``: a thin call into :mod:`cstf_edge.export` (its options and help live there)."""
from __future__ import annotations

import argparse


def register(subparsers) -> None:
    from cstf_edge.export import cli

    parser = subparsers.add_parser("export", help="weights -> ONNX FP32/FP16/INT8 and TensorRT engines, with gates",
                                   description=cli.DESCRIPTION, epilog=cli.EXAMPLES,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    cli.add_arguments(parser)
    parser.set_defaults(run=cli.run)
