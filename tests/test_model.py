"""The CSTF detector: shapes, sizes, reference handling, canonical decoded boxes, ONNX export."""
from __future__ import annotations

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from cstf_edge.geometry import canonicalize_rboxes as canonicalize_numpy  # noqa: E402
from cstf_edge.model import ModelConfigError, build_model, check_input_shape  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from cstf_edge.model.cstf_block import Correspondence  # noqa: E402
from cstf_edge.model.rbox_torch import canonicalize_rboxes  # noqa: E402
from cstf_edge.model.saliency import combine_scales, sharpen_peaks  # noqa: E402

NUM_CLASSES = 3
SIZE = 128
ANCHORS_AT_128 = (16 * 16) + (8 * 8) + (4 * 4)

# What an ONNX graph of the detector may hold: ops TensorRT 10 runs natively.
ALLOWED_ONNX_OPS = {
    "Conv", "BatchNormalization", "Sigmoid", "Mul", "Add", "Sub", "Div", "Concat", "Split", "Slice",
    "MaxPool", "AveragePool", "Resize", "Reshape", "Transpose", "MatMul", "Softmax", "ReduceMax",
    "ReduceSum", "ReduceL2", "Log", "Exp", "Clip", "Max", "Min", "Where", "Less", "LessOrEqual",
    "GreaterOrEqual", "Abs", "Floor", "Cos", "Sin", "Softplus", "Unsqueeze", "Squeeze", "Gather",
    "Shape", "Constant", "ConstantOfShape", "Expand", "Range", "Cast", "Neg", "Sqrt", "Pow", "Flatten",
    "Identity", "Equal", "Tile", "Relu", "Greater", "Not", "And", "Or",
}


@pytest.fixture(scope="module")
def model_n():
    torch.manual_seed(0)
    return build_model("cstf-n", NUM_CLASSES).eval()


@pytest.fixture(scope="module")
def images():
    return torch.rand(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(1))


def test_eval_output_shape_and_score_range(model_n, images):
    with torch.no_grad():
        out = model_n(images)
    assert out.shape == (2, ANCHORS_AT_128, 5 + NUM_CLASSES)
    scores = out[..., 5:]
    assert torch.all((scores >= 0) & (scores <= 1))
    assert torch.isfinite(out).all()


def test_train_mode_outputs(images):
    model = build_model("cstf-n", NUM_CLASSES).train()
    out = model(images)
    assert out["cls_logits"].shape == (2, ANCHORS_AT_128, NUM_CLASSES)
    assert out["boxes"].shape == (2, ANCHORS_AT_128, 5)
    assert out["anchors"].shape == (ANCHORS_AT_128, 2)
    assert out["strides"].shape == (ANCHORS_AT_128, 1)
    assert [tuple(s.shape) for s in out["saliency_logits"]] == [(2, 1, 16, 16), (2, 1, 8, 8), (2, 1, 4, 4)]
    # First anchor: centre of the top-left stride-8 cell; last: centre of the bottom-right stride-32 cell.
    assert out["anchors"][0].tolist() == [4.0, 4.0]
    assert out["anchors"][-1].tolist() == [SIZE - 16.0, SIZE - 16.0]


def test_parameter_counts_grow_with_size():
    names = ("cstf-n", "cstf-s", "cstf-m")
    counts = {name: sum(p.numel() for p in build_model(name, 5).parameters()) for name in names}
    assert 2.0e6 <= counts["cstf-n"] <= 3.5e6
    assert counts["cstf-n"] < counts["cstf-s"] < counts["cstf-m"]


def test_missing_reference_is_the_query_itself(model_n, images):
    with torch.no_grad():
        alone = model_n(images)
        self_ref = model_n(images, images)
        other_ref = model_n(images, images.roll(1, dims=0))
    torch.testing.assert_close(alone, self_ref, rtol=1e-5, atol=1e-5)
    # The reference really enters the computation (another image; a mere flip of the same one would not
    # change anything: the correspondence SoftMax is a set operation over reference tokens).
    assert (alone - other_ref).abs().max() > 1e-4


def test_decoded_boxes_are_canonical(model_n, images):
    with torch.no_grad():
        boxes = model_n(images)[..., :5].double()
    assert torch.all(boxes[..., 2] >= boxes[..., 3])
    assert torch.all((boxes[..., 4] >= -math.pi / 2) & (boxes[..., 4] < math.pi / 2))
    np.testing.assert_allclose(canonicalize_numpy(boxes.numpy()), boxes.numpy(), atol=1e-6)


def test_canonicalisation_twin_agrees_with_geometry():
    rng = np.random.default_rng(0)
    boxes = np.column_stack([
        rng.uniform(0, 100, 200), rng.uniform(0, 100, 200), rng.uniform(1, 50, 200),
        rng.uniform(1, 50, 200), rng.uniform(-3 * np.pi, 3 * np.pi, 200)])
    boxes[:20, 3] = boxes[:20, 2]  # squares
    boxes[20:25, 4] = [-np.pi / 2, np.pi / 2, np.pi, -np.pi, 0.0]  # range ends
    expected = canonicalize_numpy(boxes)
    got = canonicalize_rboxes(torch.from_numpy(boxes)).numpy()
    np.testing.assert_allclose(got, expected, atol=1e-9)


