"""The cuda-python layer of the CUDA twins: import shim, error checking, NVRTC compilation, a module cache
per device, device/pinned buffers, streams and kernel launches.

cuda-python is imported on first use, as ``cuda.bindings.{driver, nvrtc, runtime}`` (cuda-python >= 12.6,
the only layout of 13.x) or, failing that, the older ``from cuda import cuda, nvrtc, cudart`` layout of
cuda-python 12.x; without either, :func:`bindings` raises :class:`BackendUnavailableError` with the install
hint, so ``import cstf_edge.runtime.cuda`` itself never needs it.

Calls followed (cuda-python's documented signatures; every call returns a tuple whose first item is the
``CUresult`` / ``cudaError_t`` / ``nvrtcResult``): ``nvrtcCreateProgram(src, name, 0, [], [])``,
``nvrtcCompileProgram(prog, n, options)``, ``nvrtcGetProgramLogSize`` / ``nvrtcGetProgramLog``,
``nvrtcGetCUBINSize`` / ``nvrtcGetCUBIN`` (or ``nvrtcGetPTXSize`` / ``nvrtcGetPTX``),
``nvrtcGetSupportedArchs()``, ``nvrtcDestroyProgram(prog)``; ``cuInit(0)``, ``cuModuleLoadData(image)``,
``cuModuleGetFunction(module, name)``, ``cuLaunchKernel(f, gx, gy, gz, bx, by, bz, shared, stream,
kernelParams, 0)`` with ``kernelParams`` the address of an array of pointers to numpy-held argument values
(the "Preparing kernel arguments / Using NumPy" recipe of the cuda-python overview); ``cudaGetDeviceCount``,
``cudaSetDevice``, ``cudaFree(0)``, ``cudaGetDeviceProperties(dev).major/.minor``, ``cudaMalloc``, ``cudaMallocHost``,
``cudaFree``, ``cudaFreeHost``, ``cudaMemcpyAsync(dst, src, n, kind, stream)``, ``cudaMemsetAsync``,
``cudaStreamCreate``, ``cudaStreamSynchronize``, ``cudaStreamDestroy``.
"""
from __future__ import annotations

import ctypes
import hashlib
import logging
from types import SimpleNamespace

import numpy as np

from cstf_edge.errors import CstfError
from cstf_edge.runtime.errors import BackendUnavailableError

log = logging.getLogger(__name__)

INSTALL_HINT = ("install NVIDIA's cuda-python: pip install 'cuda-python>=12' (included in the "
                "cstf-edge[trt] extra; on a Jetson, the cuda-python release matching JetPack's CUDA)")

_BINDINGS = None
_COMPILED: dict[tuple[str, str], bytes] = {}
_MODULES: dict[tuple[int, str], "Module"] = {}


class CudaError(CstfError):
    """A CUDA driver, runtime or NVRTC call failed; ``name`` is the error's name (``CUDA_ERROR_...``,
    ``cudaError...``, ``NVRTC_ERROR_...``) and ``call`` the call that returned it."""

    def __init__(self, message: str, name: str = "", call: str = ""):
        super().__init__(message)
        self.name = name
        self.call = call


def _import_bindings() -> SimpleNamespace:
    try:
        from cuda.bindings import driver, nvrtc, runtime
    except ImportError:
        from cuda import cuda as driver, cudart as runtime, nvrtc  # cuda-python 12.x before 12.6
    return SimpleNamespace(driver=driver, nvrtc=nvrtc, runtime=runtime)


def bindings() -> SimpleNamespace:
    """``driver``, ``nvrtc`` and ``runtime`` of cuda-python; :class:`BackendUnavailableError` without it."""
    global _BINDINGS
    if _BINDINGS is None:
        try:
            _BINDINGS = _import_bindings()
        except ImportError as exc:
            raise BackendUnavailableError(f"the CUDA pre/post-processing needs cuda-python ({exc}); "
                                          f"{INSTALL_HINT}") from None
    return _BINDINGS


def error_name(err) -> str:
    """The enum name of a ``CUresult`` / ``cudaError_t`` / ``nvrtcResult`` (``str(err)`` otherwise)."""
    return getattr(err, "name", None) or str(err)


