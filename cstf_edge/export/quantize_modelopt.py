"""INT8 Q/DQ ONNX for TensorRT targets: NVIDIA Model Optimizer, or ONNX Runtime's quantizer made symmetric.

TensorRT's explicit quantization wants symmetric INT8: every QuantizeLinear/DequantizeLinear with an ``int8``
zero point of 0, activations per tensor, weights per output channel, biases left in float. Model Optimizer
(``nvidia-modelopt[onnx]``, the ``trt`` extra) makes such a graph with TensorRT's placement rules (Q/DQ on the
inputs of Conv/MatMul/pools/residual Adds, none on outputs, small-channel convolutions left float). Where it is
not installed, ``quantize_symmetric_ort`` makes one with ONNX Runtime's static quantizer: S8/S8 symmetric,
per-channel weights, float biases, Q/DQ on the inputs of ``TRT_QUANTIZED_OPS`` only.

Calibration runs on the CPU (``calibration_eps=["cpu"]``), so a TensorRT target can be exported on a machine
without a GPU. The images come from the project's ``CalibrationBatcher`` (the runtime's preprocessing), batch
by batch, never stacked in memory. Model Optimizer runs in a child Python (it patches ONNX Runtime for good).
Either way, nodes kept FP32 read float tensors (``float_inputs_for``) and the result is checked symmetric.

Caching, keyed by the caller's ``cache_path``:

- Model Optimizer cannot cache its calibration: its ``calibration_cache_path`` is an *input* (TensorRT
  calibration-cache text whose scales overwrite the calibrated ones after calibration has run anyway), and it
  writes none. So the result, the Q/DQ model, is kept beside ``cache_path`` (``<stem>.modelopt.onnx``) with a
  key of everything it depends on (FP32 model bytes, method, excluded nodes, calibration images and
  preprocessing, Model Optimizer's version); a second call with the same inputs copies it.
- ONNX Runtime caches tensor ranges in ``cache_path`` itself (its ``calibration_cache_path``, as
  ``quantize_ort`` does): a second call, or a sensitivity sweep through ``quantize_ort``, skips calibration.
"""
from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import pickle
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Collection

import numpy as np

from cstf_edge.export.calibration import cache_key
from cstf_edge.export.errors import ExportError
from cstf_edge.export.onnx_export import sha256_file
from cstf_edge.export.quantize_ort import QUANT_OP_TYPES, calibration_reader, input_names

log = logging.getLogger(__name__)

#: our method names -> Model Optimizer's (INT8 offers entropy and max; "max" is symmetric min/max)
MODELOPT_METHODS = {"entropy": "entropy", "minmax": "max"}
ORT_METHODS = ("entropy", "minmax", "percentile")
PERCENTILE = 99.999
CALIBRATION_STRIDE = 4  # min/max batches calibrated at once (ONNX Runtime keeps their activations in memory)
#: the fallback quantizes the inputs of TensorRT's INT8 layers (weighted ops and pools; TensorRT fuses the rest)
TRT_QUANTIZED_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul", "MaxPool", "AveragePool", "GlobalAveragePool")
#: and calibrates these, a superset of ``quantize_ort``'s, so its range cache also serves the sensitivity sweep
TRT_CALIBRATED_OPS = sorted(set(QUANT_OP_TYPES) | set(TRT_QUANTIZED_OPS))


@functools.cache
def modelopt_available() -> str | None:
    """Model Optimizer's version if ``modelopt.onnx.quantization`` imports here, else None (the reason is
    logged at debug level). The import takes seconds (it loads torch); the answer is cached."""
    try:
        import modelopt
        import modelopt.onnx.quantization  # noqa: F401
    except Exception as exc:  # noqa: BLE001 - any import failure (missing, onnx/ORT mismatch, CUDA libs)
        log.debug("Model Optimizer not usable: %s: %s", type(exc).__name__, exc)
        return None
    return str(getattr(modelopt, "__version__", "unknown"))


