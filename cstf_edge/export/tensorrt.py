"""TensorRT engine building: every TensorRT-version branch of cstf-edge lives here, nowhere else.

Two paths (DESIGN.md, "TensorRT 10 and 11 both"):

- **strongly typed** (TensorRT >= 10 with a Q/DQ or FP16 ONNX; always on TensorRT 11): precision comes from
  the graph, no precision builder flags. TensorRT 11 removed ``BuilderFlag.FP16/INT8``,
  ``IBuilderConfig.int8_calibrator`` and the calibrators ("Removed Python APIs and Replacements",
  docs.nvidia.com/deeplearning/tensorrt/latest/api/migration/tensorrt-10x-to-11x-python-api-reference.html);
  ``NetworkDefinitionCreationFlag.STRONGLY_TYPED`` is ignored there, so no flag is passed.
- **classic** (TensorRT <= 10, FP32 ONNX): ``BuilderFlag.FP16`` / ``BuilderFlag.INT8`` and, for INT8, an
  ``IInt8EntropyCalibrator2`` subclass fed with preprocessed batches, with a calibration cache (as in the
  TensorRT samples ``samples/python/efficientdet/build_engine.py``).

:func:`plan_build` decides the path from (version, precision, what the ONNX holds) and refuses impossible
combinations with a :class:`TensorRTBuildError` saying what works instead; it needs no TensorRT, nor do the
other helpers above :func:`build_engine`, so they are tested without a GPU.
"""
from __future__ import annotations

import hashlib
import logging
import re
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Iterable

import numpy as np

from cstf_edge._io import atomic_write_bytes, atomic_write_text
from cstf_edge.export.errors import ExportError
from cstf_edge.export.tensorrt_calib import (CalibrationBatches, CalibrationCache, CalibrationError,
                                             calibration_cache_key, make_entropy_calibrator)
from cstf_edge.runtime.artifact import PRECISIONS, ArtifactInfo, sidecar_path
from cstf_edge.runtime.backends.tensorrt import cuda
from cstf_edge.runtime.backends.tensorrt.runner import device_index, import_tensorrt

__all__ = [
    "BuildPlan", "CalibrationBatches", "CalibrationCache", "CalibrationError", "OnnxFacts", "TensorRTBuildError",
    "build_engine", "calibration_cache_key", "engine_sidecar_info", "inspect_onnx", "make_entropy_calibrator",
    "parser_error_message", "plan_build", "profile_shapes", "tensorrt_version", "write_sidecar",
]

log = logging.getLogger(__name__)

QDQ_OPS = ("QuantizeLinear", "DequantizeLinear")
ONNX_FLOAT16 = 10  # onnx.TensorProto.FLOAT16
QDQ_HINT = "export the Q/DQ INT8 ONNX (python -m cstf_edge.export --weights W --precision int8 ...) and build it"
FP16_HINT = "export the FP16 ONNX (python -m cstf_edge.export --weights W --precision fp16, ModelOpt AutoCast)"


class TensorRTBuildError(ExportError):
    """An engine cannot be built as asked (precision impossible on this TensorRT, ONNX the parser refuses,
    bad batch range, DLA unavailable); the message says what would work."""


def tensorrt_version(text: str | None = None) -> tuple[int, ...]:
    """``"10.3.0.30"`` -> ``(10, 3, 0, 30)``; without ``text``, the installed TensorRT's version."""
    text = import_tensorrt().__version__ if text is None else str(text)
    match = re.match(r"\s*(\d+)(?:\.(\d+))?(?:\.(\d+))?(?:\.(\d+))?", text)
    if not match:
        raise TensorRTBuildError(f"cannot read the TensorRT version {text!r}")
    numbers = [int(g) for g in match.groups() if g is not None]
    return tuple(numbers + [0] * (3 - len(numbers)))


