"""The exception hierarchy of cstf-edge.

Library code raises these (never ``sys.exit``, never ``assert`` for control flow). The CLI turns a
``CstfError`` into a one-line message and exit code 2 (bad input or arguments).
"""


class CstfError(Exception):
    """Base class of every error cstf-edge raises on purpose."""


class DataError(CstfError):
    """A data set, image or file cannot be read or does not have the expected layout."""


class LabelFormatError(DataError):
    """A label line or file is malformed; the message names the file and line number."""

    def __init__(self, message: str, path: str | None = None, line: int | None = None):
        where = ""
        if path is not None:
            where = f"{path}:{line}: " if line is not None else f"{path}: "
        super().__init__(where + message)
        self.path = path
        self.line = line


class EvaluationError(CstfError):
    """Inputs to an evaluation are inconsistent (unknown image ids, unreadable result files)."""