def check(result, call: str):
    """Unpack a cuda-python result ``(err, *values)``; raise :class:`CudaError` unless ``err`` is success.

    Returns None for no value, the value for one, the tuple for several."""
    err, values = result[0], tuple(result[1:])
    if int(getattr(err, "value", err)) != 0:
        name = error_name(err)
        raise CudaError(f"CUDA call {call} failed with {name}", name, call)
    if not values:
        return None
    return values[0] if len(values) == 1 else values


def choose_arch(major: int, minor: int, supported=None) -> tuple[str, bool]:
    """NVRTC ``--gpu-architecture`` option for a device of compute capability ``major.minor`` and whether
    it yields a CUBIN: ``sm_XY`` when NVRTC supports the device's arch (or ``supported`` is None),
    otherwise PTX for the newest supported ``compute_XY`` below it (the driver JIT-compiles it)."""
    arch = 10 * int(major) + int(minor)
    if supported is None or arch in supported:
        return f"--gpu-architecture=sm_{arch}", True
    older = [a for a in supported if a <= arch]
    if not older:
        raise BackendUnavailableError(f"this NVRTC supports architectures {sorted(supported)}, none usable by a "
                                      f"GPU of compute capability {major}.{minor}; {INSTALL_HINT}")
    return f"--gpu-architecture=compute_{max(older)}", False


def supported_archs():
    """NVRTC's supported architectures (None where this NVRTC cannot say)."""
    nvrtc = bindings().nvrtc
    if not hasattr(nvrtc, "nvrtcGetSupportedArchs"):
        return None
    return list(check(nvrtc.nvrtcGetSupportedArchs(), "nvrtcGetSupportedArchs"))


def _program_log(nvrtc, prog) -> str:
    size = check(nvrtc.nvrtcGetProgramLogSize(prog), "nvrtcGetProgramLogSize")
    text = b" " * size
    check(nvrtc.nvrtcGetProgramLog(prog, text), "nvrtcGetProgramLog")
    return text.rstrip(b"\0 ").decode("utf-8", "replace")


def _program_image(nvrtc, prog, cubin: bool) -> bytes:
    get_size, get = (nvrtc.nvrtcGetCUBINSize, nvrtc.nvrtcGetCUBIN) if cubin else \
        (nvrtc.nvrtcGetPTXSize, nvrtc.nvrtcGetPTX)
    size = check(get_size(prog), get_size.__name__)
    image = b" " * size
    check(get(prog, image), get.__name__)
    return image


def compile_source(source: str, name: str, arch_option: str, cubin: bool, options=()) -> bytes:
    """NVRTC-compile ``source`` to a CUBIN (or NUL-terminated PTX); the compile log is in the error."""
    nvrtc = bindings().nvrtc
    prog = check(nvrtc.nvrtcCreateProgram(source.encode(), name.encode(), 0, [], []), "nvrtcCreateProgram")
    try:
        opts = [opt.encode() for opt in (arch_option, *options)]
        err = nvrtc.nvrtcCompileProgram(prog, len(opts), opts)[0]
        if int(getattr(err, "value", err)) != 0:
            raise CudaError(f"NVRTC could not compile {name} ({error_name(err)}):\n{_program_log(nvrtc, prog)}",
                            error_name(err), "nvrtcCompileProgram")
        return _program_image(nvrtc, prog, cubin)
    finally:
        check(nvrtc.nvrtcDestroyProgram(prog), "nvrtcDestroyProgram")


def use_device(device: int | None = None) -> int:
    """Make ``device`` (default 0) current on this thread (its primary context, which the runtime calls
    and the driver-API module loads and launches share); its index.

    :class:`BackendUnavailableError` where there is no usable driver or device."""
    b = bindings()
    try:
        result = b.runtime.cudaGetDeviceCount()
    except Exception as exc:  # noqa: BLE001 - cuda-python could not load a CUDA library (no driver)
        raise BackendUnavailableError(f"no usable NVIDIA driver here ({type(exc).__name__}: {exc})") from None
    if int(getattr(result[0], "value", result[0])) != 0 or not result[1]:
        why = error_name(result[0]) if int(getattr(result[0], "value", result[0])) else "no device"
        raise BackendUnavailableError(f"no usable NVIDIA GPU here (cudaGetDeviceCount: {why})")
    index = 0 if device is None else int(device)
    if not 0 <= index < result[1]:
        raise BackendUnavailableError(f"CUDA device {index} does not exist ({result[1]} device(s) here)")
    check(b.runtime.cudaSetDevice(index), f"cudaSetDevice({index})")
    check(b.runtime.cudaFree(0), "cudaFree(0)")  # creates the primary context where cudaSetDevice is lazy
    check(b.driver.cuInit(0), "cuInit")
    return index