@dataclass(frozen=True)
class BuildPlan:
    """How one engine is built: network creation flags, builder flags, classic calibration, DLA."""

    strongly_typed: bool
    network_flags: tuple[str, ...] = ()  # NetworkDefinitionCreationFlag names
    builder_flags: tuple[str, ...] = ()  # BuilderFlag names
    calibrate: bool = False  # classic implicit INT8 calibration (TensorRT <= 10 only)
    dla_core: int | None = None
    notes: tuple[str, ...] = ()  # warnings worth logging


def plan_build(version: tuple[int, ...], precision: str, *, onnx_qdq: bool = False, onnx_fp16: bool = False,
               strongly_typed: bool | None = None, dla_core: int | None = None,
               calibration: bool = False) -> BuildPlan:
    """The build path for this TensorRT ``version``, or :class:`TensorRTBuildError` when it is impossible.

    ``onnx_qdq`` / ``onnx_fp16``: the ONNX holds Q/DQ nodes / FP16 tensors. ``calibration``: calibration
    batches or a valid calibration cache are at hand.
    """
    if precision not in PRECISIONS:
        raise TensorRTBuildError(f"precision must be one of {PRECISIONS}, not {precision!r}")
    if tuple(version[:2]) < (8, 6):
        raise TensorRTBuildError(f"TensorRT {_dotted(version)} is too old: cstf-edge needs 8.6 or newer")
    if onnx_qdq and precision != "int8":
        raise TensorRTBuildError(f"the ONNX holds Q/DQ nodes (an INT8 model): build it with precision int8, "
                                 f"not {precision}, or export the {precision} ONNX")
    if onnx_fp16 and not onnx_qdq and precision == "fp32":
        raise TensorRTBuildError("the ONNX holds FP16 tensors: build it with precision fp16, or export the FP32 ONNX")
    if dla_core is not None and precision == "fp32":
        raise TensorRTBuildError("DLA runs FP16 or INT8 only: use precision fp16 or int8 with dla_core")
    if version[0] >= 11:
        plan = _plan_strong_only(version, precision, onnx_qdq, onnx_fp16, strongly_typed, dla_core)
    else:
        plan = _plan_classic_era(version, precision, onnx_qdq, onnx_fp16, strongly_typed, dla_core, calibration)
    if calibration and not plan.calibrate:
        why = "the Q/DQ ONNX carries its own scales" if onnx_qdq else f"a {precision} build takes none"
        plan = replace(plan, notes=(f"the calibration batches/cache are not used: {why}",))
    return plan


def _plan_strong_only(version, precision, qdq, fp16, strongly_typed, dla_core) -> BuildPlan:
    """TensorRT >= 11: strongly typed always; precision must already be in the ONNX."""
    if strongly_typed is False:
        raise TensorRTBuildError(f"TensorRT {_dotted(version)} builds strongly typed networks only (weak typing "
                                 "and the FP16/INT8 builder flags were removed in 11.0): drop strongly_typed=False")
    if precision == "int8" and not qdq:
        raise TensorRTBuildError(f"INT8 on TensorRT {_dotted(version)}: implicit calibration (the INT8 builder "
                                 f"flag, IInt8EntropyCalibrator2) was removed in 11.0; {QDQ_HINT}")
    if precision == "fp16" and not fp16:
        raise TensorRTBuildError(f"FP16 on TensorRT {_dotted(version)}: BuilderFlag.FP16 was removed in 11.0 and "
                                 f"this ONNX is FP32; {FP16_HINT}")
    if dla_core is not None and tuple(version[:2]) < (11, 4):
        raise TensorRTBuildError(f"TensorRT {_dotted(version)} has no DLA (unavailable in 11.0 to 11.3); use "
                                 "TensorRT 10.x up to 10.7 (JetPack 6) or 11.4.1+ on JetPack 7.2.2")
    return BuildPlan(True, (), ("GPU_FALLBACK",) if dla_core is not None else (), False, dla_core)


