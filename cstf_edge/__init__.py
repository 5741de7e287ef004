"""cstf-edge: deploy CSTF oriented-object detectors and measure what each precision costs and buys.

The public API is small; everything else lives in private-by-convention submodules.
"""
from cstf_edge.errors import (
    CstfError,
    DataError,
    EvaluationError,
    LabelFormatError,
)

__version__ = "0.1.0"

__all__ = ["CstfError", "DataError", "EvaluationError", "LabelFormatError", "__version__"]
