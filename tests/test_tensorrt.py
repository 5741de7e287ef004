"""TensorRT build and runtime: the version branching, shapes, sidecar, calibration and CUDA error plumbing run
everywhere; building and running a real engine is marked ``trt`` + ``gpu`` and skips with the reason here."""
from __future__ import annotations

import ctypes
import enum
import hashlib
import importlib.util
import json
import subprocess
import sys
import threading
import warnings

import numpy as np
import pytest

from cstf_edge.export import tensorrt as trt_export
from cstf_edge.export.tensorrt import (BuildPlan, CalibrationBatches, CalibrationCache, CalibrationError,
                                       TensorRTBuildError, calibration_cache_key, engine_sidecar_info,
                                       inspect_onnx, make_entropy_calibrator, parser_error_message, plan_build,
                                       profile_shapes, tensorrt_version, write_sidecar)
from cstf_edge.runtime import ArtifactInfo, PreprocessSpec, open_runner
from cstf_edge.runtime.artifact import read_sidecar, sidecar_path
from cstf_edge.runtime.backends.tensorrt import cuda
from cstf_edge.runtime.backends.tensorrt import runner as trt_runner
from cstf_edge.runtime.errors import ArtifactError, BackendUnavailableError

HAVE_TRT = importlib.util.find_spec("tensorrt") is not None
ENV = {"version": "10.3.0.30", "gpu_name": "Orin", "compute_capability": "8.7", "cuda_version": "12.6"}


def test_tensorrt_version_parsing():
    assert tensorrt_version("10.3.0.30") == (10, 3, 0, 30)
    assert tensorrt_version("11.0") == (11, 0, 0)
    assert tensorrt_version("10.14.1.48+cuda13.0") == (10, 14, 1, 48)
    with pytest.raises(TensorRTBuildError, match="cannot read"):
        tensorrt_version("dev")


V8, V10, V10_8, V11, V11_4 = (8, 6, 1), (10, 3, 0), (10, 8, 0), (11, 0, 0), (11, 4, 1)
PLANS = [  # (version, precision, kwargs) -> (strongly_typed, network_flags, builder_flags, calibrate)
    (V10, "fp32", {}, (False, (), (), False)),
    (V10, "fp16", {}, (False, (), ("FP16",), False)),
    (V10, "int8", {"calibration": True}, (False, (), ("FP16", "INT8"), True)),
    (V10, "int8", {"onnx_qdq": True}, (True, ("STRONGLY_TYPED",), (), False)),
    (V10, "fp16", {"onnx_fp16": True}, (True, ("STRONGLY_TYPED",), (), False)),
    (V10, "int8", {"onnx_qdq": True, "strongly_typed": False}, (False, (), ("FP16", "INT8"), False)),
    (V10, "fp16", {"dla_core": 0}, (False, (), ("FP16", "GPU_FALLBACK"), False)),
    (V8, "int8", {"onnx_qdq": True}, (False, ("EXPLICIT_BATCH",), ("FP16", "INT8"), False)),
    (V11, "fp32", {}, (True, (), (), False)),
    (V11, "int8", {"onnx_qdq": True}, (True, (), (), False)),
    (V11, "fp16", {"onnx_fp16": True}, (True, (), (), False)),
    (V11_4, "fp16", {"onnx_fp16": True, "dla_core": 1}, (True, (), ("GPU_FALLBACK",), False)),
]


@pytest.mark.parametrize("version, precision, kwargs, expected", PLANS)
def test_build_plan_table(version, precision, kwargs, expected):
    plan = plan_build(version, precision, **kwargs)
    assert (plan.strongly_typed, plan.network_flags, plan.builder_flags, plan.calibrate) == expected
    assert plan.dla_core == kwargs.get("dla_core")