def _plan_classic_era(version, precision, qdq, fp16, strongly_typed, dla_core, calibration) -> BuildPlan:
    """TensorRT 8.6 - 10.x: strongly typed for Q/DQ/FP16 graphs (10.0+), builder flags otherwise."""
    strong = (qdq or fp16) and version[0] >= 10 if strongly_typed is None else strongly_typed
    if strong and version[0] < 10:
        raise TensorRTBuildError(f"strongly typed networks need TensorRT 10 or newer (this is "
                                 f"{_dotted(version)}): build with strongly_typed=False")
    if dla_core is not None:
        _check_dla_classic(version, strong, qdq)
    net_flags = ("EXPLICIT_BATCH",) if version[0] < 10 else ()  # the default from 10.0 on
    fallback = ("GPU_FALLBACK",) if dla_core is not None else ()
    if strong:
        if (precision == "int8" and not qdq) or (precision == "fp16" and not fp16):
            hint = QDQ_HINT if precision == "int8" else FP16_HINT
            raise TensorRTBuildError(f"a strongly typed {precision} build takes its precision from the ONNX, which "
                                     f"is FP32: {hint}, or build this one with strongly_typed=False (builder "
                                     "flags, and calibration for INT8)")
        return BuildPlan(True, net_flags + ("STRONGLY_TYPED",), fallback, False, dla_core)
    flags = {"fp32": (), "fp16": ("FP16",), "int8": ("FP16", "INT8")}[precision]
    calibrate = precision == "int8" and not qdq
    if calibrate and not calibration:
        raise TensorRTBuildError("INT8 from an FP32 ONNX on TensorRT <= 10 needs calibration batches (the "
                                 f"project's calibration batcher) or a valid calibration cache; or {QDQ_HINT}")
    return BuildPlan(False, net_flags, flags + fallback, calibrate, dla_core)


def _check_dla_classic(version, strong: bool, qdq: bool) -> None:
    if tuple(version[:2]) > (10, 7):
        raise TensorRTBuildError(f"TensorRT {_dotted(version)} has no DLA: 10.7 was the last 10.x release with "
                                 "DLA (JetPack 6 ships 10.3)")
    if strong or qdq:
        raise TensorRTBuildError("DLA on TensorRT <= 10 takes the FP16/INT8 builder flags: build the FP32 ONNX "
                                 "with strongly_typed=False (and calibration batches for INT8), not a "
                                 "strongly typed or Q/DQ ONNX")


def _dotted(version) -> str:
    return ".".join(str(v) for v in version)


@dataclass(frozen=True)
class OnnxFacts:
    """What the builder needs to know about an ONNX before creating the network."""

    inputs: dict  # name -> shape, -1 for a symbolic dimension
    has_qdq: bool
    has_fp16: bool
    sha256: str


def inspect_onnx(path: str | Path) -> OnnxFacts:
    """Inputs, Q/DQ nodes, FP16 tensors and the file hash of an ONNX model (needs the ``onnx`` package)."""
    try:
        import onnx
    except ImportError:
        raise TensorRTBuildError("building an engine needs the onnx package: pip install onnx") from None
    path = Path(path)
    try:
        data = path.read_bytes()
        model = onnx.load_from_string(data)
    except Exception as exc:  # noqa: BLE001 - OSError, protobuf DecodeError, ...
        raise TensorRTBuildError(f"{path}: not a readable ONNX model ({exc})") from None
    graph = model.graph
    init = {t.name for t in graph.initializer}
    inputs = {v.name: tuple(d.dim_value if d.HasField("dim_value") else -1 for d in v.type.tensor_type.shape.dim)
              for v in graph.input if v.name not in init}
    fp16 = any(t.data_type == ONNX_FLOAT16 for t in graph.initializer) or any(
        v.type.tensor_type.elem_type == ONNX_FLOAT16 for v in (*graph.input, *graph.output, *graph.value_info))
    fp16 = fp16 or any(n.op_type == "Cast" and any(a.name == "to" and a.i == ONNX_FLOAT16 for a in n.attribute)
                       for n in graph.node)
    return OnnxFacts(inputs, any(n.op_type in QDQ_OPS for n in graph.node), fp16, hashlib.sha256(data).hexdigest())


