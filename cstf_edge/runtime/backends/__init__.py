"""Backends, one folder each, behind one interface (:class:`~cstf_edge.runtime.backends.base.Runner`).

:func:`open_runner` picks the backend from the artifact: ``.onnx`` -> ONNX Runtime, ``.engine``/``.plan``
-> TensorRT, ``.safetensors`` -> the PyTorch reference. Backend modules are imported only when chosen.
"""
from __future__ import annotations

from pathlib import Path

from cstf_edge.runtime.artifact import artifact_kind
from cstf_edge.runtime.backends.base import Runner


def open_runner(path: str | Path, device: str = "cpu", **options) -> Runner:
    """A runner for ``path`` on ``device`` (not yet activated: use it in a ``with`` block)."""
    kind = artifact_kind(path)
    if kind == "onnx":
        from cstf_edge.runtime.backends.onnxruntime import OnnxRuntimeRunner

        return OnnxRuntimeRunner(path, device, **options)
    if kind == "tensorrt":
        from cstf_edge.runtime.backends.tensorrt import TensorRTRunner

        return TensorRTRunner(path, device, **options)
    from cstf_edge.runtime.backends.torch import torch_runner

    return torch_runner(path, device, **options)


__all__ = ["Runner", "open_runner"]
