"""ONNX Runtime backend (CPU, and CUDA where the GPU build is installed)."""
from cstf_edge.runtime.backends.onnxruntime.runner import OnnxRuntimeRunner

__all__ = ["OnnxRuntimeRunner"]