def profile_shapes(shape, min_batch: int | None = None, opt_batch: int | None = None,
                   max_batch: int | None = None) -> tuple[tuple, tuple, tuple] | None:
    """(min, opt, max) input shapes for a dynamic batch dimension; None for a fixed batch (no profile)."""
    shape = tuple(int(d) for d in shape)
    if len(shape) < 2 or any(d < 0 for d in shape[1:]):
        raise TensorRTBuildError(f"input shape {shape}: only the batch dimension may be dynamic; export with a "
                                 "fixed --imgsz")
    given = [b for b in (min_batch, opt_batch, max_batch) if b is not None]
    if shape[0] >= 0:
        if any(b != shape[0] for b in given):
            raise TensorRTBuildError(f"the ONNX has a fixed batch of {shape[0]}; re-export it with "
                                     f"--dynamic-batch {min(given)}:{max(given)} for a batch range")
        return None
    lo = min_batch or 1
    hi = max_batch or max(lo, opt_batch or lo)
    opt = opt_batch or hi
    if not 1 <= lo <= opt <= hi:
        raise TensorRTBuildError(f"batch range must satisfy 1 <= min <= opt <= max, got {lo}, {opt}, {hi}")
    return (lo, *shape[1:]), (opt, *shape[1:]), (hi, *shape[1:])


def engine_sidecar_info(info: ArtifactInfo, shapes: dict, record: dict) -> ArtifactInfo:
    """The engine's :class:`ArtifactInfo`: batch range from ``shapes`` (name -> min/opt/max), the TensorRT
    build record in ``extra["tensorrt"]``."""
    first = next(iter(shapes.values()))
    lo, hi = first["min"][0], first["max"][0]
    return replace(info, precision=record["precision"], batch=lo if lo == hi else None,
                   max_batch=None if lo == hi else hi, extra={**info.extra, "tensorrt": record})


def write_sidecar(engine_path: str | Path, info: ArtifactInfo) -> Path:
    """Write ``<engine>.json`` atomically."""
    return atomic_write_text(sidecar_path(engine_path), info.to_json())


def parser_error_message(parser, onnx_path) -> str:
    """The ``OnnxParser`` errors, one line each with the node's name and operator where TensorRT gives them."""
    lines = []
    for i in range(parser.num_errors):
        err = parser.get_error(i)
        name, op = _optional(err, "node_name"), _optional(err, "node_operator")
        where = f"node {name!r}" if name else f"node #{_optional(err, 'node')}"
        lines.append(f"  {where}{f' ({op})' if op else ''}: {err.desc()}")
    return (f"{onnx_path}: the TensorRT ONNX parser refused the model ({len(lines)} error(s)):\n" + "\n".join(lines)
            + "\nre-export with the project's opset (17) or check the operators TensorRT supports")


def _optional(obj, method: str):
    """``obj.method()`` where this TensorRT has it (``node_name``/``node_operator`` came with 8.6)."""
    func = getattr(obj, method, None)
    return func() if callable(func) else None


def _make_logger(trt):
    """A ``trt.ILogger`` that forwards to :mod:`logging` and keeps the errors for the exception message."""
    severity = trt.ILogger.Severity
    levels = {severity.INTERNAL_ERROR: logging.ERROR, severity.ERROR: logging.ERROR,
              severity.WARNING: logging.WARNING, severity.INFO: logging.INFO}

    class _Logger(trt.ILogger):
        def __init__(self):
            trt.ILogger.__init__(self)
            self.errors: list[str] = []

        def log(self, level, msg):
            if levels.get(level, logging.DEBUG) >= logging.ERROR:
                self.errors.append(msg)
            log.log(levels.get(level, logging.DEBUG), "TensorRT: %s", msg)

    return _Logger()


class _DeviceStage:
    """One device buffer the calibrator copies each batch into (grown when a batch needs more)."""

    def __init__(self):
        self.buffer: cuda.DeviceBuffer | None = None

    def __call__(self, batch: np.ndarray) -> int:
        if self.buffer is None or self.buffer.nbytes < batch.nbytes:
            self.free()
            self.buffer = cuda.DeviceBuffer(batch.nbytes)
        cuda.copy_to_device(self.buffer.ptr, batch)
        return self.buffer.ptr

    def free(self) -> None:
        if self.buffer is not None:
            self.buffer.free()
            self.buffer = None


