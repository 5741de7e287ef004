"""Errors of the export module (``CstfError``: the CLI reports them with exit code 2)."""
from cstf_edge.errors import CstfError


class ExportError(CstfError):
    """An export cannot be done as asked: bad checkpoint, input size, precision for the target, calibration
    set; the message names the value and what would work."""


class GateFailedError(ExportError):
    """An artifact was written but failed its parity or accuracy gate (the report says which)."""
