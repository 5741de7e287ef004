"""INT8 Q/DQ ONNX for CPU targets with ONNX Runtime's static quantizer.

U8 activations and S8 per-channel weights (the fast pair for ONNX Runtime's x86 and Arm kernels), QDQ format,
operators ``QUANT_OP_TYPES`` only, and never the nodes of ``graph_policy.int8_float_nodes`` nor the groups the
sensitivity sweep keeps in FP32. Tensor ranges come from the calibration batcher (the runtime's
preprocessing) and are cached by ONNX Runtime's ``calibration_cache_path`` under a key of the model hash,
preprocessing, calibration images and method: a second export with the same inputs skips calibration. The
model is quantized with a Concat's inputs and output on one range wherever that costs at most one bit and keeps
ReLU outputs non-negative (``shared_ranges``), so ONNX Runtime copies bytes there instead of requantizing them.
"""
from __future__ import annotations

import itertools
import logging
import tempfile
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from cstf_edge._io import atomic_write_bytes
from cstf_edge.export.calibration import CalibrationBatcher
from cstf_edge.export.errors import ExportError
from cstf_edge.export import ort_layout
from cstf_edge.export.onnx_export import set_metadata
from cstf_edge.export.shared_ranges import share_concat_ranges
from cstf_edge.runtime.artifact import ArtifactInfo

log = logging.getLogger(__name__)

QUANT_OP_TYPES = ["Conv", "Relu", "Mul", "Sigmoid", "Add", "Concat", "MaxPool", "Resize"]  # Relu: folds into Conv
PERCENTILE = 99.999
CALIBRATION_STRIDE = 4  # batches calibrated at once (ONNX Runtime keeps every activation of a stride in memory)


def _quantization():
    try:
        from onnxruntime import quantization
    except ImportError:
        raise ExportError("INT8 for ONNX Runtime needs onnxruntime (pip install onnxruntime)") from None
    return quantization


def feed(names: list[str], batch: np.ndarray) -> dict[str, np.ndarray]:
    """The input dict of a model with inputs ``names``: a two-input model gets the query as its own
    reference (self-correspondence, as the model runs without a reference image)."""
    batch = np.ascontiguousarray(batch, dtype=np.float32)
    return {name: batch for name in names}


def input_names(path: Path) -> list[str]:
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    initializers = {i.name for i in graph.initializer}
    return [i.name for i in graph.input if i.name not in initializers]


def calibration_reader(batcher, names: list[str]):
    """ONNX Runtime's ``CalibrationDataReader`` over a calibration batcher (any sized iterable of float32
    ``[B, 3, H, W]``; ``batcher.batches(start, stop)`` where it has one): ``set_range`` lets the quantizer
    calibrate a few batches at a time (``CalibStridedMinMax``, which bounds memory); ``get_first`` is the probe
    run Model Optimizer makes."""
    q = _quantization()

    class BatcherReader(q.CalibrationDataReader):
        def __init__(self):
            self.first = None
            self.set_range(0, len(batcher))

        def __len__(self) -> int:
            return len(batcher)

        def set_range(self, start_index: int, end_index: int) -> None:
            if hasattr(batcher, "batches"):
                self.batches = iter(batcher.batches(start_index, end_index))
            else:
                self.batches = itertools.islice(iter(batcher), start_index, end_index)

        def rewind(self) -> None:
            self.set_range(0, len(batcher))

        def get_next(self):
            batch = next(self.batches, None)
            return None if batch is None else feed(names, batch)

        def get_first(self):
            if self.first is None:
                batch = next(iter(batcher), None)
                if batch is None:
                    raise ExportError("the calibration set yielded no batch")
                self.first = feed(names, batch)
            return self.first

    return BatcherReader()


def _method(name: str):
    q = _quantization()
    return {"minmax": q.CalibrationMethod.MinMax, "entropy": q.CalibrationMethod.Entropy,
            "percentile": q.CalibrationMethod.Percentile}[name]


