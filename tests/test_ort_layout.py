"""ONNX Runtime's fast INT8 graph forms (cstf_edge.export.ort_layout): the same bytes out, the form changed."""
from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from cstf_edge.export.ort_layout import apply, gather_nearest_upsamples, pad_input_channels  # noqa: E402

SHAPE = [1, 4, 6, 5]


def _model(mode="nearest", coordinates="asymmetric", scales=(1, 1, 2, 3), out_scale=0.05, readers=1, **resize_attrs):
    """x -> Q/DQ -> 1x1 Conv (Q/DQ weights) -> Q/DQ -> Resize -> Q/DQ (scale ``out_scale``) -> y."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(np.float32(0.05), "s"), numpy_helper.from_array(np.uint8(3), "z"),
             numpy_helper.from_array(np.float32(out_scale), "s_out"),
             numpy_helper.from_array(rng.integers(-60, 60, (4, 4, 1, 1)).astype(np.int8), "w"),
             numpy_helper.from_array(np.float32(0.02), "ws"), numpy_helper.from_array(np.int8(0), "wz"),
             numpy_helper.from_array(np.array(scales, np.float32), "scales")]
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["xq"]),
             helper.make_node("DequantizeLinear", ["xq", "s", "z"], ["xd"]),
             helper.make_node("DequantizeLinear", ["w", "ws", "wz"], ["wd"]),
             helper.make_node("Conv", ["xd", "wd"], ["c"]),
             helper.make_node("QuantizeLinear", ["c", "s", "z"], ["cq"]),
             helper.make_node("DequantizeLinear", ["cq", "s", "z"], ["cd"]),
             helper.make_node("Resize", ["cd", "", "scales"], ["r"], name="up", mode=mode,
                              coordinate_transformation_mode=coordinates, nearest_mode="floor", **resize_attrs),
             helper.make_node("QuantizeLinear", ["r", "s_out", "z"], ["rq"]),
             helper.make_node("DequantizeLinear", ["rq", "s_out", "z"], ["y"])]
    out_shape = [int(d * f) for d, f in zip(SHAPE, scales)]
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, out_shape)]
    if readers == 2:
        nodes.append(helper.make_node("Relu", ["r"], ["y2"]))
        outputs.append(helper.make_tensor_value_info("y2", TensorProto.FLOAT, out_shape))
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, SHAPE)], outputs,
                              inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _run(model, x, level=ort.GraphOptimizationLevel.ORT_ENABLE_ALL):
    options = ort.SessionOptions()
    options.graph_optimization_level = level
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})


@pytest.mark.parametrize("level", [ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
                                   ort.GraphOptimizationLevel.ORT_ENABLE_ALL])
def test_the_rewritten_upsample_gives_the_same_bytes(level):
    model = _model()
    x = np.random.default_rng(1).uniform(-1, 10, SHAPE).astype(np.float32)
    before = _run(model, x, level)[0]
    assert gather_nearest_upsamples(model) == 1
    ops = [n.op_type for n in model.graph.node]
    assert "Resize" not in ops and ops.count("Gather") == 2 and ops.count("Transpose") == 2
    after = _run(model, x, level)[0]
    assert after.shape == (1, 4, 12, 15)
    np.testing.assert_array_equal(after, before)
    np.testing.assert_array_equal(after[:, :, ::2, ::3], after[:, :, 1::2, 2::3])  # a plain repeat


@pytest.mark.parametrize("kwargs", [
    {"mode": "linear"},  # not nearest
    {"coordinates": "half_pixel"},  # another sampling grid
    {"scales": (1, 1, 1.5, 2)},  # not a whole-number factor
    {"scales": (1, 2, 2, 2)},  # resizes channels
    {"out_scale": 0.07},  # requantizes: ONNX Runtime runs it in float
    {"readers": 2},  # its float output is read elsewhere
    {"axes": [0, 1, 3, 2]},  # opset 18's axes reorder the scales
])
def test_other_resizes_are_left_alone(kwargs):
    model = _model(**kwargs)
    if "axes" in kwargs:
        model.opset_import[0].version = 18
    assert gather_nearest_upsamples(model) == 0
    assert [n.op_type for n in model.graph.node].count("Resize") == 1


def _conv_model(in_channels=3, out_channels=16, groups=1, weight_zero=0):
    """x -> Q/DQ -> 3x3 Conv (per-channel int8 weights, bias) -> Q/DQ -> y."""
    rng = np.random.default_rng(2)
    shape = [1, in_channels, 9, 7]
    weights = rng.integers(-100, 100, (out_channels, in_channels // groups, 3, 3)).astype(np.int8)
    inits = [numpy_helper.from_array(np.float32(0.02), "s"), numpy_helper.from_array(np.uint8(5), "z"),
             numpy_helper.from_array(weights, "w"),
             numpy_helper.from_array(rng.uniform(0.001, 0.01, out_channels).astype(np.float32), "ws"),
             numpy_helper.from_array(np.full(out_channels, weight_zero, np.int8), "wz"),
             numpy_helper.from_array(rng.normal(0, 0.5, out_channels).astype(np.float32), "b"),
             numpy_helper.from_array(np.float32(0.03), "s_out")]
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["xq"]),
             helper.make_node("DequantizeLinear", ["xq", "s", "z"], ["xd"]),
             helper.make_node("DequantizeLinear", ["w", "ws", "wz"], ["wd"], axis=0),
             helper.make_node("Conv", ["xd", "wd", "b"], ["c"], name="stem", pads=[1, 1, 1, 1], strides=[2, 2],
                              group=groups),
             helper.make_node("QuantizeLinear", ["c", "s_out", "z"], ["cq"]),
             helper.make_node("DequantizeLinear", ["cq", "s_out", "z"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, out_channels, 5, 4])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), shape


@pytest.mark.parametrize("level", [ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
                                   ort.GraphOptimizationLevel.ORT_ENABLE_ALL])
def test_a_three_channel_convolution_padded_to_four_gives_the_same_bytes(level):
    model, shape = _conv_model()
    x = np.random.default_rng(3).uniform(0, 5, shape).astype(np.float32)
    before = _run(model, x, level)[0]
    assert apply(model) == {"gathered_upsamples": 0, "padded_convs": 1}
    weights = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    padded = weights["stem/padded_weight"]
    assert padded.shape == (16, 4, 3, 3) and not padded[:, 3].any()
    assert [n.op_type for n in model.graph.node].count("Pad") == 1
    read = {name for node in model.graph.node for name in node.input}
    assert "xd" not in read and not [n for n in model.graph.node if "xd" in n.output]  # the old DQ is gone
    np.testing.assert_array_equal(_run(model, x, level)[0], before)


@pytest.mark.parametrize("kwargs", [
    {"in_channels": 4},  # already a multiple of 4
    {"out_channels": 8},  # too few outputs for the kernel that padding would reach
    {"in_channels": 6, "groups": 3, "out_channels": 18},  # grouped
    {"weight_zero": 1},  # asymmetric weights: that kernel takes symmetric ones only
])
def test_other_convolutions_are_not_padded(kwargs):
    model, _ = _conv_model(**kwargs)
    assert pad_input_channels(model) == 0
    assert "Pad" not in [n.op_type for n in model.graph.node]


def test_per_channel_quantized_upsamples_are_left_alone():
    """New Q/DQ nodes on NHWC tensors could not keep a per-channel axis: such a Resize stays."""
    model = _model()
    graph = model.graph
    graph.initializer.extend([numpy_helper.from_array(np.full(4, 0.05, np.float32), "s_pc"),
                              numpy_helper.from_array(np.full(4, 3, np.uint8), "z_pc")])
    for node in graph.node:
        if node.output[0] in ("cq", "cd", "rq", "y"):
            node.input[1:3] = ["s_pc", "z_pc"]
            node.attribute.append(helper.make_attribute("axis", 1))
    assert gather_nearest_upsamples(model) == 0


def test_onnx_runtime_runs_the_gathers_on_uint8():
    """In ONNX Runtime's optimised graph the Gathers read quantized tensors (no DequantizeLinear before them)."""
    model = _model()
    gather_nearest_upsamples(model)
    options = ort.SessionOptions()
    options.optimized_model_filepath = str(_tmp_file("optimized.onnx"))
    ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    optimized = onnx.load(options.optimized_model_filepath)
    producers = {out: node.op_type for node in optimized.graph.node for out in node.output}
    gathers = [n for n in optimized.graph.node if n.op_type == "Gather"]
    assert len(gathers) == 2 and "Resize" not in producers.values()
    assert all(producers.get(n.input[0]) != "DequantizeLinear" for n in gathers)