def device_capability(device: int) -> tuple[int, int]:
    """Compute capability ``(major, minor)`` of ``device``."""
    props = check(bindings().runtime.cudaGetDeviceProperties(device), f"cudaGetDeviceProperties({device})")
    return int(props.major), int(props.minor)


class Module:
    """A loaded CUDA module (``cuModuleLoadData``) and its kernels, looked up once by name."""

    def __init__(self, image: bytes):
        self._image = np.frombuffer(image, dtype=np.uint8).copy()
        self.handle = check(bindings().driver.cuModuleLoadData(self._image.ctypes.data), "cuModuleLoadData")
        self._functions: dict[str, object] = {}

    def function(self, name: str):
        """The ``CUfunction`` of ``extern "C"`` kernel ``name``."""
        if name not in self._functions:
            self._functions[name] = check(bindings().driver.cuModuleGetFunction(self.handle, name.encode()),
                                          f"cuModuleGetFunction({name})")
        return self._functions[name]


def load_module(source: str, name: str, device: int, options=()) -> Module:
    """``source`` compiled for ``device``'s architecture and loaded in its context, cached per device (and
    the compiled image per architecture)."""
    digest = hashlib.sha256("\0".join((source, *options)).encode()).hexdigest()
    if (device, digest) not in _MODULES:
        arch_option, cubin = choose_arch(*device_capability(device), supported_archs())
        if (arch_option, digest) not in _COMPILED:
            log.debug("compiling %s with NVRTC (%s)", name, arch_option)
            _COMPILED[arch_option, digest] = compile_source(source, name, arch_option, cubin, options)
        _MODULES[device, digest] = Module(_COMPILED[arch_option, digest])
    return _MODULES[device, digest]


class DeviceBuffer:
    """Device memory (``cudaMalloc``) that grows on :meth:`ensure`; ``ptr`` is its address."""

    def __init__(self, nbytes: int = 0):
        self.nbytes, self.ptr = 0, 0
        self.ensure(nbytes)

    def ensure(self, nbytes: int) -> int:
        """At least ``nbytes`` (contents are lost when it grows); returns ``ptr``."""
        if nbytes > self.nbytes or not self.ptr:
            self.free()
            self.ptr = int(check(bindings().runtime.cudaMalloc(max(int(nbytes), 1)), f"cudaMalloc({nbytes})"))
            self.nbytes = max(int(nbytes), 1)
        return self.ptr

    def free(self) -> None:
        if self.ptr:
            ptr, self.ptr, self.nbytes = self.ptr, 0, 0
            check(bindings().runtime.cudaFree(ptr), "cudaFree")


class PinnedBuffer:
    """Page-locked host memory (``cudaMallocHost``) with a numpy byte view, growing on :meth:`ensure`."""

    def __init__(self, nbytes: int = 0):
        self.nbytes, self.ptr, self.bytes = 0, 0, None
        self.ensure(nbytes)

    def ensure(self, nbytes: int) -> None:
        if nbytes > self.nbytes or not self.ptr:
            self.free()
            size = max(int(nbytes), 1)
            self.ptr = int(check(bindings().runtime.cudaMallocHost(size), f"cudaMallocHost({size})"))
            self.bytes = np.ctypeslib.as_array((ctypes.c_uint8 * size).from_address(self.ptr))
            self.nbytes = size

    def view(self, offset: int, dtype, shape) -> np.ndarray:
        """``shape`` elements of ``dtype`` starting ``offset`` bytes in (no copy)."""
        dtype = np.dtype(dtype)
        count = int(np.prod(shape, dtype=np.int64))
        return self.bytes[offset:offset + count * dtype.itemsize].view(dtype).reshape(shape)

    def free(self) -> None:
        if self.ptr:
            ptr, self.ptr, self.nbytes, self.bytes = self.ptr, 0, 0, None
            check(bindings().runtime.cudaFreeHost(ptr), "cudaFreeHost")


