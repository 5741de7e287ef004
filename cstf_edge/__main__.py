import sys

from cstf_edge.cli import main

sys.exit(main())