def _tmp_file(name):
    import tempfile
    from pathlib import Path

    return Path(tempfile.mkdtemp(prefix="cstf-ort-layout-")) / name


def test_weights_scaled_per_input_channel_are_not_padded():
    model, _ = _conv_model()
    graph = model.graph
    graph.initializer.extend([numpy_helper.from_array(np.full(3, 0.01, np.float32), "ws_in"),
                              numpy_helper.from_array(np.zeros(3, np.int8), "wz_in")])
    weight_dq = next(n for n in graph.node if n.output[0] == "wd")
    weight_dq.input[1:3] = ["ws_in", "wz_in"]
    del weight_dq.attribute[:]
    weight_dq.attribute.append(helper.make_attribute("axis", 1))
    assert pad_input_channels(model) == 0


def test_only_orphaned_dequantize_nodes_go_and_graph_outputs_stay():
    """After padding, the convolution's former input DequantizeLinear goes; one that is a graph output, or is
    read inside a subgraph, stays."""
    for keep in ("output", "subgraph"):
        model, shape = _conv_model()
        graph = model.graph
        if keep == "output":
            graph.output.append(helper.make_tensor_value_info("xd", TensorProto.FLOAT, shape))
        else:
            branch = helper.make_graph([helper.make_node("Identity", ["xd"], ["branch_out"])], "branch", [],
                                       [helper.make_tensor_value_info("branch_out", TensorProto.FLOAT, shape)])
            graph.initializer.append(numpy_helper.from_array(np.array(True), "flag"))
            graph.node.append(helper.make_node("If", ["flag"], ["chosen"], then_branch=branch, else_branch=branch))
            graph.output.append(helper.make_tensor_value_info("chosen", TensorProto.FLOAT, shape))
        assert apply(model)["padded_convs"] == 1
        assert any(n.output[0] == "xd" for n in model.graph.node), keep
    model, _ = _conv_model()
    apply(model)
    assert not any(n.output[0] == "xd" for n in model.graph.node)
    assert "w" not in {i.name for i in model.graph.initializer}  # the unpadded weights are gone too
