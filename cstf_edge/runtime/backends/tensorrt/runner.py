"""TensorRT runner: a serialized engine plus its sidecar ``<engine>.json``, run through the tensor-name API.

Flow (TensorRT Python API, 10.x and 11.x alike; the pattern of ``samples/python/common_runtime.py``):
``trt.Runtime(logger).deserialize_cuda_engine(bytes)``; the I/O tensors from ``engine.num_io_tensors`` /
``get_tensor_name(i)`` / ``get_tensor_mode`` / ``get_tensor_dtype`` / ``get_tensor_shape``; per execution
context a stream of its own, pinned host and device buffers allocated once per shape (grown only when the
batch grows), ``context.set_input_shape`` for a dynamic batch, ``set_tensor_address``, then async H2D,
``execute_async_v3(stream_handle)``, async D2H, one stream synchronisation. Nothing here differs between
TensorRT 10 and 11 (the version branches live in :mod:`cstf_edge.export.tensorrt`).

``contexts=N`` keeps a pool of N execution contexts so N threads can infer at once; ``cuda_graph=True``
captures ``execute_async_v3`` into a CUDA graph for engines with static shapes (one warm-up enqueue first,
which flushes TensorRT's deferred shape work out of the capture).
"""
from __future__ import annotations

import hashlib
import logging
import queue

import numpy as np

from cstf_edge.runtime.artifact import ArtifactInfo, read_sidecar
from cstf_edge.runtime.backends.base import Runner
from cstf_edge.runtime.backends.tensorrt import cuda
from cstf_edge.runtime.errors import ArtifactError, BackendUnavailableError

log = logging.getLogger(__name__)

REBUILD_HINT = ("rebuild the engine on this machine: python -m cstf_edge.export --weights W --target tensorrt "
                "--precision P (engines are tied to the TensorRT version and GPU that built them)")
ENVIRONMENT_KEYS = ("version", "gpu_name", "compute_capability")


def import_tensorrt():
    """The ``tensorrt`` module, or :class:`BackendUnavailableError` with the install hint."""
    try:
        import tensorrt
    except ImportError:
        raise BackendUnavailableError(f"TensorRT is not installed: {cuda.TRT_INSTALL_HINT}") from None
    return tensorrt


def device_index(device: str) -> int:
    """``cuda`` / ``cuda:N`` -> N; anything else cannot run a TensorRT engine."""
    if device == "cuda" or device.startswith("cuda:"):
        try:
            return int(device.split(":", 1)[1]) if ":" in device else 0
        except ValueError:
            pass
    raise BackendUnavailableError(f"a TensorRT engine runs on an NVIDIA GPU: use device 'cuda' or 'cuda:N', "
                                  f"not {device!r} (or run the .onnx with ONNX Runtime on the CPU)")


def current_environment(device: str) -> dict:
    """The TensorRT version, GPU name and compute capability here, in the sidecar's terms."""
    trt = import_tensorrt()
    env = cuda.device_environment(device_index(device))
    return {"version": trt.__version__, **env}


def environment_mismatch(recorded: dict, current: dict) -> list[str]:
    """Human-readable differences between the build environment in a sidecar and this one."""
    return [f"{key}: built with {recorded.get(key)!r}, here {current.get(key)!r}" for key in ENVIRONMENT_KEYS
            if str(recorded.get(key)) != str(current.get(key))]


def check_environment(info: ArtifactInfo, current: dict, path) -> None:
    """Raise :class:`ArtifactError` when the engine was built for another TensorRT or GPU."""
    recorded = info.extra.get("tensorrt")
    if not recorded:
        raise ArtifactError(f"{path}: its sidecar has no 'tensorrt' build record; {REBUILD_HINT}")
    problems = environment_mismatch(recorded, current)
    if problems:
        raise ArtifactError(f"{path}: engine does not match this machine ({'; '.join(problems)}); {REBUILD_HINT}")


class _Tensor:
    """One I/O tensor of the engine."""

    def __init__(self, engine, name: str, trt):
        self.name = name
        self.is_input = engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT
        try:
            self.dtype = np.dtype(trt.nptype(engine.get_tensor_dtype(name)))
        except TypeError:  # BF16, FP8, INT4 I/O have no numpy type
            raise ArtifactError(f"engine tensor {name!r} is {engine.get_tensor_dtype(name)}, which numpy cannot "
                                "hold; export with FP32/FP16 inputs and outputs (keep_io_types)") from None
        self.shape = tuple(engine.get_tensor_shape(name))

    @property
    def dynamic(self) -> bool:
        return any(d < 0 for d in self.shape)


