"""CUDA twins of the runtime's numpy pre/post-processing, through NVIDIA's cuda-python (NVRTC-compiled
kernels; no torch, no CuPy, no nvcc).

    from cstf_edge.runtime.cuda import CudaPreprocessor, CudaPostprocessor

    with CudaPreprocessor(spec, max_batch=1) as pre:
        ptr, box = pre(image)                       # float32 [1, 3, H, W] on the device, and its letterbox
    post = CudaPostprocessor(num_anchors=21504, num_classes=15)
    found = post(raw, conf=0.25, iou=0.5)           # == cstf_edge.runtime.postprocess.postprocess(raw, ...)

    Detector("cstf-n.engine", device="cuda:0", pipeline="cuda")   # both twins in the Detector (CudaPipeline)

Importing this package needs only numpy: cuda-python is imported when a twin is created, and its absence
(or a machine without a GPU) is a :class:`~cstf_edge.runtime.errors.BackendUnavailableError` with the
install hint. Parity with the numpy twins is tested by ``tests/test_cuda_kernels.py`` (``gpu`` marker);
the kernels' arithmetic is also compiled with the host C++ compiler and checked there without a GPU.
"""
from cstf_edge.runtime.cuda._driver import INSTALL_HINT, CudaError
from cstf_edge.runtime.cuda.pipeline import CudaPipeline, open_pipeline, resolve_pipeline
from cstf_edge.runtime.cuda.postprocess import CudaPostprocessor
from cstf_edge.runtime.cuda.preprocess import CudaPreprocessor

__all__ = ["INSTALL_HINT", "CudaError", "CudaPipeline", "CudaPostprocessor", "CudaPreprocessor", "open_pipeline",
           "resolve_pipeline"]
