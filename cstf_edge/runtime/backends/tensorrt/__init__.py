"""TensorRT backend: a serialized engine and its sidecar JSON, run with cuda-python streams and buffers.

Importing this package needs neither TensorRT nor cuda-python; activating a runner does (a missing one is a
``BackendUnavailableError`` with the install hint). Engines are built by :mod:`cstf_edge.export.tensorrt`.
"""
from cstf_edge.runtime.backends.tensorrt.runner import TensorRTRunner

__all__ = ["TensorRTRunner"]
