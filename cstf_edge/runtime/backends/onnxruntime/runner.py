"""ONNX Runtime runner: one ``InferenceSession`` with graph optimisations on, CPU or CUDA provider."""
from __future__ import annotations

import logging
import os

import numpy as np

from cstf_edge.runtime.artifact import ArtifactInfo, read_onnx_info
from cstf_edge.runtime.backends.base import Runner
from cstf_edge.runtime.errors import ArtifactError, BackendUnavailableError

log = logging.getLogger(__name__)


def _onnxruntime():
    try:
        import onnxruntime
    except ImportError:
        raise BackendUnavailableError("ONNX Runtime is not installed: pip install onnxruntime "
                                      "(or onnxruntime-gpu for CUDA)") from None
    return onnxruntime


def providers_for(device: str) -> list:
    """Execution providers for ``device`` (``cpu``, ``cuda`` or ``cuda:N``)."""
    ort = _onnxruntime()
    if device == "cpu":
        return ["CPUExecutionProvider"]
    if device.startswith("cuda"):
        if "CUDAExecutionProvider" not in ort.get_available_providers():
            raise BackendUnavailableError(f"device {device!r} needs the CUDA build of ONNX Runtime "
                                          "(pip install onnxruntime-gpu); this one has "
                                          f"{ort.get_available_providers()}")
        index = int(device.split(":", 1)[1]) if ":" in device else 0
        return [("CUDAExecutionProvider", {"device_id": index}), "CPUExecutionProvider"]
    raise BackendUnavailableError(f"unknown device {device!r}; use cpu, cuda or cuda:N")


class OnnxRuntimeRunner(Runner):
    """Runs an exported ``.onnx`` through ONNX Runtime. ``threads``: intra-op threads (default: all cores)."""

    backend = "onnxruntime"

    def __init__(self, path, device: str = "cpu", threads: int | None = None):
        self.threads = threads
        self.session = None
        super().__init__(path, device)

    def _session_options(self):
        ort = _onnxruntime()
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3
        if self.threads:
            options.intra_op_num_threads = self.threads
        return options

    def _read_info(self) -> ArtifactInfo:
        ort = _onnxruntime()
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        options.log_severity_level = 3
        session = self._open(options, ["CPUExecutionProvider"])
        return read_onnx_info(self.path, session.get_modelmeta().custom_metadata_map)

    def _open(self, options, providers):
        ort = _onnxruntime()
        try:
            return ort.InferenceSession(os.fspath(self.path), sess_options=options, providers=providers)
        except Exception as exc:  # onnxruntime raises its own unexported exception types
            raise ArtifactError(f"{self.path}: ONNX Runtime cannot load it ({str(exc).splitlines()[0]}); "
                                "is it a complete .onnx file? re-export it") from None

    def activate(self) -> None:
        self.session = self._open(self._session_options(), providers_for(self.device))
        log.debug("%s on %s", self.path, self.session.get_providers())

    def deactivate(self) -> None:
        self.session = None

    def _infer(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        names = [o.name for o in self.session.get_outputs()]
        values = self.session.run(names, {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in feed.items()})
        return dict(zip(names, values))