def quantize_modelopt(fp32_path: Path, out_path: Path, *, batcher: Collection[np.ndarray], method: str,
                      exclude: list[str], cache_path: Path) -> None:
    """Write a symmetric INT8 Q/DQ model of ``fp32_path`` for TensorRT to ``out_path`` (no metadata).

    ``batcher``: float32 ``[B, 3, H, W]`` calibration batches (sized, iterable more than once, picklable);
    ``method``: entropy or minmax (percentile only on the ONNX Runtime fallback); ``exclude``: exact names of
    the nodes kept FP32; ``cache_path``: the caller's calibration cache (see the module doc). Without Model
    Optimizer it warns and falls back to ``quantize_symmetric_ort``.
    """
    version = modelopt_available()
    if version is None:
        log.warning("NVIDIA Model Optimizer is not installed (pip install 'cstf-edge[trt]'): making the TensorRT "
                    "INT8 Q/DQ model with ONNX Runtime's quantizer (symmetric S8/S8) instead")
        quantize_symmetric_ort(fp32_path, out_path, batcher=batcher, method=method, exclude=exclude,
                               cache_path=cache_path)
        return
    if method not in MODELOPT_METHODS:
        raise ExportError(f"calibration method {method!r} is not offered by Model Optimizer's INT8 quantizer; "
                          f"use one of {', '.join(MODELOPT_METHODS)} for a TensorRT target")
    (result, marker), key = _result_files(cache_path), _result_key(fp32_path, batcher, method, exclude, version)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    if result.is_file() and marker.is_file() and marker.read_text().strip() == key:
        log.info("INT8 (Model Optimizer): reusing the cached Q/DQ model %s", result)
        shutil.copyfile(result, out_path)
        return
    start = time.perf_counter()
    _run_modelopt(fp32_path, out_path, batcher, MODELOPT_METHODS[method], exclude)
    float_inputs_for(out_path, exclude)
    count = check_symmetric(out_path)
    log.info("INT8 (Model Optimizer %s, %s, CPU calibration): %d quantized tensors in %.1f s", version, method,
             count, time.perf_counter() - start)
    _store(out_path, result, marker, key)


def _run_modelopt(fp32_path: Path, out_path: Path, batcher, method: str, exclude: list[str]) -> None:
    """Model Optimizer in a child Python: it patches ONNX Runtime's calibrators for good (``patch_ort_modules``),
    which breaks later ``quantize_static`` calls (``quantize_ort``) in the process that ran it. ``batcher`` is
    pickled to the child (the project's ``CalibrationBatcher`` holds only paths and the preprocessing spec).
    Work happens in a scratch folder beside ``out_path``: Model Optimizer rewrites its input model in place
    (adds ``value_info``) and leaves intermediate models beside its output."""
    out_path.parent.mkdir(parents=True, exist_ok=True)
    level = "DEBUG" if log.isEnabledFor(logging.DEBUG) else "WARNING"
    with tempfile.TemporaryDirectory(prefix=".modelopt-", dir=out_path.parent) as tmp:
        source, scratch, job = Path(tmp) / "model.onnx", Path(tmp) / "model.int8.onnx", Path(tmp) / "job.pkl"
        shutil.copyfile(fp32_path, source)
        job.write_bytes(pickle.dumps({"source": source, "output": scratch, "batcher": batcher, "method": method,
                                      "exclude": [_exact(name) for name in exclude], "level": level}))
        done = subprocess.run([sys.executable, "-c", CHILD, str(job)], capture_output=True, text=True,
                              env=_child_env(), check=False)
        log.debug("Model Optimizer output:\n%s%s", done.stdout, done.stderr)
        if done.returncode < 0:
            raise ExportError(f"Model Optimizer's process was killed (signal {-done.returncode}) quantizing "
                              f"{fp32_path}; out of memory? try fewer or smaller calibration images")
        if done.returncode != 0 or not scratch.is_file():
            lines = [line for line in (done.stderr + done.stdout).splitlines() if line.strip()]
            raise ExportError(f"Model Optimizer could not quantize {fp32_path}: "
                              f"{lines[-1] if lines else 'it wrote no model'}")
        shutil.move(str(scratch), out_path)


CHILD = "import sys; from cstf_edge.export.quantize_modelopt import _child_main; _child_main(sys.argv[1])"


def _child_env() -> dict[str, str]:
    """The parent's environment, with this package importable in the child wherever it was imported from."""
    root = str(Path(__file__).resolve().parents[2])
    paths = [root, *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}


def _child_main(job_path: str) -> None:
    """The child's side of ``_run_modelopt``: Model Optimizer's INT8 quantization, calibrating on the CPU."""
    from modelopt.onnx.quantization import quantize

    job = pickle.loads(Path(job_path).read_bytes())
    quantize(str(job["source"]), quantize_mode="int8", calibration_data_reader=calibration_reader(job["batcher"], input_names(Path(job["source"]))),
             calibration_method=job["method"], calibration_eps=["cpu"], nodes_to_exclude=job["exclude"],
             output_path=str(job["output"]), high_precision_dtype="fp32", use_zero_point=False,
             log_level=job["level"])