REFUSED = [  # (version, precision, kwargs, words the message must contain)
    (V11, "int8", {}, ["removed in 11.0", "Q/DQ"]),
    (V11, "fp16", {}, ["BuilderFlag.FP16", "FP16 ONNX"]),
    (V11, "fp32", {"strongly_typed": False}, ["strongly typed networks only"]),
    (V11, "fp16", {"onnx_fp16": True, "dla_core": 0}, ["no DLA"]),
    (V10, "int8", {}, ["calibration batches", "Q/DQ"]),
    (V10, "int8", {"strongly_typed": True, "calibration": True}, ["Q/DQ", "strongly_typed=False"]),
    (V10, "fp16", {"strongly_typed": True}, ["FP16 ONNX", "strongly_typed=False"]),
    (V10, "fp32", {"onnx_qdq": True}, ["Q/DQ", "precision int8"]),
    (V10, "fp32", {"onnx_fp16": True}, ["FP16 tensors"]),
    (V10, "int8", {"onnx_qdq": True, "dla_core": 0}, ["DLA", "strongly_typed=False"]),
    (V10_8, "fp16", {"dla_core": 0}, ["10.7"]),
    (V10, "fp32", {"dla_core": 0}, ["FP16 or INT8"]),
    (V8, "fp16", {"strongly_typed": True}, ["TensorRT 10"]),
    ((8, 5, 3), "fp32", {}, ["too old"]),
    (V10, "bf16", {}, ["precision must be one of"]),
]


@pytest.mark.parametrize("version, precision, kwargs, words", REFUSED)
def test_impossible_builds_are_refused_with_what_works(version, precision, kwargs, words):
    with pytest.raises(TensorRTBuildError) as info:
        plan_build(version, precision, **kwargs)
    for word in words:
        assert word in str(info.value)


@pytest.mark.parametrize("version, precision, kwargs", [
    (V10, "int8", {"onnx_qdq": True, "strongly_typed": False}), (V10, "int8", {"onnx_qdq": True}),
    (V11, "int8", {"onnx_qdq": True}), (V10, "fp16", {})])
def test_calibration_batches_a_build_does_not_need_are_noted_not_refused(version, precision, kwargs):
    plan = plan_build(version, precision, calibration=True, **kwargs)
    assert not plan.calibrate and "not used" in plan.notes[0]
    assert plan_build(version, precision, **kwargs).notes == ()


def test_profile_shapes_from_a_batch_range():
    assert profile_shapes((-1, 3, 64, 64), 1, None, 8) == ((1, 3, 64, 64), (8, 3, 64, 64), (8, 3, 64, 64))
    assert profile_shapes((-1, 3, 64, 64), 2, 4, 8)[1] == (4, 3, 64, 64)
    assert profile_shapes((-1, 3, 32, 32)) == ((1, 3, 32, 32),) * 3
    assert profile_shapes((2, 3, 64, 64)) is None
    assert profile_shapes((2, 3, 64, 64), 2, 2, 2) is None


@pytest.mark.parametrize("shape, batches, words", [
    ((1, 3, 64, 64), (1, None, 8), "fixed batch of 1"),
    ((-1, 3, -1, 64), (1, None, 4), "only the batch dimension"),
    ((-1, 3, 64, 64), (4, 2, 8), "1 <= min <= opt <= max"),
])
def test_profile_shapes_refuse_bad_ranges(shape, batches, words):
    with pytest.raises(TensorRTBuildError, match=words):
        profile_shapes(shape, *batches)


def _info(**changes) -> ArtifactInfo:
    return ArtifactInfo(class_names=["ship", "plane"], preprocess=PreprocessSpec(64, 64), batch=None, **changes)


def _record(**changes) -> dict:
    shapes = {"images": {"min": [1, 3, 64, 64], "opt": [4, 3, 64, 64], "max": [4, 3, 64, 64], "dynamic": True}}
    return {**ENV, "precision": "fp16", "strongly_typed": False, "shapes": shapes, "onnx_sha256": "ab" * 32,
            "engine_sha256": "", "dla_core": None, "workspace_gib": 2.0, "build_seconds": 1.5, **changes}


def test_sidecar_round_trip(tmp_path):
    engine = tmp_path / "model.engine"
    record = _record()
    info = engine_sidecar_info(_info(), record["shapes"], record)
    assert write_sidecar(engine, info) == sidecar_path(engine) == tmp_path / "model.engine.json"
    back = read_sidecar(engine)
    assert back == info
    assert (back.precision, back.batch, back.max_batch) == ("fp16", None, 4)
    assert back.extra["tensorrt"]["gpu_name"] == "Orin" and back.extra["tensorrt"]["shapes"]["images"]["opt"][0] == 4


def test_sidecar_of_a_fixed_batch_engine():
    shapes = {"images": {"min": [2, 3, 64, 64], "opt": [2, 3, 64, 64], "max": [2, 3, 64, 64], "dynamic": False}}
    info = engine_sidecar_info(_info(), shapes, _record(shapes=shapes))
    assert (info.batch, info.max_batch) == (2, None)