class _Slot:
    """One execution context with its own stream, buffers and (optionally) CUDA graph."""

    def __init__(self, engine, tensors: list[_Tensor], profile: int, use_graph: bool):
        self.tensors = tensors
        self.context = engine.create_execution_context()
        if self.context is None:
            raise ArtifactError("TensorRT could not create an execution context (out of GPU memory?)")
        self.stream = cuda.Stream()
        self.host: dict[str, cuda.PinnedBuffer] = {}
        self.device: dict[str, cuda.DeviceBuffer] = {}
        self.shapes: dict[str, tuple] = {}
        self.use_graph = use_graph
        self.graph: cuda.CudaGraph | None = None
        if engine.num_optimization_profiles > 1:
            self.context.set_optimization_profile_async(profile, int(self.stream.handle))
            self.stream.synchronize()

    def _set_shapes(self, feed: dict[str, np.ndarray]) -> None:
        """Set dynamic input shapes when they change; read the output shapes that follow."""
        if all(self.shapes.get(t.name) == feed[t.name].shape for t in self.tensors if t.is_input):
            return
        for t in self.tensors:
            if t.is_input and (len(t.shape) != feed[t.name].ndim or any(
                    d >= 0 and d != f for d, f in zip(t.shape, feed[t.name].shape))):
                raise ArtifactError(f"input {t.name!r} has shape {feed[t.name].shape}, the engine takes "
                                    f"{t.shape} (-1: any); check --imgsz and --batch against the build")
        self.shapes = {}  # unknown until every input shape is set
        for t in self.tensors:
            if t.is_input and t.dynamic and not self.context.set_input_shape(t.name, feed[t.name].shape):
                raise ArtifactError(f"input {t.name!r} of shape {feed[t.name].shape} is outside the engine's "
                                    "optimization profile; rebuild with a larger --dynamic-batch range")
        for t in self.tensors:
            self.shapes[t.name] = feed[t.name].shape if t.is_input else tuple(self.context.get_tensor_shape(t.name))
        self._drop_graph()

    def _ensure_buffers(self) -> None:
        """(Re)allocate a tensor's buffers only when it needs more bytes than it has."""
        for t in self.tensors:
            nbytes = int(np.prod(self.shapes[t.name], dtype=np.int64)) * t.dtype.itemsize
            if t.name in self.device and self.device[t.name].nbytes >= nbytes:
                continue
            self._free(t.name)
            self.device[t.name] = cuda.DeviceBuffer(nbytes)
            self.host[t.name] = cuda.PinnedBuffer(nbytes)
            self.context.set_tensor_address(t.name, self.device[t.name].ptr)
            self._drop_graph()

    def _enqueue(self) -> None:
        if not self.context.execute_async_v3(int(self.stream.handle)):
            raise ArtifactError("TensorRT execution failed (execute_async_v3 returned False; see the log)")

    def _launch(self) -> None:
        if not self.use_graph:
            self._enqueue()
            return
        if self.graph is None:
            self._enqueue()  # warm-up outside the capture: flushes deferred shape/allocation work
            self.stream.synchronize()
            try:
                self.graph = cuda.CudaGraph(self.stream, self._enqueue)
            except (cuda.CudaError, ArtifactError) as exc:
                log.warning("CUDA graph capture failed (%s); running without graphs", exc)
                self.use_graph = False
                self._enqueue()
                return
        self.graph.launch(self.stream)

    def run(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Copy in, execute, copy out, synchronise once; returns float32 copies of the outputs."""
        self._set_shapes(feed)
        self._ensure_buffers()
        for t in (t for t in self.tensors if t.is_input):
            host = self.host[t.name].view(t.dtype, self.shapes[t.name])
            np.copyto(host, feed[t.name], casting="same_kind")
            cuda.copy_to_device(self.device[t.name].ptr, host, self.stream.handle)
        self._launch()
        outputs = [t for t in self.tensors if not t.is_input]
        for t in outputs:
            cuda.copy_to_host(self.host[t.name].view(t.dtype, self.shapes[t.name]), self.device[t.name].ptr,
                              self.stream.handle)
        self.stream.synchronize()
        return {t.name: self.host[t.name].view(t.dtype, self.shapes[t.name]).astype(np.float32) for t in outputs}

    def _drop_graph(self) -> None:
        if self.graph is not None:
            self.graph.destroy()
            self.graph = None

    def _free(self, name: str) -> None:
        for pool in (self.device, self.host):
            buffer = pool.pop(name, None)
            if buffer is not None:
                buffer.free()

    def close(self) -> None:
        self._drop_graph()
        for name in list(self.device):
            self._free(name)
        self.stream.destroy()
        self.context = None


class TensorRTRunner(Runner):
    """Runs a ``.engine``/``.plan`` built by ``python -m cstf_edge.export --target tensorrt``.

    ``cuda_graph``: replay a captured CUDA graph (engines with static shapes only). ``contexts``: number of
    execution contexts in the pool, for concurrent :meth:`infer` calls from several threads.
    """

    backend = "tensorrt"

    def __init__(self, path, device: str = "cuda:0", cuda_graph: bool = False, contexts: int = 1):
        if int(contexts) < 1:
            raise ArtifactError(f"contexts must be at least 1, got {contexts}")
        self.cuda_graph = bool(cuda_graph)
        self.contexts = int(contexts)
        self._runtime = self._engine = None
        self._slots: list[_Slot] = []
        self._pool: queue.SimpleQueue | None = None
        super().__init__(path, device)

    def _read_info(self) -> ArtifactInfo:
        return read_sidecar(self.path)

    def activate(self) -> None:
        index = device_index(self.device)
        check_environment(self.info, current_environment(self.device), self.path)
        trt = import_tensorrt()
        cuda.set_device(index)
        try:
            self._load(trt)
        except BaseException:
            self.deactivate()
            raise
        log.info("%s: TensorRT %s on %s, %d context(s)%s", self.path.name, trt.__version__, self.device,
                 self.contexts, ", CUDA graphs" if self._slots[0].use_graph else "")

    def _load(self, trt) -> None:
        """Deserialize the engine, read its I/O tensors, create the pool of execution contexts."""
        self._engine = self._deserialize(trt)
        tensors = [_Tensor(self._engine, self._engine.get_tensor_name(i), trt)
                   for i in range(self._engine.num_io_tensors)]
        self._check_inputs(tensors)
        use_graph = self._graph_allowed(tensors)
        profiles = max(1, self._engine.num_optimization_profiles)
        if any(t.dynamic for t in tensors) and self.contexts > profiles:
            log.warning("%s: %d contexts share %d optimization profile(s); with dynamic shapes TensorRT 8.x "
                        "served one context per profile at a time (NVIDIA/TensorRT#1590): rebuild with "
                        "profiles=%d if contexts fail", self.path, self.contexts, profiles, self.contexts)
        for i in range(self.contexts):
            self._slots.append(_Slot(self._engine, tensors, i % profiles, use_graph))
        self._pool = queue.SimpleQueue()
        for slot in self._slots:
            self._pool.put(slot)

    def _deserialize(self, trt):
        """Read the engine, check it is the one its sidecar describes, deserialize it."""
        try:
            data = self.path.read_bytes()
        except OSError as exc:
            raise ArtifactError(f"{self.path}: cannot read ({exc.strerror})") from None
        expected = self.info.extra["tensorrt"].get("engine_sha256")
        if expected and hashlib.sha256(data).hexdigest() != expected:
            raise ArtifactError(f"{self.path}: the engine is not the one its sidecar describes (sha256 differs); "
                                f"{REBUILD_HINT}")
        self._runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        engine = self._runtime.deserialize_cuda_engine(data)
        if engine is None:
            raise ArtifactError(f"{self.path}: TensorRT could not deserialize the engine (see its log); {REBUILD_HINT}")
        return engine

    def _check_inputs(self, tensors: list[_Tensor]) -> None:
        names = {t.name for t in tensors if t.is_input}
        if names != set(self.info.input_names):
            raise ArtifactError(f"{self.path}: engine inputs {sorted(names)} differ from its sidecar's "
                                f"{sorted(self.info.input_names)}; {REBUILD_HINT}")

    def _graph_allowed(self, tensors: list[_Tensor]) -> bool:
        """CUDA graphs for static shapes: fixed dims, or a dynamic dim whose profiles pin it (min == max)."""
        if not self.cuda_graph:
            return False
        for t in (t for t in tensors if t.is_input and t.dynamic):
            for profile in range(max(1, self._engine.num_optimization_profiles)):
                low, _, high = self._engine.get_tensor_profile_shape(t.name, profile)
                if tuple(low) != tuple(high):
                    log.warning("%s: cuda_graph ignored: CUDA graphs need static shapes and this engine takes a "
                                "batch range (build it with a fixed batch to use them)", self.path)
                    return False
        return True

    def deactivate(self) -> None:
        for slot in self._slots:
            try:
                slot.close()
            except cuda.CudaError as exc:  # freeing after a device fault must not hide the first error
                log.warning("%s: releasing CUDA resources failed: %s", self.path, exc)
        self._slots, self._pool = [], None
        self._engine = self._runtime = None

    def _infer(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        batch = {len(v) for v in feed.values()}
        if len(batch) != 1:
            raise ArtifactError(f"{self.path}: inputs have different batch sizes {sorted(batch)}")
        self.check_batch(batch.pop())
        cuda.set_device(device_index(self.device))  # the device is per host thread
        slot = self._pool.get()
        try:
            return slot.run({k: np.ascontiguousarray(v) for k, v in feed.items()})
        finally:
            self._pool.put(slot)
