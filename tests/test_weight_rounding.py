"""Sum-preserving rounding of convolution weights onto the INT8 grid (``export/weight_rounding.py``)."""
from __future__ import annotations

import numpy as np
import pytest

from cstf_edge.export.weight_rounding import INT8_MAX, round_conv_weights, round_to_int8_grid

onnx = pytest.importorskip("onnx")


def _weights(seed: int = 0, shape=(32, 3, 3, 3)) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.normal(size=shape) * rng.uniform(0.2, 9.0, size=(shape[0], 1, 1, 1))).astype(np.float32)


def _steps(weight: np.ndarray, rounded: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    scale = np.abs(weight.reshape(len(weight), -1)).max(1) / INT8_MAX
    shape = (-1,) + (1,) * (weight.ndim - 1)
    return rounded / scale.reshape(shape), (rounded - weight) / scale.reshape(shape)


def test_rounded_weights_lie_on_the_grid_and_keep_each_channel_maximum():
    weight = _weights()
    rounded = round_to_int8_grid(weight)
    levels, _ = _steps(weight, rounded)
    np.testing.assert_allclose(levels, np.round(levels), atol=1e-3)
    assert np.abs(levels).max() <= INT8_MAX + 1e-3
    np.testing.assert_allclose(np.abs(rounded).reshape(32, -1).max(1), np.abs(weight).reshape(32, -1).max(1),
                               rtol=1e-6)


def test_each_kernel_slice_errors_sum_to_at_most_half_a_step():
    weight = _weights(1)
    _, error = _steps(weight, round_to_int8_grid(weight))
    assert np.abs(error).max() <= 1.0 + 1e-4  # no weight moves by more than one step
    assert np.abs(error.sum(axis=(2, 3))).max() <= 0.5 + 1e-4
    scale = (np.abs(weight.reshape(32, -1)).max(1) / INT8_MAX)[:, None, None, None]
    _, nearest = _steps(weight, np.round(weight / scale) * scale)
    assert np.abs(nearest.sum(axis=(2, 3))).max() > 0.5  # what nearest rounding does on this many slices


def test_on_a_flat_patch_the_output_moves_less_than_with_nearest_rounding():
    """A kernel over a constant patch ``v`` outputs ``v * sum(w)``: the error is the sum of the slice errors."""
    weight = _weights(2, shape=(64, 3, 3, 3))
    scale = (np.abs(weight.reshape(64, -1)).max(1) / INT8_MAX)[:, None, None, None]
    nearest = np.round(weight / scale) * scale
    ours = round_to_int8_grid(weight)
    patch = np.array([0.8, 0.5, 0.3], np.float32)[None, :, None, None]  # an RGB value, constant over the kernel
    out_error = lambda w: np.abs(((w - weight) * patch).sum(axis=(1, 2, 3)))  # noqa: E731
    assert out_error(ours).mean() < 0.5 * out_error(nearest).mean()


def test_zero_and_tiny_channels_are_left_valid():
    weight = _weights(3, shape=(4, 2, 3, 3))
    weight[1] = 0.0
    weight[2] = 1e-12
    rounded = round_to_int8_grid(weight)
    assert np.isfinite(rounded).all() and not rounded[1].any()


def test_pointwise_kernels_round_to_nearest_and_depthwise_kernels_work():
    pointwise = _weights(7, (16, 8, 1, 1))
    scale = (np.abs(pointwise.reshape(16, -1)).max(1) / INT8_MAX)[:, None, None, None]
    np.testing.assert_allclose(round_to_int8_grid(pointwise), np.round(pointwise / scale) * scale, rtol=0, atol=1e-6)
    depthwise = _weights(8, (16, 1, 3, 3))
    _, error = _steps(depthwise, round_to_int8_grid(depthwise))
    assert np.abs(error.sum(axis=(2, 3))).max() <= 0.5 + 1e-4


def _conv_model(path, weights: dict[str, np.ndarray], shared: bool = False):
    from onnx import TensorProto, helper, numpy_helper

    nodes, inits, previous = [], [], "x"
    for i, (name, w) in enumerate(weights.items()):
        wname = "w0" if shared else f"w{i}"
        if not shared or i == 0:
            inits.append(numpy_helper.from_array(w, wname))
        nodes.append(helper.make_node("Conv", [previous, wname], [f"y{i}"], name=name, pads=[1, 1, 1, 1]))
        previous = f"y{i}"
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 8, 8])],
                              [helper.make_tensor_value_info(previous, TensorProto.FLOAT, None)], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))