def _timing_cache(config, path):
    """Attach a timing cache read from ``path`` (empty when absent or refused); returns it for saving."""
    data = Path(path).read_bytes() if path and Path(path).is_file() else b""
    cache = config.create_timing_cache(data)
    if not config.set_timing_cache(cache, False) and data:  # ignore_mismatch=False: other GPU/TensorRT
        log.warning("%s: timing cache is from another GPU or TensorRT; starting a new one", path)
        cache = config.create_timing_cache(b"")
        config.set_timing_cache(cache, False)
    return cache


def _configure(trt, builder, config, plan: BuildPlan, shapes: dict, workspace_gib: float, profiles: int) -> None:
    """Workspace, builder flags, optimization profiles (dynamic batch), DLA with GPU fallback."""
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gib * (1 << 30)))
    for name in plan.builder_flags:
        config.set_flag(getattr(trt.BuilderFlag, name))
    dynamic = {name: s for name, s in shapes.items() if s["dynamic"]}
    for _ in range(profiles if dynamic else 0):
        profile = builder.create_optimization_profile()
        for name, s in dynamic.items():
            profile.set_shape(name, s["min"], s["opt"], s["max"])
        config.add_optimization_profile(profile)
    if plan.dla_core is not None:
        if builder.num_DLA_cores <= plan.dla_core:
            raise TensorRTBuildError(f"DLA core {plan.dla_core} asked for, this device has "
                                     f"{builder.num_DLA_cores} DLA core(s) (Jetson AGX Orin: 2, Orin Nano: 0)")
        config.default_device_type = trt.DeviceType.DLA
        config.DLA_core = plan.dla_core


def _calibration_profile(builder, config, shapes: dict, batch: int) -> None:
    """A dynamic network calibrates at one fixed shape: the calibration batch (``set_calibration_profile``)."""
    dynamic = {name: s for name, s in shapes.items() if s["dynamic"]}
    if dynamic:
        profile = builder.create_optimization_profile()
        for name, s in dynamic.items():
            fixed = (batch, *s["max"][1:])
            profile.set_shape(name, fixed, fixed, fixed)
        config.set_calibration_profile(profile)


def _input_shapes(facts: OnnxFacts, info: ArtifactInfo, batch_range: tuple) -> dict:
    """name -> {min, opt, max, dynamic} for each ONNX input, checked against the artifact's input names."""
    if set(facts.inputs) != set(info.input_names):
        raise TensorRTBuildError(f"the ONNX inputs {sorted(facts.inputs)} differ from the artifact's "
                                 f"{sorted(info.input_names)} (with_reference={info.with_reference})")
    shapes = {}
    for name, shape in facts.inputs.items():
        profile = profile_shapes(shape, *batch_range)
        lo, opt, hi = profile or (shape, shape, shape)
        shapes[name] = {"min": list(lo), "opt": list(opt), "max": list(hi), "dynamic": profile is not None}
    return shapes


