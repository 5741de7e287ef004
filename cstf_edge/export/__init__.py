"""Export: PyTorch weights -> ONNX (FP32, FP16, INT8 Q/DQ) -> TensorRT engines, with parity and accuracy gates.

    python -m cstf_edge.export --profile export/cpu-int8.toml        (or: cstf-edge export ...)

Public API: :func:`run_export` with :class:`ExportOptions`; errors derive from :class:`ExportError`.
Every TensorRT-version branch lives in ``cstf_edge.export.tensorrt``.
"""
from cstf_edge.export.errors import ExportError, GateFailedError
from cstf_edge.export.options import ExportOptions, build_options


def run_export(options: ExportOptions, progress: bool = True) -> dict:
    """Run an export (see :mod:`cstf_edge.export.pipeline`); returns the summary report."""
    from cstf_edge.export.pipeline import run_export as _run

    return _run(options, progress)


__all__ = ["ExportError", "ExportOptions", "GateFailedError", "build_options", "run_export"]
