"""The few CUDA runtime calls the TensorRT backend needs, through NVIDIA's cuda-python.

Every call goes through :func:`check`, which turns a non-success ``cudaError_t`` into a :class:`CudaError`
carrying the CUDA error name. cuda-python is imported on first use (:func:`cudart`), so this module imports
without it.

Signatures followed (cuda-python 12.x and 13.x, ``cuda.bindings.runtime``; each call returns a tuple whose
first item is the ``cudaError_t``): ``cudaMalloc(size)``, ``cudaMallocHost(size)``, ``cudaFree(ptr)``,
``cudaFreeHost(ptr)``, ``cudaMemcpy(dst, src, count, kind)``, ``cudaMemcpyAsync(dst, src, count, kind,
stream)``, ``cudaStreamCreateWithFlags(flags)``, ``cudaStreamBeginCapture(stream, mode)``,
``cudaStreamEndCapture(stream)``, ``cudaGraphInstantiateWithFlags(graph, flags)``, ``cudaGraphLaunch(exec,
stream)``, ``cudaGetDeviceProperties(device)``, ``cudaRuntimeGetVersion()``. The pattern is the TensorRT
samples' ``samples/python/common_runtime.py`` (``cuda_call``); ``cudaGraphInstantiateWithFlags`` is used
rather than ``cudaGraphInstantiate`` because its Python signature is the same in every cuda-python release.
"""
from __future__ import annotations

import ctypes
import logging

import numpy as np

from cstf_edge.runtime.errors import BackendUnavailableError

log = logging.getLogger(__name__)

TRT_INSTALL_HINT = ("pip install 'cstf-edge[trt]' (tensorrt and cuda-python); on a Jetson, JetPack ships "
                    "TensorRT: pip install cuda-python matching its CUDA")

_CUDART = None


class CudaError(BackendUnavailableError):
    """A CUDA runtime call failed; ``name`` is the CUDA error name (``cudaErrorMemoryAllocation``, ...)."""

    def __init__(self, message: str, name: str = ""):
        super().__init__(message)
        self.name = name


def cudart():
    """The cuda-python runtime module (``cuda.bindings.runtime``; ``cuda.cudart`` before cuda-python 12.6)."""
    global _CUDART
    if _CUDART is None:
        try:
            from cuda.bindings import runtime as module
        except ImportError:
            try:
                from cuda import cudart as module  # cuda-python < 12.6; removed in 13
            except ImportError:
                raise BackendUnavailableError(f"the TensorRT backend needs cuda-python: {TRT_INSTALL_HINT}") from None
        _CUDART = module
    return _CUDART


def error_name(err) -> str:
    """``cudaErrorInvalidValue`` for a ``cudaError_t`` (or ``str(err)`` for anything else)."""
    return getattr(err, "name", None) or str(err)


def check(result, what: str):
    """Unpack a cuda-python result tuple ``(err, *values)``; raise :class:`CudaError` unless ``err`` is success.

    Returns ``None`` for no value, the value for one, the tuple for several (as ``cuda_call`` in the
    TensorRT samples).
    """
    err, values = result[0], tuple(result[1:])
    if int(getattr(err, "value", err)) != 0:
        name = error_name(err)
        raise CudaError(f"CUDA call {what} failed with {name}", name)
    if not values:
        return None
    return values[0] if len(values) == 1 else values


def set_device(index: int) -> None:
    """Make ``index`` the current device of this host thread."""
    check(cudart().cudaSetDevice(index), f"cudaSetDevice({index})")


def device_environment(index: int) -> dict:
    """GPU name, compute capability and CUDA runtime version of device ``index`` (what an engine records)."""
    rt = cudart()
    props = check(rt.cudaGetDeviceProperties(index), f"cudaGetDeviceProperties({index})")
    name = props.name
    if isinstance(name, (bytes, bytearray)):
        name = bytes(name).split(b"\x00", 1)[0].decode("utf-8", "replace")
    version = int(check(rt.cudaRuntimeGetVersion(), "cudaRuntimeGetVersion"))
    return {"gpu_name": str(name).strip(), "compute_capability": f"{props.major}.{props.minor}",
            "cuda_version": f"{version // 1000}.{(version % 1000) // 10}"}