def test_correspondence_probabilities_and_confidence():
    torch.manual_seed(0)
    block = Correspondence(c_query=8, c_ref=8, dim=8, heads=2)
    query, ref = torch.randn(1, 8, 4, 4), torch.randn(1, 8, 2, 2)
    context, confidence = block(query, ref, torch.rand(1, 1, 2, 2))
    assert context.shape == (1, 8, 4, 4)
    assert confidence.shape == (1, 4, 4, 4)
    peak, entropy = confidence[:, :2], confidence[:, 2:]
    assert torch.all((peak > 1 / 5 - 1e-6) & (peak <= 1))  # 4 reference tokens + the no-match bin
    assert torch.all((entropy >= 0) & (entropy <= 1 + 1e-6))


@pytest.mark.parametrize("log_temperature", [2.3, 6.0])  # trained-like, and near one-hot rows
def test_correspondence_confidence_equals_the_textbook_softmax_entropy(log_temperature):
    """The block computes the entropy as log Z - E[s]; check it and the context against the plain SoftMax,
    -sum p log p and P @ [v; 0] computed here."""
    torch.manual_seed(1)
    block = Correspondence(c_query=8, c_ref=8, dim=8, heads=2).eval()
    with torch.no_grad():
        block.log_temperature.fill_(log_temperature)
        query, ref, keypoints = torch.randn(2, 8, 4, 4), torch.randn(2, 8, 3, 3), torch.rand(2, 1, 3, 3)
        context, confidence = block(query, ref, keypoints)
        q = F.normalize(block.q_proj(query).reshape(2, 2, 4, 16), dim=2).transpose(2, 3)
        k = F.normalize(block.k_proj(ref).reshape(2, 2, 4, 9), dim=2)
        v = block.v_proj(ref).reshape(2, 2, 4, 9).transpose(2, 3)
        logits = torch.exp(block.log_temperature) * q @ k + block.keypoint_gain * keypoints.reshape(2, 1, 1, 9)
        no_match = block.no_match(query).reshape(2, 2, 16, 1)
        prob = torch.softmax(torch.cat([logits, no_match], dim=-1), dim=-1)
        expected_context = (prob[..., :9] @ v).transpose(2, 3).reshape(2, 8, 4, 4)
        entropy = torch.special.entr(prob).sum(-1) / np.log(10)
    torch.testing.assert_close(context, expected_context, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(confidence[:, :2], prob.amax(-1).reshape(2, 2, 4, 4), atol=1e-6, rtol=1e-5)
    # atol: the difference log Z - E[s] of logits near 400 keeps about 1e-5 of FP32 rounding
    torch.testing.assert_close(confidence[:, 2:], entropy.reshape(2, 2, 4, 4), atol=1e-4, rtol=1e-4)


def _randomize_batchnorms(model) -> None:
    """Non-trivial BatchNorm statistics and affine parameters, in place."""
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.uniform_(-0.2, 0.2)


def test_split_csp_inputs_gives_the_same_numbers_and_keeps_the_original():
    from cstf_edge.model.layers import CSPBlock, HalvesConv, split_csp_inputs

    torch.manual_seed(2)
    model = build_model("cstf-n", num_classes=3)
    _randomize_batchnorms(model)  # non-trivial statistics, so a wrong slice would show
    model.eval()
    split = split_csp_inputs(model)
    x = torch.rand(1, 3, 128, 128)
    with torch.no_grad():
        torch.testing.assert_close(split(x), model(x), atol=1e-5, rtol=1e-5)
    blocks = [m for m in split.modules() if isinstance(m, CSPBlock)]
    assert blocks and all(isinstance(b.cv1, HalvesConv) for b in blocks)
    assert not any(isinstance(m, HalvesConv) for m in model.modules())
    assert set(model.state_dict()) == set(build_model("cstf-n", num_classes=3).state_dict())


def test_fusion_norms_as_convs_give_the_same_numbers():
    from cstf_edge.model.cstf_block import Fusion, fusion_norms_as_convs
    from cstf_edge.model.layers import batchnorm_as_depthwise, split_csp_inputs

    torch.manual_seed(3)
    model = build_model("cstf-n", num_classes=3)
    _randomize_batchnorms(model)  # so a wrong affine map would show
    model.eval()
    converted = fusion_norms_as_convs(split_csp_inputs(model))
    fusions = [m for m in converted.modules() if isinstance(m, Fusion)]
    assert fusions and all(isinstance(f.norm, torch.nn.Conv2d) and f.norm.groups == f.norm.in_channels
                           for f in fusions)
    x = torch.rand(1, 3, 128, 128)
    with torch.no_grad():
        torch.testing.assert_close(converted(x), model(x), atol=1e-4, rtol=1e-4)
    plain = torch.nn.BatchNorm2d(4, affine=False).eval()
    plain.running_mean.uniform_(-1, 1)
    y = torch.rand(2, 4, 5, 5)
    with torch.no_grad():
        torch.testing.assert_close(batchnorm_as_depthwise(plain)(y), plain(y), atol=1e-6, rtol=1e-5)


def test_peak_sharpening_keeps_peaks_and_suppresses_slopes():
    score = torch.tensor([[[[0.1, 0.5, 0.9, 0.5]]]])
    sharp = sharpen_peaks(score)
    assert sharp[0, 0, 0, 2] == pytest.approx(0.9)
    assert sharp[0, 0, 0, 1] < 0.5 * math.exp(-3)


def test_scales_combine_by_maximum_on_the_target_grid():
    fine = torch.zeros(1, 1, 4, 4)
    fine[0, 0, 3, 0] = 0.7
    coarse = torch.full((1, 1, 1, 1), 0.2)
    combined = combine_scales([fine, coarse], (8, 32), target_stride=16)
    assert combined.shape == (1, 1, 2, 2)
    np.testing.assert_allclose(combined[0, 0].numpy(), [[0.2, 0.2], [0.7, 0.2]], rtol=1e-6)


def test_bad_sizes_and_input_shapes_are_refused():
    with pytest.raises(ModelConfigError, match="cstf-n"):
        build_model("cstf-xl")
    with pytest.raises(ModelConfigError, match="100x128"):
        check_input_shape(100, 128)


def test_onnx_export_uses_only_tensorrt_native_ops(model_n, tmp_path):
    onnx = pytest.importorskip("onnx")
    path = tmp_path / "cstf-n.onnx"
    # The TorchScript exporter (dynamo=False), as the export issue uses it.
    torch.onnx.export(model_n, (torch.rand(1, 3, SIZE, SIZE),), str(path), opset_version=17,
                      input_names=["images"], output_names=["detections"], dynamo=False)
    graph = onnx.load(str(path))
    onnx.checker.check_model(graph)
    ops = {node.op_type for node in graph.graph.node}
    assert ops <= ALLOWED_ONNX_OPS, f"ops outside the allow-list: {sorted(ops - ALLOWED_ONNX_OPS)}"
    assert {"Softmax", "MatMul", "MaxPool"} <= ops  # the correspondence and the keypoints are in the graph
    output = graph.graph.output[0].type.tensor_type.shape.dim
    assert [d.dim_value for d in output] == [1, ANCHORS_AT_128, 5 + NUM_CLASSES]
    ort = pytest.importorskip("onnxruntime")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = torch.rand(1, 3, SIZE, SIZE)
    with torch.no_grad():
        expected = model_n(x).numpy()
    np.testing.assert_allclose(session.run(None, {"images": x.numpy()})[0], expected, atol=1e-3, rtol=1e-3)


def test_relu_size_is_cstf_n_with_relu_and_takes_its_weights(model_n, images, tmp_path):
    """``cstf-n-relu``: the same tensors as cstf-n (so cstf-n weights fine-tune into it), every SiLU a ReLU,
    and its INT8 graph folds the ReLUs into the quantized convolutions (no ReLU or SiLU pair left)."""
    from cstf_edge.model.layers import set_activation

    relu = build_model("cstf-n-relu", NUM_CLASSES).eval()
    assert relu.spec.activation == "relu" and model_n.spec.activation == "silu"
    assert not any(isinstance(m, torch.nn.SiLU) for m in relu.modules())
    assert sum(isinstance(m, torch.nn.ReLU) for m in relu.modules()) == sum(
        isinstance(m, torch.nn.SiLU) for m in model_n.modules())
    relu.load_state_dict(model_n.state_dict())  # identical tensors
    with torch.no_grad():
        assert not torch.allclose(relu(images), model_n(images))  # the activation is really different
    with pytest.raises(Exception, match="unknown activation"):
        set_activation(relu, "gelu")


def test_relu_model_int8_graph_has_no_activation_ops(tmp_path, monkeypatch):
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    import cstf_edge.export.quantize_ort as quantize_ort
    from onnxruntime.quantization import CalibrationDataReader

    torch.manual_seed(0)
    model = build_model("cstf-n-relu", NUM_CLASSES).eval()
    path = tmp_path / "relu.onnx"
    torch.onnx.export(model, (torch.rand(1, 3, SIZE, SIZE),), str(path), opset_version=17, input_names=["images"],
                      output_names=["detections"], dynamo=False)
    assert sum(n.op_type == "Relu" for n in onnx.load(str(path)).graph.node) > 50

    class Batches(CalibrationDataReader):
        def __init__(self):
            self.items = iter([{"images": np.random.default_rng(i).random((1, 3, SIZE, SIZE), np.float32)}
                               for i in range(2)])

        def get_next(self):
            return next(self.items, None)

    monkeypatch.setattr(quantize_ort, "calibration_reader", lambda batcher, names: Batches())
    quantize_ort.quantize(path, tmp_path / "relu.int8.onnx", batcher=None, method="minmax",
                          cache_path=tmp_path / "calib.cache")
    ops = [n.op_type for n in onnx.load(str(tmp_path / "relu.int8.onnx")).graph.node]
    assert "Relu" not in ops and ops.count("QuantizeLinear") > 50