def _fake_engine(tmp_path, **record_changes):
    engine = tmp_path / "x.engine"
    engine.write_bytes(b"not really an engine")
    record = _record(**record_changes)
    write_sidecar(engine, engine_sidecar_info(_info(), record["shapes"], record))
    return engine


@pytest.mark.parametrize("current, words", [
    ({**ENV, "version": "10.4.0.26"}, ["version: built with '10.3.0.30', here '10.4.0.26'"]),
    ({**ENV, "gpu_name": "NVIDIA H100", "compute_capability": "9.0"}, ["gpu_name", "compute_capability"]),
])
def test_runner_refuses_an_engine_from_another_tensorrt_or_gpu(tmp_path, monkeypatch, current, words):
    monkeypatch.setattr(trt_runner, "current_environment", lambda device: current)
    runner = open_runner(_fake_engine(tmp_path), device="cuda:0")
    with pytest.raises(ArtifactError) as info:
        runner.activate()
    message = str(info.value)
    assert "python -m cstf_edge.export --weights W --target tensorrt" in message
    for word in words:
        assert word in message


def test_environment_check_accepts_the_same_machine():
    info = engine_sidecar_info(_info(), _record()["shapes"], _record())
    trt_runner.check_environment(info, dict(ENV), "x.engine")  # no error
    assert trt_runner.environment_mismatch(ENV, {**ENV, "cuda_version": "12.8"}) == []  # CUDA minor: not fatal


def test_open_runner_without_sidecar_names_it(tmp_path):
    engine = tmp_path / "x.engine"
    engine.write_bytes(b"engine")
    with pytest.raises(ArtifactError, match=r"x\.engine\.json is missing"):
        open_runner(engine)


@pytest.mark.skipif(HAVE_TRT, reason="TensorRT is installed here")
def test_activating_without_tensorrt_says_how_to_install(tmp_path):
    runner = open_runner(_fake_engine(tmp_path), device="cuda:0")
    assert runner.info.precision == "fp16"  # the sidecar is read without TensorRT
    with pytest.raises(BackendUnavailableError, match=r"pip install 'cstf-edge\[trt\]'"):
        with runner:
            pass


def test_engine_needs_a_cuda_device(tmp_path):
    runner = open_runner(_fake_engine(tmp_path))  # open_runner's default device is cpu
    with pytest.raises(BackendUnavailableError, match="NVIDIA GPU"):
        runner.activate()
    assert [trt_runner.device_index(d) for d in ("cuda", "cuda:1")] == [0, 1]


def _batches(*sizes, chw=(3, 8, 8), dtype=np.float32):
    return [np.full((n, *chw), i, dtype=dtype) for i, n in enumerate(sizes)]


def test_calibration_batches_are_fixed_size_and_counted():
    batches = CalibrationBatches(_batches(4, 4, 3), (3, 8, 8))
    assert batches.batch_size == 4
    got = [batches.next(), batches.next(), batches.next()]
    assert [b[0, 0, 0, 0] for b in got[:2]] == [0, 1] and got[2] is None
    assert (batches.count, batches.dropped) == (2, 1)
    limited = CalibrationBatches(_batches(2, 2, 2, dtype=np.float64), (3, 8, 8), limit=2)
    assert limited.next().dtype == np.float32 and limited.next() is not None and limited.next() is None
    assert CalibrationBatches([], (3, 8, 8)).batch_size == 0


@pytest.mark.parametrize("batch", [np.zeros((2, 3, 8, 8), np.uint8), np.zeros((2, 3, 16, 16), np.float32),
                                   np.zeros((3, 8, 8), np.float32)])
def test_calibration_batches_must_be_preprocessed(batch):
    with pytest.raises(CalibrationError, match="preprocess_batch"):
        CalibrationBatches([batch], (3, 8, 8)).next()


class FakeCalibratorBase:
    """Stands in for trt.IInt8EntropyCalibrator2 (whose __init__ the subclass must call)."""

    def __init__(self):
        self.base_initialised = True


def test_entropy_calibrator_feeds_batches_and_caches(tmp_path):
    staged = []

    def stage(batch):
        staged.append(batch)
        return 4096 + len(staged)

    key = calibration_cache_key(onnx_sha256="ab", trt_version=(10, 3, 0), input_shape=(3, 8, 8))
    cache = CalibrationCache(tmp_path / "calib.cache", key)
    calibrator = make_entropy_calibrator(FakeCalibratorBase, CalibrationBatches(_batches(2, 2), (3, 8, 8)), cache,
                                         stage)
    assert isinstance(calibrator, FakeCalibratorBase) and calibrator.base_initialised
    assert calibrator.get_batch_size() == 2 and calibrator.read_calibration_cache() is None
    assert calibrator.get_batch(["images"]) == [4097]
    assert calibrator.get_batch(["images", "reference"]) == [4098, 4098]  # the query is its own reference
    assert calibrator.get_batch(["images"]) is None and len(staged) == 2
    calibrator.write_calibration_cache(memoryview(b"TRT-8601-EntropyCalibration2\n"))
    assert cache.read() == b"TRT-8601-EntropyCalibration2\n"
    assert json.loads((tmp_path / "calib.cache.json").read_text())["key"] == key


