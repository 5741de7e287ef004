"""TensorRT-target INT8 Q/DQ: symmetric int8 everywhere, excluded nodes float, close to FP32 in ONNX Runtime.

A tiny conv net (input ``images``, output ``detections``) stands in for the detector; the Model Optimizer
tests skip with the reason where ``nvidia-modelopt[onnx]`` does not import.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from cstf_edge.export.errors import ExportError  # noqa: E402
from cstf_edge.export.quantize_modelopt import (  # noqa: E402
    check_symmetric, modelopt_available, ort_caches_ranges, quantize_modelopt, quantize_symmetric_ort)

SIZE = 32
#: the head's output conv and the sigmoid, and the residual Add: its input also feeds a quantized conv, so the
#: quantizers put a Q/DQ pair on that shared tensor and the Add must still read the float one
EXCLUDED = ["/head/cls_out/Conv", "/Sigmoid", "/backbone/Add"]
SHARED = "/backbone/Relu_output_0"
needs_modelopt = pytest.mark.skipif(modelopt_available() is None,
                                    reason="nvidia-modelopt[onnx] is not importable (pip install 'cstf-edge[trt]')")


class Backbone(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.stem, self.conv = torch.nn.Conv2d(3, 16, 3, padding=1), torch.nn.Conv2d(16, 16, 3, padding=1)

    def forward(self, x):
        x = torch.relu(self.stem(x))
        return torch.nn.functional.max_pool2d(x + torch.relu(self.conv(x)), 2)


class Head(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.mid, self.cls_out = torch.nn.Conv2d(16, 32, 3, stride=2, padding=1), torch.nn.Conv2d(32, 8, 1)

    def forward(self, x):
        return self.cls_out(torch.relu(self.mid(x)))


class TinyNet(torch.nn.Module):
    """Two convs with a residual add and a pool, then a head whose output conv (and the sigmoid) stay FP32."""

    def __init__(self):
        super().__init__()
        self.backbone, self.head = Backbone(), Head()

    def forward(self, images):
        x = self.head(self.backbone(images))
        return torch.sigmoid(x.reshape(x.shape[0], 8, -1).transpose(1, 2))


@pytest.fixture(scope="module")
def fp32_model(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("tiny") / "tiny.onnx"
    torch.onnx.export(TinyNet().eval(), torch.rand(1, 3, SIZE, SIZE), str(path), dynamo=False, opset_version=17,
                      input_names=["images"], output_names=["detections"])
    return path


@pytest.fixture(scope="module")
def batches() -> list[np.ndarray]:
    rng = np.random.default_rng(1)
    return [rng.random((1, 3, SIZE, SIZE), dtype=np.float32) for _ in range(8)]


def _run(path: Path, batches: list[np.ndarray]) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return np.concatenate([session.run(None, {"images": b})[0] for b in batches])


def _check_qdq(path: Path, fp32_path: Path, batches: list[np.ndarray], tolerance: float) -> None:
    """Symmetric int8; excluded nodes read no DequantizeLinear (activations and weights stay float) although
    the shared tensor is quantized for its quantized consumer; the output is close to FP32."""
    assert check_symmetric(path) > 0
    graph = onnx.load(str(path)).graph
    assert set(EXCLUDED) <= {n.name for n in onnx.load(str(fp32_path)).graph.node}
    producers = {o: n for n in graph.node for o in n.output}
    for node in (n for n in graph.node if n.name in EXCLUDED):
        fed = [producers[i].op_type for i in node.input if i in producers]
        assert "DequantizeLinear" not in fed, node.name
    assert any(n.op_type == "QuantizeLinear" and n.input[0] == SHARED for n in graph.node)
    reference, quantized = _run(fp32_path, batches), _run(path, batches)
    assert quantized.shape == reference.shape
    assert np.abs(quantized - reference).max() < tolerance


def test_symmetric_ort_fallback(fp32_model, batches, tmp_path):
    out, cache = tmp_path / "int8.onnx", tmp_path / "calib.json"
    quantize_symmetric_ort(fp32_model, out, batcher=batches, method="minmax", exclude=EXCLUDED, cache_path=cache)
    _check_qdq(out, fp32_model, batches, tolerance=0.05)
    if not ort_caches_ranges():
        pytest.skip(f"onnxruntime {ort.__version__} has no calibration cache (calibration_cache_path)")
    assert cache.is_file()
    again = tmp_path / "again.onnx"  # from the range cache, no images
    quantize_symmetric_ort(fp32_model, again, batcher=None, method="minmax", exclude=EXCLUDED, cache_path=cache)
    np.testing.assert_array_equal(_run(again, batches), _run(out, batches))


def test_fallback_when_modelopt_missing(fp32_model, batches, tmp_path, monkeypatch, caplog):
    import cstf_edge.export.quantize_modelopt as qm

    monkeypatch.setattr(qm, "modelopt_available", lambda: None)
    out = tmp_path / "int8.onnx"
    with caplog.at_level(logging.WARNING, logger=qm.__name__):
        qm.quantize_modelopt(fp32_model, out, batcher=batches, method="percentile", exclude=EXCLUDED,
                             cache_path=tmp_path / "calib.json")
    assert "Model Optimizer is not installed" in caplog.text
    _check_qdq(out, fp32_model, batches, tolerance=0.05)


def test_check_symmetric_refuses_asymmetric(fp32_model, batches, tmp_path):
    from onnxruntime import quantization as q

    out = tmp_path / "u8.onnx"
    reader = iter([{"images": b} for b in batches])

    class Reader(q.CalibrationDataReader):
        def get_next(self):
            return next(reader, None)

    q.quantize_static(str(fp32_model), str(out), Reader(), quant_format=q.QuantFormat.QDQ,
                      activation_type=q.QuantType.QUInt8, weight_type=q.QuantType.QInt8)
    with pytest.raises(ExportError, match="not symmetric INT8"):
        check_symmetric(out)


@needs_modelopt
@pytest.mark.slow
def test_modelopt_symmetric_and_cached(fp32_model, batches, tmp_path, monkeypatch):
    import cstf_edge.export.quantize_modelopt as qm

    out, cache = tmp_path / "int8.onnx", tmp_path / "calib.json"
    quantize_modelopt(fp32_model, out, batcher=batches, method="entropy", exclude=EXCLUDED, cache_path=cache)
    _check_qdq(out, fp32_model, batches, tolerance=0.05)
    monkeypatch.setattr(qm, "_run_modelopt", lambda *a, **k: pytest.fail("cache not used"))
    again = tmp_path / "again.onnx"
    quantize_modelopt(fp32_model, again, batcher=batches, method="entropy", exclude=EXCLUDED, cache_path=cache)
    assert again.read_bytes() == out.read_bytes()


@needs_modelopt
def test_modelopt_refuses_percentile(fp32_model, batches, tmp_path):
    with pytest.raises(ExportError, match="not offered by Model Optimizer"):
        quantize_modelopt(fp32_model, tmp_path / "x.onnx", batcher=batches, method="percentile", exclude=[],
                          cache_path=tmp_path / "calib.json")
