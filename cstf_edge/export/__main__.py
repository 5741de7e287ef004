"""``python -m cstf_edge.export``: the same command as ``cstf-edge export``."""
import sys

from cstf_edge.cli import main

if __name__ == "__main__":
    sys.exit(main(["export", *sys.argv[1:]]))
