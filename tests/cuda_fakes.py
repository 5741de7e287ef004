"""Test doubles for the CUDA twins, shared by ``test_cuda_kernels.py`` and ``test_cuda_pipeline.py``: the
kernels' source compiled by the host C++ compiler (``host_kernels``, every kernel but ``bitonic_local``, run
thread by thread), and a fake cuda-python (``fake_cuda``) whose "device" memory is host memory and whose
``cuLaunchKernel`` checks each packed argument against the kernel's C signature, then runs the host-compiled
kernel. Import the fixtures into a test module: ``from cuda_fakes import fake_cuda, host_kernels``.
"""
from __future__ import annotations

import ctypes
import re
import shutil
import subprocess
from types import SimpleNamespace

import numpy as np
import pytest

from cstf_edge.runtime.cuda import _driver, kernels
from cstf_edge.runtime.cuda import postprocess as cpost

HOST_PRELUDE = r"""
struct cstf_dim3 { unsigned int x, y, z; };
static cstf_dim3 blockIdx, threadIdx, blockDim;
static inline unsigned int atomicAdd(unsigned int* p, unsigned int v) { unsigned int old = *p; *p += v; return old; }
extern "C" void host_bitonic_step(u64* keys, u32 n, u32 j, u32 k) {
    for (u32 t = 0; t < n / 2; ++t) bitonic_exchange(keys, t, j, k, 0);
}
extern "C" void host_polygons(const float* boxes, int count, double* polys) {
    for (int r = 0; r < count; ++r) rbox_polygon(boxes + 5 * r, polys + 8 * r);
}
extern "C" void host_iou_pairs(const double* a, const double* b, int count, double* out) {
    for (int r = 0; r < count; ++r) out[r] = polygon_iou(a + 8 * r, b + 8 * r);
}
"""
C_TYPES = {"int": (ctypes.c_int32, np.int32), "u32": (ctypes.c_uint32, np.uint32),
           "float": (ctypes.c_float, np.float32), "double": (ctypes.c_double, np.float64)}
SIGNATURES = {name: [tuple(" ".join(p.replace("__restrict__", "").split()).rsplit(" ", 1)) for p in params.split(",")]
              for name, params in re.findall(r"CSTF_GLOBAL void (\w+)\(([^)]*)\)", kernels.POSTPROCESS_SOURCE +
                                             kernels.PREPROCESS_SOURCE)}


def launcher(name, params):
    """C source of ``launch_<name>(gx, gy, bx, by, args...)``: the kernel run thread by thread."""
    return f"""extern "C" void launch_{name}(unsigned gx, unsigned gy, unsigned bx, unsigned by,
        {", ".join(f"{ctype} {pname}" for ctype, pname in params)}) {{
    blockDim.x = bx; blockDim.y = by; blockDim.z = 1; blockIdx.z = threadIdx.z = 0;
    for (blockIdx.y = 0; blockIdx.y < gy; ++blockIdx.y) for (blockIdx.x = 0; blockIdx.x < gx; ++blockIdx.x)
        for (threadIdx.y = 0; threadIdx.y < by; ++threadIdx.y)
            for (threadIdx.x = 0; threadIdx.x < bx; ++threadIdx.x) {name}({", ".join(p for _, p in params)});
}}
"""


@pytest.fixture(scope="module")
def host_kernels(tmp_path_factory):
    """Every kernel but bitonic_local, with its helpers, built by the host C++ compiler."""
    compiler = shutil.which("c++") or shutil.which("g++") or shutil.which("clang++")
    if compiler is None:
        pytest.skip("needs a host C++ compiler (c++, g++ or clang++) to check the kernels' code")
    folder = tmp_path_factory.mktemp("host_kernels")
    source, library = folder / "kernels.cpp", folder / "kernels.so"
    launchers = "".join(launcher(name, params) for name, params in SIGNATURES.items() if name != "bitonic_local")
    source.write_text(kernels.HOST_HELPERS + HOST_PRELUDE + kernels.HOST_KERNELS + launchers)
    subprocess.run([compiler, "-O2", "-shared", "-fPIC", "-ffp-contract=off", str(source), "-o", str(library)],
                   check=True, capture_output=True)
    return ctypes.CDLL(str(library))