def test_calibration_cache_of_another_model_is_ignored(tmp_path):
    path = tmp_path / "calib.cache"
    CalibrationCache(path, "old-key").write(b"scales")
    assert CalibrationCache(path, "old-key").read() == b"scales"
    assert CalibrationCache(path, "new-key").read() is None
    assert calibration_cache_key(onnx_sha256="a", trt_version=(10, 3, 1), input_shape=(3, 8, 8)) == \
        calibration_cache_key(onnx_sha256="a", trt_version=(10, 3, 0, 30), input_shape=(3, 8, 8))
    assert calibration_cache_key(onnx_sha256="a", trt_version=(10, 3), input_shape=(3, 8, 8)) != \
        calibration_cache_key(onnx_sha256="a", trt_version=(10, 3), input_shape=(3, 8, 8), calibration_id="v2")


def test_calibrator_error_is_kept_not_raised_into_tensorrt():
    def broken():
        yield np.zeros((1, 3, 8, 8), np.float32)
        raise RuntimeError("camera unplugged")

    calibrator = make_entropy_calibrator(FakeCalibratorBase, CalibrationBatches(broken(), (3, 8, 8)), None,
                                         lambda batch: 1)
    assert calibrator.get_batch(["images"]) == [1]
    assert calibrator.get_batch(["images"]) is None and "unplugged" in str(calibrator.error)
    assert calibrator.read_calibration_cache() is None


class FakeParserError:
    def __init__(self, desc, node=-1, name=None, op=None):
        self._desc, self._node = desc, node
        if name is not None:
            self.node_name, self.node_operator = (lambda: name), (lambda: op)

    def desc(self):
        return self._desc

    def node(self):
        return self._node


class FakeParser:
    def __init__(self, errors):
        self.errors = errors
        self.num_errors = len(errors)

    def get_error(self, i):
        return self.errors[i]


def test_parser_errors_name_their_nodes():
    message = parser_error_message(FakeParser([FakeParserError("unsupported op", 7, "/head/RotNMS", "RotNMS"),
                                               FakeParserError("bad shape", 3)]), "m.onnx")
    assert "2 error(s)" in message
    assert "node '/head/RotNMS' (RotNMS): unsupported op" in message and "node #3: bad shape" in message


class FakeCudaError(enum.IntEnum):
    cudaSuccess = 0
    cudaErrorMemoryAllocation = 2


def test_cuda_calls_are_checked_with_the_error_name():
    assert cuda.check((FakeCudaError.cudaSuccess, 1234), "cudaMalloc") == 1234
    assert cuda.check((FakeCudaError.cudaSuccess,), "cudaFree") is None
    assert cuda.check((FakeCudaError.cudaSuccess, 1, 2), "x") == (1, 2)
    with pytest.raises(cuda.CudaError, match="cudaMalloc.*cudaErrorMemoryAllocation") as info:
        cuda.check((FakeCudaError.cudaErrorMemoryAllocation, None), "cudaMalloc(64)")
    assert info.value.name == "cudaErrorMemoryAllocation"
    assert isinstance(info.value, BackendUnavailableError)


def _onnx_model(tmp_path, ops=(), cast_fp16=False):
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    nodes, last = [], "images"
    if "qdq" in ops:
        scale = helper.make_tensor("s", TensorProto.FLOAT, [], [0.1])
        zero = helper.make_tensor("z", TensorProto.INT8, [], [0])
        nodes += [helper.make_node("QuantizeLinear", ["images", "s", "z"], ["q"]),
                  helper.make_node("DequantizeLinear", ["q", "s", "z"], ["dq"])]
        last, inits = "dq", [scale, zero]
    else:
        inits = []
    if cast_fp16:
        nodes += [helper.make_node("Cast", [last], ["h"], to=TensorProto.FLOAT16),
                  helper.make_node("Cast", ["h"], ["f"], to=TensorProto.FLOAT)]
        last = "f"
    nodes.append(helper.make_node("Identity", [last], ["detections"]))
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("images", TensorProto.FLOAT,
                                                                         ["batch", 3, 8, 8])],
                              [helper.make_tensor_value_info("detections", TensorProto.FLOAT, None)], inits)
    path = tmp_path / "m.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