def _exact(name: str) -> str:
    """Model Optimizer reads ``nodes_to_exclude`` as ``re.match`` patterns (prefixes); make a name exact."""
    return re.escape(name) + "$"


def quantize_symmetric_ort(fp32_path: Path, out_path: Path, *, batcher: Collection[np.ndarray] | None,
                           method: str, exclude: list[str], cache_path: Path) -> None:
    """Write a TensorRT-valid INT8 Q/DQ model with ONNX Runtime's static quantizer: S8 activations and S8
    per-channel weights, both symmetric (zero point 0), float biases, Q/DQ on the inputs of
    ``TRT_QUANTIZED_OPS`` only (TensorRT fuses the rest; the most accurate placement on CSTF), ``exclude`` FP32.
    Ranges are read from / written to ``cache_path``; ``batcher`` may be None when that cache exists."""
    try:
        from onnxruntime import quantization as q
    except ImportError:
        raise ExportError("INT8 without Model Optimizer needs onnxruntime (pip install onnxruntime)") from None
    if method not in ORT_METHODS:
        raise ExportError(f"calibration method {method!r} unknown; use one of {', '.join(ORT_METHODS)}")
    nodes = _trt_nodes(fp32_path, exclude)
    cache_arg = {"calibration_cache_path": str(cache_path)} if ort_caches_ranges() else {}
    if batcher is None and not (cache_arg and cache_path.is_file()):
        raise ExportError(f"no calibration images and no calibration cache at {cache_path}")
    if not cache_arg:
        log.info("this onnxruntime has no calibration cache: calibrating every time")
    cache_path.parent.mkdir(parents=True, exist_ok=True)
    extra = {"ActivationSymmetric": True, "WeightSymmetric": True, "QuantizeBias": False,
             "OpTypesToExcludeOutputQuantization": TRT_CALIBRATED_OPS, "CalibPercentile": PERCENTILE}
    if method == "minmax" and batcher is not None and len(batcher) % CALIBRATION_STRIDE == 0:
        extra["CalibStridedMinMax"] = CALIBRATION_STRIDE
    methods = {"minmax": q.CalibrationMethod.MinMax, "entropy": q.CalibrationMethod.Entropy,
               "percentile": q.CalibrationMethod.Percentile}
    reader = None if cache_arg and cache_path.is_file() else calibration_reader(batcher, input_names(fp32_path))
    try:
        q.quantize_static(str(fp32_path), str(out_path), reader, quant_format=q.QuantFormat.QDQ,
                          op_types_to_quantize=TRT_CALIBRATED_OPS, nodes_to_quantize=nodes, per_channel=True,
                          reduce_range=False, activation_type=q.QuantType.QInt8, weight_type=q.QuantType.QInt8,
                          nodes_to_exclude=list(exclude), calibrate_method=methods[method], extra_options=extra,
                          **cache_arg)
    except ValueError as exc:  # e.g. a cache made with another method
        raise ExportError(f"INT8 (ONNX Runtime, symmetric) of {fp32_path}: {exc}") from exc
    float_inputs_for(out_path, exclude)
    check_symmetric(out_path)


def _trt_nodes(fp32_path: Path, exclude: list[str]) -> list[str]:
    """The nodes the fallback quantizes (an empty list would mean "all" to ONNX Runtime: refused)."""
    import onnx

    kept = set(exclude)
    graph = onnx.load(str(fp32_path), load_external_data=False).graph
    nodes = [n.name for n in graph.node if n.op_type in TRT_QUANTIZED_OPS and n.name not in kept]
    if not nodes:
        raise ExportError(f"{fp32_path}: no {'/'.join(TRT_QUANTIZED_OPS)} node left to quantize to INT8")
    return nodes


def ort_caches_ranges() -> bool:
    """Whether this onnxruntime's ``quantize_static`` takes ``calibration_cache_path`` (newer releases; the
    onnxruntime-gpu 1.24 that Model Optimizer 0.47 pins does not)."""
    import inspect

    from onnxruntime.quantization import quantize_static

    return "calibration_cache_path" in inspect.signature(quantize_static).parameters