def quantize(fp32_path: Path, out_path: Path, *, batcher: CalibrationBatcher | None, method: str,
             cache_path: Path, exclude: list[str] | None = None, only: list[str] | None = None,
             share_ranges: bool = True) -> None:
    """Write a Q/DQ model of ``fp32_path`` (no metadata). ``exclude``: nodes kept FP32; ``only``: quantize
    just these nodes (the sensitivity sweep: their ranges are shared as in the whole model with ``exclude`` FP32).
    Calibration runs unless ``cache_path`` holds its result; the cache keeps the calibrated ranges, and with
    ``share_ranges`` the model gets them with Concat ranges shared (``cstf_edge.export.shared_ranges``). With no
    cache yet and ``share_ranges``, the model is quantized twice (calibrating, then sharing): calibrate first
    with ``share_ranges=False`` where that matters, as the export does."""
    cache_path.parent.mkdir(parents=True, exist_ok=True)
    if not cache_path.is_file():
        _quantize_static(fp32_path, out_path, batcher, method, cache_path, exclude, only)  # calibrates into it
        if not share_ranges:
            return
    with tempfile.TemporaryDirectory(prefix="cstf-ranges-") as tmp:
        ranges = cache_path
        if share_ranges:
            ranges = Path(tmp) / "shared-ranges.json"
            _write_shared_ranges(fp32_path, cache_path, ranges, exclude)
        _quantize_static(fp32_path, out_path, None, method, ranges, exclude, only)


def _write_shared_ranges(fp32_path: Path, cache_path: Path, out: Path, exclude) -> None:
    import onnx
    from onnxruntime.quantization.calibrate import load_tensors_data, save_tensors_data

    graph = onnx.load(str(fp32_path), load_external_data=False).graph
    save_tensors_data(share_concat_ranges(graph, load_tensors_data(cache_path), set(exclude or [])), out)


def _quantize_static(fp32_path: Path, out_path: Path, batcher, method: str, cache_path: Path, exclude,
                     only) -> None:
    """ONNX Runtime's static quantizer with the CPU settings; calibrates (through ``batcher``) only when
    ``cache_path`` holds no ranges yet, and then writes them there."""
    q = _quantization()
    extra = {"CalibPercentile": PERCENTILE}
    if batcher is not None and len(batcher) % CALIBRATION_STRIDE == 0:
        extra["CalibStridedMinMax"] = CALIBRATION_STRIDE
    reader = None if cache_path.is_file() else calibration_reader(batcher, input_names(fp32_path))
    with _root_info_muted():
        q.quantize_static(str(fp32_path), str(out_path), reader,
                          quant_format=q.QuantFormat.QDQ, op_types_to_quantize=QUANT_OP_TYPES, per_channel=True,
                          activation_type=q.QuantType.QUInt8, weight_type=q.QuantType.QInt8,
                          nodes_to_quantize=only or [], nodes_to_exclude=exclude or [],
                          calibrate_method=_method(method), extra_options=extra,
                          calibration_cache_path=str(cache_path))


@contextmanager
def _root_info_muted():
    """ONNX Runtime's quantizer logs a line per shared bias on the root logger at INFO: hundreds for an
    Ultralytics graph. Raise the root level to WARNING for the call."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(max(level, logging.WARNING))
    try:
        yield
    finally:
        root.setLevel(level)


def finish_int8(qdq_path: Path, out_path: Path, info: ArtifactInfo, extra: dict, *,
                onnxruntime: bool) -> ArtifactInfo:
    """Add the artifact metadata (with the number of quantized tensors) to a Q/DQ model and move it atomically
    to ``out_path``. For an ``onnxruntime`` target the graph first takes the forms ONNX Runtime's INT8 kernels run
    fastest (``ort_layout``; the same values)."""
    import onnx

    model = onnx.load(str(qdq_path))
    quantized = sum(n.op_type == "QuantizeLinear" for n in model.graph.node)
    extra = {**extra, "quantized_tensors": quantized}
    if onnxruntime:
        extra.update(ort_layout=ort_layout.SCHEME, **ort_layout.apply(model))
    int8_info = ArtifactInfo(**{**info.__dict__, "precision": "int8", "extra": {**info.extra, **extra}})
    set_metadata(model, int8_info)
    atomic_write_bytes(out_path, model.SerializeToString())
    qdq_path.unlink(missing_ok=True)
    return int8_info


def run_onnx(path: Path, inputs: list[np.ndarray]) -> np.ndarray:
    """Outputs of an ONNX model (CPU) on a list of ``[1, 3, H, W]`` inputs, stacked."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    return np.concatenate([session.run(None, feed(names, x))[0] for x in inputs])