@pytest.mark.parametrize("ops, cast, qdq, fp16", [((), False, False, False), (("qdq",), False, True, False),
                                                  ((), True, False, True)])
def test_inspect_onnx_finds_inputs_qdq_and_fp16(tmp_path, ops, cast, qdq, fp16):
    facts = inspect_onnx(_onnx_model(tmp_path, ops, cast))
    assert facts.inputs == {"images": (-1, 3, 8, 8)}
    assert (facts.has_qdq, facts.has_fp16, len(facts.sha256)) == (qdq, fp16, 64)


def test_inspect_onnx_refuses_a_broken_file(tmp_path):
    (tmp_path / "bad.onnx").write_bytes(b"\x00garbage")
    with pytest.raises(TensorRTBuildError, match="not a readable ONNX"):
        inspect_onnx(tmp_path / "bad.onnx")


def test_modules_import_tensorrt_and_cuda_python_only_when_used():
    code = ("import sys, cstf_edge.export.tensorrt, cstf_edge.runtime.backends.tensorrt; "
            "print(sorted(m for m in ('tensorrt', 'cuda') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
    assert BuildPlan(True).builder_flags == ()


# ---- the runner's buffers, shapes, pool and CUDA graphs, against a fake TensorRT and a fake CUDA ------------


class FakeCudart:
    """Host memory stands in for device memory, so copies are real ``memmove``s; stream capture records the
    work instead of running it, and a graph launch runs it."""

    class cudaError_t(enum.IntEnum):
        cudaSuccess = 0

    class cudaMemcpyKind(enum.IntEnum):
        cudaMemcpyHostToDevice = 1
        cudaMemcpyDeviceToHost = 2

    class cudaStreamCaptureMode(enum.IntEnum):
        cudaStreamCaptureModeThreadLocal = 1

    cudaStreamNonBlocking = 1
    OK = cudaError_t.cudaSuccess

    def __init__(self):
        self.memory, self.streams, self.mallocs, self.launches = {}, {}, 0, 0

    def _alloc(self, size):
        block = np.zeros(size, np.uint8)
        self.memory[block.ctypes.data] = block
        return self.OK, block.ctypes.data

    def cudaMalloc(self, size):
        self.mallocs += 1
        return self._alloc(size)

    cudaMallocHost = _alloc

    def cudaFree(self, ptr):
        del self.memory[ptr]
        return (self.OK,)

    cudaFreeHost = cudaFree

    def cudaMemcpyAsync(self, dst, src, count, kind, stream):
        self.run_or_record(stream, lambda: ctypes.memmove(dst, src, count))
        return (self.OK,)

    def cudaMemcpy(self, dst, src, count, kind):
        ctypes.memmove(dst, src, count)
        return (self.OK,)

    def run_or_record(self, stream, work):
        captured = self.streams[int(stream)]
        captured.append(work) if captured is not None else work()

    def cudaStreamCreateWithFlags(self, flags):
        handle = 1000 + len(self.streams)
        self.streams[handle] = None
        return self.OK, handle

    def cudaStreamBeginCapture(self, stream, mode):
        self.streams[stream] = []
        return (self.OK,)

    def cudaStreamEndCapture(self, stream):
        graph, self.streams[stream] = self.streams[stream], None
        return self.OK, graph

    def cudaGraphInstantiateWithFlags(self, graph, flags):
        return self.OK, list(graph)

    def cudaGraphLaunch(self, graph_exec, stream):
        self.launches += 1
        for work in graph_exec:
            work()
        return (self.OK,)

    def ok(self, *args):
        return (self.OK,)

    cudaStreamSynchronize = cudaStreamDestroy = cudaSetDevice = cudaGraphDestroy = cudaGraphExecDestroy = ok

    def cudaGetDeviceProperties(self, index):
        return self.OK, type("Props", (), {"name": b"Fake GPU\x00\x00", "major": 8, "minor": 7})()

    def cudaRuntimeGetVersion(self):
        return self.OK, 12060


class FakeContext:
    """Output ``detections[b] = 2 * images[b].flat[:112].reshape(16, 7)``; the batch range is 1..4."""

    def __init__(self, engine):
        self.engine, self.addresses, self.batch, self.direct_runs = engine, {}, None, 0

    def set_input_shape(self, name, shape):
        self.batch = shape[0]
        return 1 <= shape[0] <= 4

    def get_tensor_shape(self, name):
        return (self.batch, 16, 7)

    def set_tensor_address(self, name, ptr):
        self.addresses[name] = ptr

    def _compute(self):
        b = self.batch
        images = np.ctypeslib.as_array((ctypes.c_float * (b * 192)).from_address(self.addresses["images"]))
        out = np.ctypeslib.as_array((ctypes.c_float * (b * 112)).from_address(self.addresses["detections"]))
        out[:] = 2 * images.reshape(b, 192)[:, :112].ravel()

    def execute_async_v3(self, stream_handle):
        if self.engine.cudart.streams[stream_handle] is None:
            self.direct_runs += 1
        self.engine.cudart.run_or_record(stream_handle, self._compute)
        return True


class FakeEngine:
    num_optimization_profiles = 1

    def __init__(self, cudart, batch):
        self.cudart, self.contexts = cudart, []
        self.io = {"images": ("INPUT", (batch, 3, 8, 8)), "detections": ("OUTPUT", (batch, 16, 7))}
        self.num_io_tensors, self.low = 2, 1

    def get_tensor_name(self, i):
        return list(self.io)[i]

    def get_tensor_mode(self, name):
        return self.io[name][0]

    def get_tensor_dtype(self, name):
        return np.float32

    def get_tensor_shape(self, name):
        return self.io[name][1]

    def get_tensor_profile_shape(self, name, profile):
        return [(self.low, 3, 8, 8), (4, 3, 8, 8), (4, 3, 8, 8)]

    def create_execution_context(self):
        context = FakeContext(self)
        context.batch = self.io["images"][1][0] if self.io["images"][1][0] > 0 else None
        self.contexts.append(context)
        return context


def fake_tensorrt(cudart, batch):
    class Runtime:
        def __init__(self, logger):
            pass

        def deserialize_cuda_engine(self, data):
            return FakeEngine(cudart, batch) if data == b"fake-engine" else None

    return type("trt", (), {"__version__": "10.3.0.30", "Runtime": Runtime, "nptype": staticmethod(np.dtype),
                            "Logger": type("Logger", (), {"WARNING": 2, "__init__": lambda self, level: None}),
                            "TensorIOMode": type("TensorIOMode", (), {"INPUT": "INPUT", "OUTPUT": "OUTPUT"})})


@pytest.fixture
def fake_gpu(tmp_path, monkeypatch):
    """``make(batch)`` -> (engine path, fake cudart) with TensorRT and CUDA faked; batch -1 is dynamic 1..4."""
    def make(batch=-1, engine_bytes=b"fake-engine"):
        cudart = FakeCudart()
        monkeypatch.setattr(cuda, "_CUDART", cudart)
        monkeypatch.setattr(trt_runner, "import_tensorrt", lambda: fake_tensorrt(cudart, batch))
        fixed = [batch, 3, 8, 8] if batch > 0 else None
        shapes = {"images": {"min": fixed or [1, 3, 8, 8], "opt": fixed or [4, 3, 8, 8],
                             "max": fixed or [4, 3, 8, 8], "dynamic": batch < 0}}
        record = {**_record(shapes=shapes, engine_sha256=hashlib.sha256(b"fake-engine").hexdigest()),
                  "gpu_name": "Fake GPU", "compute_capability": "8.7"}
        engine = tmp_path / "fake.engine"
        engine.write_bytes(engine_bytes)
        write_sidecar(engine, engine_sidecar_info(_info(), shapes, record))
        return engine, cudart

    return make


def _expected(images):
    return 2 * images.reshape(len(images), -1)[:, :112].reshape(len(images), 16, 7)


def test_runner_grows_buffers_only_when_the_batch_grows(fake_gpu):
    engine, cudart = fake_gpu()
    rng = np.random.default_rng(0)
    with open_runner(engine, device="cuda:0") as runner:
        mallocs = []
        for batch in (1, 3, 2, 3):
            images = rng.random((batch, 3, 8, 8), dtype=np.float32)
            np.testing.assert_array_equal(runner.infer({"images": images})["detections"], _expected(images))
            mallocs.append(cudart.mallocs)
        assert mallocs == [2, 4, 4, 4]  # images + detections at batch 1, again at 3, never for 2
        with pytest.raises(ArtifactError, match="at most 4"):
            runner.infer({"images": np.zeros((5, 3, 8, 8), np.float32)})
        with pytest.raises(ArtifactError, match="engine takes"):
            runner.infer({"images": np.zeros((1, 3, 16, 16), np.float32)})
    assert cudart.memory == {}  # everything freed on exit


def test_runner_pool_serves_threads_with_several_contexts(fake_gpu):
    engine, cudart = fake_gpu()
    images = np.random.default_rng(1).random((2, 3, 8, 8), dtype=np.float32)
    with open_runner(engine, device="cuda:0", contexts=3) as runner:
        results = []
        threads = [threading.Thread(target=lambda: results.append(runner.infer({"images": images})))
                   for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(runner._slots) == 3 and len({s.stream.handle for s in runner._slots}) == 3
    assert len(results) == 6 and all(np.array_equal(r["detections"], _expected(images)) for r in results)


def test_static_engine_replays_a_cuda_graph(fake_gpu):
    engine, cudart = fake_gpu(batch=2)
    rng = np.random.default_rng(2)
    with open_runner(engine, device="cuda:0", cuda_graph=True) as runner:
        for _ in range(3):
            images = rng.random((2, 3, 8, 8), dtype=np.float32)
            np.testing.assert_array_equal(runner.infer({"images": images})["detections"], _expected(images))
        context = runner._slots[0].context
        assert context.direct_runs == 1 and cudart.launches == 3  # one warm-up, then graph replays only


def test_cuda_graph_is_skipped_for_a_batch_range(fake_gpu, caplog):
    engine, cudart = fake_gpu()
    with open_runner(engine, device="cuda:0", cuda_graph=True) as runner:
        runner.infer({"images": np.ones((2, 3, 8, 8), np.float32)})
    assert cudart.launches == 0 and "cuda_graph ignored" in caplog.text


def test_cuda_graph_for_a_dynamic_dimension_pinned_by_its_profile(fake_gpu, monkeypatch):
    engine, cudart = fake_gpu()
    monkeypatch.setattr(FakeEngine, "get_tensor_profile_shape", lambda self, name, i: [(4, 3, 8, 8)] * 3)
    images = np.ones((4, 3, 8, 8), np.float32)
    with open_runner(engine, device="cuda:0", cuda_graph=True) as runner:
        for _ in range(2):
            np.testing.assert_array_equal(runner.infer({"images": images})["detections"], _expected(images))
    assert cudart.launches == 2


def test_runner_refuses_an_engine_its_sidecar_does_not_describe(fake_gpu):
    engine, _ = fake_gpu(engine_bytes=b"another engine")
    with pytest.raises(ArtifactError, match="sha256 differs"):
        open_runner(engine, device="cuda:0").activate()


# ---- real engines: need TensorRT and an NVIDIA GPU --------------------------------------------------------


def _export_tiny(path, batch=None):
    """A 2-layer conv net exported as the project exports: input ``images``, output ``detections [B, N, 7]``;
    ``batch=None``: a dynamic batch dimension."""
    torch = pytest.importorskip("torch")

    class Tiny(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.a = torch.nn.Conv2d(3, 8, 3, stride=2, padding=1)
            self.b = torch.nn.Conv2d(8, 7, 3, stride=2, padding=1)

        def forward(self, images):
            return self.b(torch.relu(self.a(images))).flatten(2).transpose(1, 2)

    torch.manual_seed(0)
    axes = None if batch else {"images": {0: "batch"}, "detections": {0: "batch"}}
    with warnings.catch_warnings():  # dynamo=False (the project's exporter) is deprecated in torch >= 2.9
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(Tiny().eval(), (torch.rand(batch or 1, 3, 64, 64),), str(path), dynamo=False,
                          opset_version=17, input_names=["images"], output_names=["detections"], dynamic_axes=axes)
    return path


@pytest.fixture
def tiny_onnx(tmp_path):
    return _export_tiny(tmp_path / "tiny.onnx")


def test_the_tiny_onnx_the_engine_tests_build_from(tmp_path):
    dynamic, static = _export_tiny(tmp_path / "d.onnx"), _export_tiny(tmp_path / "s.onnx", batch=2)
    assert inspect_onnx(dynamic).inputs == {"images": (-1, 3, 64, 64)}
    assert inspect_onnx(static).inputs == {"images": (2, 3, 64, 64)}
    assert _onnxruntime(dynamic, np.zeros((3, 3, 64, 64), np.float32)).shape == (3, 256, 7)


def _onnxruntime(path, batch):
    ort = pytest.importorskip("onnxruntime")
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"images": batch})[0]


@pytest.mark.trt
@pytest.mark.gpu
def test_fp32_engine_matches_onnxruntime_with_a_dynamic_batch(tiny_onnx, tmp_path):
    engine = tmp_path / "tiny.engine"
    info = trt_export.build_engine(tiny_onnx, engine, precision="fp32", sidecar_info=_info(), min_batch=1,
                                   max_batch=4, workspace_gib=1, timing_cache=tmp_path / "timing.cache", profiles=2)
    assert (info.batch, info.max_batch) == (None, 4) and (tmp_path / "timing.cache").stat().st_size > 0
    rng = np.random.default_rng(0)
    with open_runner(engine, device="cuda:0", contexts=2) as runner:
        for batch in (1, 3, 2):
            images = rng.random((batch, 3, 64, 64), dtype=np.float32)
            out = runner.infer({"images": images})["detections"]
            np.testing.assert_allclose(out, _onnxruntime(tiny_onnx, images), rtol=1e-3, atol=1e-4)
        images = rng.random((2, 3, 64, 64), dtype=np.float32)
        results = [None] * 4

        def work(i):
            results[i] = runner.infer({"images": images})["detections"]

        threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for out in results:
            np.testing.assert_allclose(out, _onnxruntime(tiny_onnx, images), rtol=1e-3, atol=1e-4)


@pytest.mark.trt
@pytest.mark.gpu
def test_static_engine_with_cuda_graph(tmp_path):
    onnx_path, engine = _export_tiny(tmp_path / "static.onnx", batch=2), tmp_path / "static.engine"
    info = trt_export.build_engine(onnx_path, engine, precision="fp32", sidecar_info=_info())
    assert (info.batch, info.max_batch) == (2, None)
    images = np.random.default_rng(1).random((2, 3, 64, 64), dtype=np.float32)
    with open_runner(engine, device="cuda:0", cuda_graph=True) as runner:
        first = runner.infer({"images": images})["detections"]
        again = runner.infer({"images": images * 0.5})["detections"]  # replays the captured graph
        assert runner._slots[0].graph is not None
    np.testing.assert_allclose(first, _onnxruntime(onnx_path, images), rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(again, _onnxruntime(onnx_path, images * 0.5), rtol=1e-3, atol=1e-4)


@pytest.mark.trt
@pytest.mark.gpu
def test_classic_fp16_and_int8_on_tensorrt_10(tiny_onnx, tmp_path):
    if tensorrt_version()[0] >= 11:
        pytest.skip("TensorRT 11 has no FP16/INT8 builder flags nor calibrators (Q/DQ ONNX instead)")
    images = np.random.default_rng(2).random((1, 3, 64, 64), dtype=np.float32)
    reference = _onnxruntime(tiny_onnx, images)
    trt_export.build_engine(tiny_onnx, tmp_path / "h.engine", precision="fp16", sidecar_info=_info(), max_batch=2)
    with open_runner(tmp_path / "h.engine", device="cuda:0") as runner:
        np.testing.assert_allclose(runner.infer({"images": images})["detections"], reference, atol=2e-2)
    batches = [np.random.default_rng(i).random((2, 3, 64, 64), dtype=np.float32) for i in range(4)]
    cache = tmp_path / "calib.cache"
    info = trt_export.build_engine(tiny_onnx, tmp_path / "q.engine", precision="int8", sidecar_info=_info(),
                                   max_batch=2, calibrator=batches, calibration_cache=cache)
    assert info.extra["tensorrt"]["calibrated"] and cache.stat().st_size > 0
    trt_export.build_engine(tiny_onnx, tmp_path / "q2.engine", precision="int8", sidecar_info=_info(),
                            max_batch=2, calibration_cache=cache)  # from the cache alone
    with open_runner(tmp_path / "q2.engine", device="cuda:0") as runner:
        out = runner.infer({"images": images})["detections"]
    assert np.abs(out - reference).max() < 0.25 * np.abs(reference).max() + 0.05


@pytest.mark.trt
@pytest.mark.gpu
def test_int8_without_calibration_is_refused_before_building(tiny_onnx, tmp_path):
    with pytest.raises(TensorRTBuildError, match="Q/DQ"):
        trt_export.build_engine(tiny_onnx, tmp_path / "q.engine", precision="int8", sidecar_info=_info())
    assert not (tmp_path / "q.engine").exists()