class DeviceBuffer:
    """``nbytes`` of device memory (``cudaMalloc``), freed by :meth:`free`."""

    def __init__(self, nbytes: int):
        self.nbytes = int(nbytes)
        self.ptr = int(check(cudart().cudaMalloc(max(self.nbytes, 1)), f"cudaMalloc({self.nbytes})"))

    def free(self) -> None:
        if self.ptr:
            ptr, self.ptr = self.ptr, 0
            check(cudart().cudaFree(ptr), "cudaFree")


class PinnedBuffer:
    """``nbytes`` of page-locked host memory (``cudaMallocHost``) with a numpy byte view, for async copies."""

    def __init__(self, nbytes: int):
        self.nbytes = int(nbytes)
        size = max(self.nbytes, 1)
        self.ptr = int(check(cudart().cudaMallocHost(size), f"cudaMallocHost({self.nbytes})"))
        self.bytes = np.ctypeslib.as_array((ctypes.c_uint8 * size).from_address(self.ptr))

    def view(self, dtype, shape) -> np.ndarray:
        """The first ``prod(shape)`` elements as an array of ``dtype`` and ``shape`` (no copy)."""
        dtype = np.dtype(dtype)
        count = int(np.prod(shape, dtype=np.int64))
        return self.bytes[: count * dtype.itemsize].view(dtype).reshape(shape)

    def free(self) -> None:
        if self.ptr:
            ptr, self.ptr = self.ptr, 0
            self.bytes = None
            check(cudart().cudaFreeHost(ptr), "cudaFreeHost")


def copy_to_device(dst: int, src: np.ndarray, stream=None) -> None:
    """Host -> device copy of a C-contiguous array (async on ``stream`` when given; pinned ``src`` then)."""
    rt = cudart()
    kind = rt.cudaMemcpyKind.cudaMemcpyHostToDevice
    if stream is None:
        check(rt.cudaMemcpy(dst, src.ctypes.data, src.nbytes, kind), "cudaMemcpy(HostToDevice)")
    else:
        check(rt.cudaMemcpyAsync(dst, src.ctypes.data, src.nbytes, kind, stream), "cudaMemcpyAsync(HostToDevice)")


def copy_to_host(dst: np.ndarray, src: int, stream) -> None:
    """Async device -> host copy into a pinned, C-contiguous array on ``stream``."""
    rt = cudart()
    kind = rt.cudaMemcpyKind.cudaMemcpyDeviceToHost
    check(rt.cudaMemcpyAsync(dst.ctypes.data, src, dst.nbytes, kind, stream), "cudaMemcpyAsync(DeviceToHost)")


class Stream:
    """A non-blocking CUDA stream of one execution context (never the legacy default stream, which cannot
    be captured into a CUDA graph)."""

    def __init__(self):
        rt = cudart()
        self.handle = check(rt.cudaStreamCreateWithFlags(rt.cudaStreamNonBlocking), "cudaStreamCreateWithFlags")

    def synchronize(self) -> None:
        check(cudart().cudaStreamSynchronize(self.handle), "cudaStreamSynchronize")

    def destroy(self) -> None:
        if self.handle is not None:
            handle, self.handle = self.handle, None
            check(cudart().cudaStreamDestroy(handle), "cudaStreamDestroy")


class CudaGraph:
    """Work captured from one stream and replayed with one launch (``cudaStreamBeginCapture`` in thread-local
    mode, so other threads' CUDA calls stay legal during the capture)."""

    def __init__(self, stream: Stream, work):
        rt = cudart()
        mode = rt.cudaStreamCaptureMode.cudaStreamCaptureModeThreadLocal
        check(rt.cudaStreamBeginCapture(stream.handle, mode), "cudaStreamBeginCapture")
        try:
            work()
        finally:  # always end the capture, or the stream stays unusable
            graph = check(rt.cudaStreamEndCapture(stream.handle), "cudaStreamEndCapture")
        try:
            self.exec = check(rt.cudaGraphInstantiateWithFlags(graph, 0), "cudaGraphInstantiateWithFlags")
        finally:
            check(rt.cudaGraphDestroy(graph), "cudaGraphDestroy")

    def launch(self, stream: Stream) -> None:
        check(cudart().cudaGraphLaunch(self.exec, stream.handle), "cudaGraphLaunch")

    def destroy(self) -> None:
        if self.exec is not None:
            graph_exec, self.exec = self.exec, None
            check(cudart().cudaGraphExecDestroy(graph_exec), "cudaGraphExecDestroy")