def run_kernel(lib, name, grid, block, *values):
    """Launch host-compiled kernel ``name`` (pointers as ints or arrays, the rest as Python numbers)."""
    function = getattr(lib, f"launch_{name}")
    function.argtypes = [ctypes.c_uint] * 4 + [ctypes.c_void_p if "*" in ctype else C_TYPES[ctype][0]
                                               for ctype, _ in SIGNATURES[name]]
    args = [v.ctypes.data if isinstance(v, np.ndarray) else v for v in values]  # `values` keeps arrays alive
    function(*(tuple(grid) + (1,))[:2], *(tuple(block) + (1,))[:2], *args)



class FakeCuda:
    """cuda-python stand-in: "device" memory is host memory; ``cuLaunchKernel`` checks the packed arguments
    against the kernel's C signature and runs the host-compiled kernel."""

    def __init__(self, lib):
        self.lib, self.memory, self.packed, self.launches, self._pack = lib, {}, [], [], _driver.pack_args
        ok = (0,)
        self.runtime = SimpleNamespace(
            cudaGetDeviceCount=lambda: (0, 1), cudaSetDevice=lambda dev: ok,
            cudaGetDeviceProperties=lambda dev: (0, SimpleNamespace(major=9, minor=0)),
            cudaMalloc=self._alloc, cudaMallocHost=self._alloc, cudaFree=self._free, cudaFreeHost=self._free,
            cudaMemcpyKind=SimpleNamespace(cudaMemcpyHostToDevice=1, cudaMemcpyDeviceToHost=2),
            cudaMemcpyAsync=lambda dst, src, n, kind, stream: (ctypes.memmove(dst, src, n), ok)[1],
            cudaMemsetAsync=lambda ptr, value, n, stream: (ctypes.memset(ptr, value, n), ok)[1],
            cudaStreamCreate=lambda: (0, "stream"), cudaStreamSynchronize=lambda s: ok, cudaStreamDestroy=lambda s: ok)
        self.driver = SimpleNamespace(cuInit=lambda flags: ok, cuModuleLoadData=lambda image: (0, "module"),
                                      cuModuleGetFunction=lambda module, name: (0, name.decode()),
                                      cuLaunchKernel=self._launch)
        self.nvrtc = SimpleNamespace(nvrtcGetSupportedArchs=lambda: (0, [80, 90]))

    def _alloc(self, nbytes):
        buffer = (ctypes.c_uint8 * nbytes)()
        self.memory[ctypes.addressof(buffer)] = buffer
        return 0, ctypes.addressof(buffer)

    def _free(self, ptr):
        if ptr:
            del self.memory[int(ptr)]
        return (0,)

    def pack_args(self, args):
        self.packed.append([np.asarray(a).dtype for a in args])
        return self._pack(args)

    def _launch(self, name, gx, gy, gz, bx, by, bz, shared, stream, params, extra):
        signature = SIGNATURES[name]
        wanted = [np.dtype(np.uint64 if "*" in ctype else C_TYPES[ctype][1]) for ctype, _ in signature]
        assert self.packed[-1] == wanted, f"{name}: packed {self.packed[-1]}, signature {signature}"
        assert gz == bz == 1 and bx * by <= 1024 and shared == (16 * bx if name == "bitonic_local" else 0)
        values = [(ctypes.c_uint64 if "*" in ctype else C_TYPES[ctype][0])
                  .from_address(ctypes.c_uint64.from_address(params + 8 * q).value).value
                  for q, (ctype, _) in enumerate(signature)]
        self.launches.append(name)
        if name != "bitonic_local":
            run_kernel(self.lib, name, (gx, gy), (bx, by), *values)
            return (0,)
        keys, k, k_last = values  # shared memory and barriers: the same steps, on the whole array
        for k_step, j in cpost.expand_schedule([("local", k, k_last, 2 * bx)]):
            self.lib.host_bitonic_step(ctypes.c_void_p(keys), gx * 2 * bx, j, k_step)
        return (0,)


@pytest.fixture
def fake_cuda(host_kernels, monkeypatch):
    """A :class:`FakeCuda` installed as cuda-python for ``cstf_edge.runtime.cuda`` (module caches emptied)."""
    fake = FakeCuda(host_kernels)
    for name, value in [("_BINDINGS", fake), ("_MODULES", {}), ("_COMPILED", {}), ("pack_args", fake.pack_args),
                        ("compile_source", lambda source, *args, **kw: source.encode())]:
        monkeypatch.setattr(_driver, name, value)
    return fake

