"""Errors of the runtime (all ``CstfError``: the CLI reports them with exit code 2)."""
from cstf_edge.errors import CstfError, DataError
from cstf_edge.runtime.preprocess import PreprocessError


class ArtifactError(CstfError):
    """A model artifact is missing, unreadable, or does not fit the runtime's settings (the message says how
    to rebuild or which setting to change)."""


class BackendUnavailableError(CstfError):
    """The backend an artifact needs (ONNX Runtime, TensorRT, CUDA, PyTorch) is not installed or has no
    device here."""


__all__ = ["ArtifactError", "BackendUnavailableError", "DataError", "PreprocessError"]
