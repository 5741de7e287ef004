"""Shared Concat ranges for ONNX Runtime's INT8 export (cstf_edge.export.shared_ranges)."""
from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper  # noqa: E402

from cstf_edge.export.shared_ranges import MAX_SPAN_RATIO, shared_ranges  # noqa: E402


def _graph(nodes):
    return helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 8, 8])],
                             [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])


def test_concat_inputs_and_output_share_the_union():
    graph = _graph([helper.make_node("Concat", ["a", "b"], ["y"], name="cat", axis=1)])
    ranges = {"a": (0.0, 10.0), "b": (0.0, 6.0), "y": (0.0, 10.0), "x": (-1.0, 1.0)}
    shared = shared_ranges(graph, ranges)
    assert shared["a"] == shared["b"] == shared["y"] == (0.0, 10.0)
    assert shared["x"] == (-1.0, 1.0)
    assert ranges["b"] == (0.0, 6.0)  # the input dict is left as it was


def test_a_concat_that_would_more_than_double_a_range_is_left_alone():
    graph = _graph([helper.make_node("Concat", ["a", "b"], ["y"], name="cat", axis=1)])
    ranges = {"a": (0.0, 10.0), "b": (0.0, 10.0 / (MAX_SPAN_RATIO * 1.2)), "y": (0.0, 10.0)}
    assert shared_ranges(graph, ranges) == ranges
    ranges["b"] = (0.0, 10.0 / (MAX_SPAN_RATIO * 0.9))
    assert shared_ranges(graph, ranges)["b"] == (0.0, 10.0)


def test_a_maxpool_carries_the_union_back_to_its_input_whatever_the_signs():
    """A MaxPool's (or Resize's) input and output are joined unconditionally: ONNX Runtime runs it in uint8
    only with equal parameters on both sides (and no ReLU is removed there)."""
    graph = _graph([helper.make_node("MaxPool", ["x"], ["p"], name="pool", kernel_shape=[3, 3]),
                    helper.make_node("Concat", ["p", "b"], ["y"], name="cat", axis=1)])
    ranges = {"x": (-1.0, 4.0), "p": (0.0, 4.0), "b": (0.0, 6.0), "y": (0.0, 6.0)}
    shared = shared_ranges(graph, ranges)
    assert shared["x"] == shared["p"] == (-1.0, 4.0)  # joined though p alone is non-negative
    assert shared["b"] == (0.0, 6.0)  # the Concat would make b negative: left alone
    ranges["x"] = (0.0, 3.5)
    assert {shared_ranges(graph, ranges)[n] for n in ranges} == {(0.0, 6.0)}


def test_the_union_runs_through_maxpool_and_resize_and_chained_concats():
    graph = _graph([
        helper.make_node("MaxPool", ["a"], ["p"], name="pool", kernel_shape=[3, 3]),
        helper.make_node("Concat", ["a", "p"], ["c1"], name="cat1", axis=1),
        helper.make_node("Resize", ["c1", "", "s"], ["r"], name="up", mode="nearest"),
        helper.make_node("Concat", ["r", "b"], ["y"], name="cat2", axis=1),
    ])
    ranges = {"a": (0.0, 4.0), "p": (0.0, 4.0), "c1": (0.0, 4.0), "r": (0.0, 4.0), "b": (0.0, 6.0), "y": (0.0, 6.0)}
    shared = shared_ranges(graph, ranges)
    assert {shared[n] for n in ranges} == {(0.0, 6.0)}


def test_a_non_negative_range_never_takes_in_negative_values():
    """ONNX Runtime's quantizer removes a ReLU whose output range starts at 0: widening it below 0 would let
    negative values through."""
    graph = _graph([helper.make_node("Concat", ["a", "b"], ["y"], name="cat", axis=1)])
    ranges = {"a": (0.0, 10.0), "b": (-3.0, 6.0), "y": (-3.0, 10.0)}
    assert shared_ranges(graph, ranges) == ranges


def test_nodes_kept_fp32_join_nothing():
    graph = _graph([helper.make_node("Concat", ["a", "b"], ["y"], name="cat", axis=1)])
    ranges = {"a": (0.0, 10.0), "b": (0.0, 6.0), "y": (0.0, 10.0)}
    assert shared_ranges(graph, ranges, float_nodes={"cat"}) == ranges


def test_onnxruntime_quantizer_gives_a_concat_one_scale(tmp_path, monkeypatch):
    """Through the export's quantize(): the Q/DQ model's Concat inputs carry the output's scale and zero point,
    so ONNX Runtime copies them; without sharing they differ. The calibration cache keeps the raw ranges."""
    pytest.importorskip("onnxruntime")
    from onnx import numpy_helper
    from onnxruntime.quantization import CalibrationDataReader

    import cstf_edge.export.quantize_ort as quantize_ort

    rng = np.random.default_rng(0)
    weights = rng.normal(size=(4, 2, 1, 1)).astype(np.float32)
    w1, w2 = numpy_helper.from_array(weights, "w1"), numpy_helper.from_array(1.3 * weights, "w2")  # spans 1 : 1.3
    nodes = [helper.make_node("Conv", ["x", "w1"], ["a"], name="conv1"),
             helper.make_node("Conv", ["x", "w2"], ["b"], name="conv2"),
             helper.make_node("Concat", ["a", "b"], ["c"], name="cat", axis=1),
             helper.make_node("Conv", ["c", "w3"], ["y"], name="conv3")]
    graph = _graph(nodes)
    graph.initializer.extend([w1, w2, numpy_helper.from_array(rng.normal(size=(2, 8, 1, 1)).astype(np.float32), "w3")])
    path = tmp_path / "cat.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))

    class Batches(CalibrationDataReader):
        def __init__(self):
            self.items = iter([{"x": rng.normal(size=(1, 2, 8, 8)).astype(np.float32)} for _ in range(4)])

        def get_next(self):
            return next(self.items, None)

    monkeypatch.setattr(quantize_ort, "calibration_reader", lambda batcher, names: Batches())

    def concat_params(share: bool, only=None):
        out = tmp_path / f"cat.{share}.int8.onnx"
        quantize_ort.quantize(path, out, batcher=None, method="minmax", cache_path=tmp_path / "calib.json",
                              share_ranges=share, only=only)
        model = onnx.load(str(out))
        values = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
        producers = {o: n for n in model.graph.node for o in n.output}
        cat = next(n for n in model.graph.node if n.op_type == "Concat")
        quant = next(n for n in model.graph.node if n.op_type == "QuantizeLinear" and n.input[0] == cat.output[0])
        inputs = [producers[i] for i in cat.input]
        assert all(n.op_type == "DequantizeLinear" for n in inputs)
        return [(float(values[n.input[1]]), int(values[n.input[2]])) for n in [*inputs, quant]]

    separate = concat_params(False)
    assert separate[0] != separate[2]  # conv1's narrower range, calibrated on its own
    shared = concat_params(True)
    assert len(set(shared)) == 1 and shared[0] == separate[2]
    assert concat_params(False) == separate  # the cache was not changed by sharing
    # The sensitivity sweep quantizes one group at a time with the ranges the whole model gets.
    assert concat_params(True, only=["conv1", "cat"]) == shared
