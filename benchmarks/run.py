"""Script entry of the accuracy-vs-FPS benchmark: the same as ``cstf-edge bench`` (same flags, same outputs).

    python benchmarks/run.py --data calibration/synthrs-val.toml --imgsz 1024 --batch 1 --out runs/bench
    python benchmarks/run.py --help
"""
import sys

from cstf_edge.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", *sys.argv[1:]]))
