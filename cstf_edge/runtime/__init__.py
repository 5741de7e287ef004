"""The deployed runtime: what a Jetson or a ground station installs. It imports no torch.

Public API::

    from cstf_edge.runtime import Detector, open_runner, PreprocessSpec, preprocess_batch, postprocess

Backends live one folder each under ``cstf_edge.runtime.backends`` (ONNX Runtime, TensorRT, the PyTorch
reference behind a lazy import); pre/post-processing have numpy twins here and CUDA twins in
``cstf_edge.runtime.cuda``.
"""
from cstf_edge.runtime.artifact import ArtifactInfo
from cstf_edge.runtime.backends import Runner, open_runner
from cstf_edge.runtime.detector import DetectionResult, Detector
from cstf_edge.runtime.errors import ArtifactError, BackendUnavailableError, PreprocessError
from cstf_edge.runtime.postprocess import Detections, postprocess, to_image
from cstf_edge.runtime.preprocess import Letterbox, PreprocessSpec, letterbox, preprocess_batch, to_tensor

__all__ = [
    "ArtifactError",
    "ArtifactInfo",
    "BackendUnavailableError",
    "DetectionResult",
    "Detections",
    "Detector",
    "Letterbox",
    "PreprocessError",
    "PreprocessSpec",
    "Runner",
    "letterbox",
    "open_runner",
    "postprocess",
    "preprocess_batch",
    "to_image",
    "to_tensor",
]