def _initializers(path) -> dict[str, np.ndarray]:
    from onnx import numpy_helper

    return {i.name: numpy_helper.to_array(i) for i in onnx.load(str(path)).graph.initializer}


def test_round_conv_weights_skips_excluded_and_shared_weights(tmp_path):
    a, b = _weights(4, (4, 4, 3, 3)), _weights(5, (4, 4, 3, 3))
    _conv_model(tmp_path / "m.onnx", {"/a/Conv": a, "/b/Conv": b})
    assert round_conv_weights(tmp_path / "m.onnx", tmp_path / "r.onnx", exclude=["/b/Conv"]) == 1
    found = _initializers(tmp_path / "r.onnx")
    np.testing.assert_array_equal(found["w0"], round_to_int8_grid(a))
    np.testing.assert_array_equal(found["w1"], b)
    assert round_conv_weights(tmp_path / "m.onnx", tmp_path / "o.onnx", only=["/b/Conv"]) == 1
    found = _initializers(tmp_path / "o.onnx")
    np.testing.assert_array_equal(found["w0"], a)
    np.testing.assert_array_equal(found["w1"], round_to_int8_grid(b))
    _conv_model(tmp_path / "s.onnx", {"/a/Conv": a, "/b/Conv": a}, shared=True)
    assert round_conv_weights(tmp_path / "s.onnx", tmp_path / "rs.onnx", exclude=[]) == 0


def test_round_conv_weights_leaves_float16_weights_alone(tmp_path):
    half = _weights(9, (4, 4, 3, 3)).astype(np.float16)
    _conv_model(tmp_path / "h.onnx", {"/a/Conv": half})
    assert round_conv_weights(tmp_path / "h.onnx", tmp_path / "r.onnx") == 0
    found = _initializers(tmp_path / "r.onnx")["w0"]
    assert found.dtype == np.float16 and np.array_equal(found, half)


def test_onnx_runtime_quantizer_keeps_the_rounded_weights_exactly(tmp_path):
    """The quantizer finds the weights on its grid (same scale, no re-rounding): its dequantized weights are
    ours."""
    q = pytest.importorskip("onnxruntime.quantization")
    weight = _weights(6, (8, 4, 3, 3))
    _conv_model(tmp_path / "m.onnx", {"/a/Conv": weight})
    round_conv_weights(tmp_path / "m.onnx", tmp_path / "r.onnx", exclude=[])

    class Reader(q.CalibrationDataReader):
        def __init__(self):
            self.items = iter([{"x": np.random.default_rng(0).random((1, 4, 8, 8), dtype=np.float32)}])

        def get_next(self):
            return next(self.items, None)

    q.quantize_static(str(tmp_path / "r.onnx"), str(tmp_path / "q.onnx"), Reader(), quant_format=q.QuantFormat.QDQ,
                      per_channel=True, activation_type=q.QuantType.QUInt8, weight_type=q.QuantType.QInt8)
    model = onnx.load(str(tmp_path / "q.onnx"))
    found = _initializers(tmp_path / "q.onnx")
    dq = next(n for n in model.graph.node if n.op_type == "DequantizeLinear" and n.input[0] in found
              and found[n.input[0]].dtype == np.int8)
    levels, scale = found[dq.input[0]].astype(np.float32), found[dq.input[1]]
    np.testing.assert_allclose(levels * scale[:, None, None, None], round_to_int8_grid(weight), rtol=0, atol=1e-7)