def build_engine(onnx_path, engine_path, *, precision: str, sidecar_info: ArtifactInfo,
                 strongly_typed: bool | None = None, min_batch: int | None = None, opt_batch: int | None = None,
                 max_batch: int | None = None, workspace_gib: float = 4.0, timing_cache=None,
                 dla_core: int | None = None, calibrator: Iterable[np.ndarray] | None = None,
                 calibration_cache=None, calibration_id: str = "", profiles: int = 1,
                 device: str = "cuda:0") -> ArtifactInfo:
    """Build ``engine_path`` from ``onnx_path`` and write it (atomically) with its sidecar ``<engine>.json``.

    ``strongly_typed``: None picks it (TensorRT 11: always; 10: for a Q/DQ or FP16 ONNX). ``calibrator``: an
    iterable of preprocessed float32 ``[B, 3, H, W]`` batches for classic INT8 (TensorRT <= 10, FP32 ONNX),
    with ``calibration_cache`` read/written beside. ``profiles``: copies of the batch profile, one per
    execution context the runner will use at once. Returns the sidecar's :class:`ArtifactInfo`.
    """
    trt = import_tensorrt()
    version = tensorrt_version(trt.__version__)
    facts = inspect_onnx(onnx_path)
    shapes = _input_shapes(facts, sidecar_info, (min_batch, opt_batch, max_batch))
    chw = tuple(next(iter(shapes.values()))["max"][1:])
    cache = None
    if calibration_cache is not None:
        key = calibration_cache_key(onnx_sha256=facts.sha256, trt_version=version, input_shape=chw,
                                    calibration_id=calibration_id)
        cache = CalibrationCache(calibration_cache, key)
    batches = CalibrationBatches(calibrator, chw) if calibrator is not None else None
    has_data = bool(batches is not None and batches.batch_size) or (cache is not None and cache.read() is not None)
    plan = plan_build(version, precision, onnx_qdq=facts.has_qdq, onnx_fp16=facts.has_fp16,
                      strongly_typed=strongly_typed, dla_core=dla_core, calibration=has_data)
    for note in plan.notes:
        log.warning("%s", note)
    cuda.set_device(device_index(device))
    environment = cuda.device_environment(device_index(device))
    started = time.perf_counter()
    serialized, timing = _build(trt, onnx_path, plan, shapes, workspace_gib, profiles, timing_cache,
                                (batches, cache))
    seconds = time.perf_counter() - started
    atomic_write_bytes(engine_path, serialized)
    if timing_cache is not None:
        atomic_write_bytes(timing_cache, timing.serialize())
    record = {"version": trt.__version__, **environment, "precision": precision,
              "strongly_typed": plan.strongly_typed, "shapes": shapes, "onnx_sha256": facts.sha256,
              "engine_sha256": hashlib.sha256(memoryview(serialized)).hexdigest(), "dla_core": dla_core,
              "workspace_gib": workspace_gib, "build_seconds": round(seconds, 2), "profiles": profiles,
              "calibrated": plan.calibrate}
    info = engine_sidecar_info(sidecar_info, shapes, record)
    write_sidecar(engine_path, info)
    log.info("%s: %s engine built in %.1f s (TensorRT %s, %s)", engine_path, precision, seconds,
             trt.__version__, "strongly typed" if plan.strongly_typed else "builder flags")
    return info


def _build(trt, onnx_path, plan: BuildPlan, shapes: dict, workspace_gib, profiles, timing_path, calibration):
    """Parse, configure, build; returns (serialized engine, timing cache)."""
    logger = _make_logger(trt)
    builder = trt.Builder(logger)
    flags = 0
    for name in plan.network_flags:
        flags |= 1 << int(getattr(trt.NetworkDefinitionCreationFlag, name))
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(Path(onnx_path).read_bytes(), str(onnx_path)):
        raise TensorRTBuildError(parser_error_message(parser, onnx_path))
    config = builder.create_builder_config()
    _configure(trt, builder, config, plan, shapes, workspace_gib, profiles)
    timing = _timing_cache(config, timing_path)
    stage, calibrator = _DeviceStage(), None
    if plan.calibrate:
        batches, cache = calibration
        calibrator = make_entropy_calibrator(trt.IInt8EntropyCalibrator2, batches, cache, stage)
        _calibration_profile(builder, config, shapes, calibrator.get_batch_size())
        config.int8_calibrator = calibrator
    try:
        serialized = builder.build_serialized_network(network, config)
    finally:
        stage.free()
    if calibrator is not None and calibrator.error is not None:
        raise calibrator.error
    if serialized is None:
        raise TensorRTBuildError("TensorRT could not build the engine: " + ("; ".join(logger.errors[-3:])
                                 or "see the TensorRT log") + f" (workspace {workspace_gib} GiB)")
    return serialized, timing
