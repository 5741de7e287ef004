"""The CUDA pre/post-processing pipeline of :class:`~cstf_edge.runtime.detector.Detector`
(``Detector(..., pipeline="cuda")``): letterbox + normalise on the GPU (:class:`CudaPreprocessor`), then
best class, threshold, top-k and rotated NMS on the GPU (:class:`CudaPostprocessor`); boxes go back to image
pixels with the numpy :func:`~cstf_edge.runtime.postprocess.to_image`, as on the CPU pipeline.

    pipeline = open_pipeline("cuda", "cuda:0", spec, max_batch=8)   # None for "cpu"
    tensor, boxes = pipeline.preprocess(images, spec)                # same contract as preprocess_batch
    found = pipeline.postprocess(raw[0], conf, iou, classes=None, max_det=300)   # as postprocess()
    pipeline.close()

The backends take host arrays (``Runner.infer(dict of numpy)``), so the preprocessed tensor is copied back
to the host for the runner and the runner's raw output is copied to the GPU for post-processing. Zero-copy
(binding the preprocessor's device tensor straight into the TensorRT engine's input, and the engine's
output into the post-processor) is the next step; the copies are counted in the ``pre`` and ``post`` stage
times.

``pipeline="cuda"`` with a CPU ``device`` (e.g. ONNX Runtime's CPU build on a GPU host) runs pre/post on
GPU 0. Device buffers are allocated on first use and freed by :meth:`CudaPipeline.close`.
"""
from __future__ import annotations

import logging

import numpy as np

from cstf_edge.errors import CstfError
from cstf_edge.runtime.cuda import _driver
from cstf_edge.runtime.cuda.postprocess import CudaPostprocessor
from cstf_edge.runtime.cuda.preprocess import CudaPreprocessor
from cstf_edge.runtime.errors import BackendUnavailableError
from cstf_edge.runtime.postprocess import MAX_CANDIDATES, MAX_DETECTIONS, Detections
from cstf_edge.runtime.preprocess import Letterbox, PreprocessError, PreprocessSpec

log = logging.getLogger(__name__)

PIPELINES = ("cpu", "cuda", "auto")


def cuda_device_index(device: str) -> int:
    """GPU index for the CUDA pipeline: N of ``cuda:N``, 0 for ``cuda`` or any non-CUDA device."""
    if not device.startswith("cuda"):
        return 0
    _, _, index = device.partition(":")
    try:
        return int(index) if index else 0
    except ValueError:
        raise BackendUnavailableError(f"unknown device {device!r}; use cpu, cuda or cuda:N") from None


def cuda_python_available() -> bool:
    """Whether cuda-python imports here (no GPU is touched)."""
    try:
        _driver.bindings()
    except BackendUnavailableError:
        return False
    return True


def resolve_pipeline(pipeline: str, device: str) -> str:
    """``cpu`` / ``cuda`` / ``auto`` -> ``cpu`` or ``cuda``; ``auto`` is ``cuda`` when ``device`` is a CUDA
    device and cuda-python imports. ``cuda`` without cuda-python is a :class:`BackendUnavailableError`
    with the install hint."""
    if pipeline not in PIPELINES:
        raise CstfError(f"pipeline {pipeline!r} is not one of {', '.join(PIPELINES)}")
    if pipeline == "auto":
        return "cuda" if device.startswith("cuda") and cuda_python_available() else "cpu"
    if pipeline == "cuda":
        _driver.bindings()
    return pipeline


class CudaPipeline:
    """GPU twins of ``preprocess_batch`` and ``postprocess`` with their signatures, so the Detector calls
    either pipeline the same way. Results equal the numpy twins' (see ``cstf_edge.runtime.cuda``)."""

    def __init__(self, spec: PreprocessSpec, max_batch: int = 1, device: int = 0,
                 max_candidates: int = MAX_CANDIDATES):
        self.spec, self.max_batch, self.device = spec, int(max_batch), int(device)
        self.max_candidates = int(max_candidates)
        self._pre: CudaPreprocessor | None = None
        self._post: CudaPostprocessor | None = None

    def _preprocessor(self) -> CudaPreprocessor:
        if self._pre is None:
            self._pre = CudaPreprocessor(self.spec, self.max_batch, self.device)
            log.debug("CUDA preprocessing on GPU %d, batch up to %d", self.device, self.max_batch)
        return self._pre

    def _postprocessor(self, num_anchors: int, num_classes: int) -> CudaPostprocessor:
        post = self._post
        if post is None or (post.num_anchors, post.num_classes) != (num_anchors, num_classes):
            if post is not None:
                post.close()
            self._post = CudaPostprocessor(num_anchors, num_classes, self.max_candidates, device=self.device)
        return self._post

    def preprocess(self, images, spec: PreprocessSpec | None = None) -> tuple[np.ndarray, list[Letterbox]]:
        """uint8 BGR images -> host float32 ``[B, 3, H, W]`` and letterboxes, computed on the GPU (the
        tensor is copied back to the host for the runner)."""
        if spec is not None and spec != self.spec:
            raise PreprocessError(f"the CUDA pipeline was set up for {self.spec}, asked for {spec}")
        images = list(images)
        if not images:
            raise PreprocessError("no images to preprocess")
        pre = self._preprocessor()
        _, boxes = pre.run(images)
        return pre.download(len(images)), boxes

    def postprocess(self, raw: np.ndarray, conf: float = 0.25, iou: float = 0.5,
                    max_det: int = MAX_DETECTIONS, classes: np.ndarray | None = None,
                    agnostic: bool = False) -> Detections:
        """One image's raw ``[N, 5 + C]`` -> NMS-ed detections in network-input pixels, on the GPU."""
        num_anchors, width = raw.shape
        post = self._postprocessor(num_anchors, width - 5)
        return post(raw, conf, iou, classes=classes, agnostic=agnostic, max_det=max_det)

    def close(self) -> None:
        """Free the device buffers and streams (the pipeline re-allocates them if used again)."""
        for stage in (self._pre, self._post):
            if stage is not None:
                stage.close()
        self._pre = self._post = None


def open_pipeline(pipeline: str, device: str, spec: PreprocessSpec, max_batch: int = 1) -> CudaPipeline | None:
    """The :class:`CudaPipeline` for ``pipeline`` (after :func:`resolve_pipeline`), or None for the CPU one."""
    if resolve_pipeline(pipeline, device) == "cpu":
        return None
    return CudaPipeline(spec, max_batch, cuda_device_index(device))