class Stream:
    """A CUDA stream (``cudaStreamCreate``) with the async copies the twins use."""

    def __init__(self):
        self.handle = check(bindings().runtime.cudaStreamCreate(), "cudaStreamCreate")

    def _copy(self, dst: int, src: int, nbytes: int, kind: str) -> None:
        rt = bindings().runtime
        check(rt.cudaMemcpyAsync(dst, src, int(nbytes), getattr(rt.cudaMemcpyKind, kind), self.handle),
              f"cudaMemcpyAsync({kind})")

    def to_device(self, dst: int, src: int, nbytes: int) -> None:
        self._copy(dst, src, nbytes, "cudaMemcpyHostToDevice")

    def to_host(self, dst: int, src: int, nbytes: int) -> None:
        self._copy(dst, src, nbytes, "cudaMemcpyDeviceToHost")

    def memset(self, ptr: int, value: int, nbytes: int) -> None:
        check(bindings().runtime.cudaMemsetAsync(ptr, int(value), int(nbytes), self.handle), "cudaMemsetAsync")

    def synchronize(self) -> None:
        check(bindings().runtime.cudaStreamSynchronize(self.handle), "cudaStreamSynchronize")

    def destroy(self) -> None:
        if self.handle is not None:
            handle, self.handle = self.handle, None
            check(bindings().runtime.cudaStreamDestroy(handle), "cudaStreamDestroy")


class StreamWork:
    """A stream and the buffers its kernels work on, freed together; a context manager. Users set
    ``self.stream`` and list their buffers in :meth:`buffers`."""

    stream: Stream

    def buffers(self) -> list:
        raise NotImplementedError

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Free the buffers and the stream, once the stream's pending work is done."""
        if self.stream.handle is not None:
            self.stream.synchronize()
        for buffer in self.buffers():
            buffer.free()
        self.stream.destroy()


def pointer(address: int) -> np.uint64:
    """A device or host address as a kernel argument (``T*``)."""
    return np.uint64(int(address))


def pack_args(args) -> tuple[list[np.ndarray], np.ndarray]:
    """Kernel arguments -> (the arrays holding each value, the array of their addresses: ``void**``).

    Each argument must be a numpy scalar whose dtype is the kernel parameter's type (``np.int32`` for
    ``int``, ``np.float32`` for ``float``, ``np.float64`` for ``double``, :func:`pointer` for ``T*``):
    a Python int or float would leave the width ambiguous, so it is refused."""
    holders = []
    for position, value in enumerate(args):
        if not isinstance(value, np.generic):
            raise TypeError(f"kernel argument {position} is {type(value).__name__}; pass a numpy scalar "
                            "(np.int32, np.uint32, np.float32, np.float64, or pointer(address))")
        holders.append(np.array(value))
    params = np.array([held.ctypes.data for held in holders], dtype=np.intp)
    return holders, params


def launch(function, grid, block, args, stream: Stream, shared_bytes: int = 0) -> None:
    """``cuLaunchKernel`` of ``function`` on ``stream``; ``grid``/``block`` are 1 to 3 sizes."""
    gx, gy, gz = (tuple(int(g) for g in grid) + (1, 1))[:3]
    bx, by, bz = (tuple(int(b) for b in block) + (1, 1))[:3]
    holders, params = pack_args(args)
    check(bindings().driver.cuLaunchKernel(function, gx, gy, gz, bx, by, bz, int(shared_bytes), stream.handle,
                                           params.ctypes.data, 0), "cuLaunchKernel")
    del holders  # the values were copied by cuLaunchKernel; keep them alive until here


def ceil_div(n: int, d: int) -> int:
    """``ceil(n / d)`` for non-negative ints."""
    return -(-int(n) // int(d))


def grid_1d(n: int, block: int) -> tuple[int]:
    """Blocks covering ``n`` threads of ``block`` each (at least one)."""
    return (max(1, ceil_div(n, block)),)


def grid_2d(width: int, height: int, block: tuple[int, int]) -> tuple[int, int]:
    """Blocks covering a ``width x height`` image with ``block = (bx, by)`` threads each."""
    return max(1, ceil_div(width, block[0])), max(1, ceil_div(height, block[1]))