def float_inputs_for(path: Path, exclude: list[str]) -> int:
    """Give the excluded nodes of the Q/DQ model at ``path`` back their float inputs; returns how many inputs.

    Both quantizers put one Q/DQ pair on a tensor and rewire *every* consumer to the DequantizeLinear, so a
    node kept FP32 still reads an INT8-rounded activation when its producer's output is quantized (ONNX
    Runtime) or a quantized node shares its input (both). Each such input is pointed back at the float tensor
    before the QuantizeLinear; pairs nobody reads any more are dropped."""
    import onnx

    model = onnx.load(str(path))
    graph, names = model.graph, set(exclude)
    producer = {out: node for node in graph.node for out in node.output}
    restored = 0
    for node in (n for n in graph.node if n.name in names):
        for i, tensor in enumerate(node.input):
            source = _float_source(tensor, producer)
            if source is not None:
                node.input[i], restored = source, restored + 1
    if restored:
        _drop_unread_qdq(graph)
        onnx.save(model, str(path))
        log.info("INT8: %d inputs of FP32 nodes read the float tensor again instead of a Q/DQ pair", restored)
    return restored


def _float_source(tensor: str, producer: dict) -> str | None:
    """The float activation behind ``tensor`` if it is the output of a Q -> DQ pair, else None."""
    dq = producer.get(tensor)
    if dq is None or dq.op_type != "DequantizeLinear":
        return None
    q = producer.get(dq.input[0])
    return q.input[0] if q is not None and q.op_type == "QuantizeLinear" else None


def _drop_unread_qdq(graph) -> None:
    """Remove DequantizeLinear then QuantizeLinear nodes whose outputs nothing reads, then their scales and
    zero points."""
    for op_type in ("DequantizeLinear", "QuantizeLinear"):
        read = {name for node in graph.node for name in node.input} | {out.name for out in graph.output}
        for node in [n for n in graph.node if n.op_type == op_type and not any(o in read for o in n.output)]:
            graph.node.remove(node)
    read = {name for node in graph.node for name in node.input} | {out.name for out in graph.output}
    for tensor in [t for t in graph.initializer if t.name not in read]:
        graph.initializer.remove(tensor)


def check_symmetric(path: Path) -> int:
    """Raise ``ExportError`` unless every Q/DQ node of the model at ``path`` has an int8 zero point of 0
    (TensorRT's only INT8 form); returns the number of QuantizeLinear nodes."""
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(path)).graph
    zeros = {t.name: t for t in graph.initializer}
    zeros.update({n.output[0]: n.attribute[0].t for n in graph.node if n.op_type == "Constant" and n.attribute})
    bad = []
    for node in graph.node:
        if node.op_type not in ("QuantizeLinear", "DequantizeLinear"):
            continue
        zp = zeros.get(node.input[2]) if len(node.input) > 2 and node.input[2] else None
        if zp is None or zp.data_type != onnx.TensorProto.INT8 or np.any(numpy_helper.to_array(zp) != 0):
            bad.append(node.name)
    if bad:
        raise ExportError(f"{path}: {len(bad)} Q/DQ nodes are not symmetric INT8 (TensorRT needs an int8 zero "
                          f"point of 0), e.g. {', '.join(bad[:3])}")
    return sum(n.op_type == "QuantizeLinear" for n in graph.node)


def _result_files(cache_path: Path) -> tuple[Path, Path]:
    """Where Model Optimizer's result and its key are kept, beside the caller's cache."""
    return (cache_path.with_name(cache_path.stem + ".modelopt.onnx"),
            cache_path.with_name(cache_path.stem + ".modelopt.key"))


def _result_key(fp32_path: Path, batcher, method: str, exclude: list[str], version: str) -> str:
    """Everything the Q/DQ model depends on: FP32 bytes, method, exclusions, Model Optimizer's version and the
    calibration data: files (path, size, mtime) and preprocessing of a ``CalibrationBatcher``, else the bytes
    of the batches."""
    model = sha256_file(fp32_path)
    if hasattr(batcher, "paths"):
        stats = [(str(Path(p).resolve()), Path(p).stat()) for p in batcher.paths]
        spec = getattr(batcher, "spec", None)
        data = json.dumps({"files": [f"{p}:{st.st_size}:{st.st_mtime_ns}" for p, st in stats],
                           "spec": spec.to_metadata() if hasattr(spec, "to_metadata") else repr(spec),
                           "batch": getattr(batcher, "batch", None)}, sort_keys=True)
    else:
        digest = hashlib.sha256()
        for batch in batcher:
            digest.update(np.ascontiguousarray(batch, dtype=np.float32).tobytes())
        data = digest.hexdigest()
    return cache_key(model, method, "\n".join(sorted(exclude)), data, version)


def _store(model: Path, result: Path, marker: Path, key: str) -> None:
    """Keep the Q/DQ model, then its key (a crash in between leaves no key, so no stale hit)."""
    result.parent.mkdir(parents=True, exist_ok=True)
    marker.unlink(missing_ok=True)
    shutil.copyfile(model, result)
    marker.write_text(key + "\n")
