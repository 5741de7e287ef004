"""Graph forms that ONNX Runtime's CPU INT8 kernels run fastest; the same uint8 values, bit for bit.

ONNX Runtime runs a Q/DQ convolution as a channels-last (NHWC) ``QLinearConv``. Two spots of an exported Q/DQ
graph fall off its fast paths (ONNX Runtime 1.32 profiles of cstf-n INT8 at 1024 x 1024, 2-core AMD EPYC):

- **Nearest upsampling.** The transpose optimizer carries a uint8 nearest ``Resize`` between two NHWC
  convolutions into NHWC, where its kernel has no fast path: the neck's 64 -> 128 upsample of 128 channels took
  1.4 ms, where an NCHW one of half the size took 0.03 ms. :func:`gather_nearest_upsamples` writes it as an
  explicit NCHW -> NHWC ``Transpose``, a ``Gather`` of rows, one of columns and a ``Transpose`` back: the Gathers
  copy whole pixels and the transposes cancel against ONNX Runtime's own (0.08 ms).
- **Convolutions over 3 channels.** The symmetric INT8 convolution kernels need a multiple of 4 input channels;
  the 3-channel stem fell back to a generic im2col path, 3.5 ms where FP32 took 1.6 ms.
  :func:`pad_input_channels` pads the quantized input with zero-point channels (a uint8 ``Pad``, 0.06 ms) and
  the weights with zeros: 1.9 ms. The CSTF fusions' first convolutions (an odd channel count: 197 and 325
  in cstf-n) are padded to the next multiple of 4 too. (On Arm64 ONNX Runtime uses that kernel only from 64 input channels.)

Every tensor a rewrite adds carries the scale and zero point of the one it replaces, so ONNX Runtime drops the
Q/DQ pairs and moves the same bytes. For ONNX Runtime targets only; TensorRT builds from the plain Q/DQ graph.
"""
from __future__ import annotations

import logging
from collections import Counter

import numpy as np

log = logging.getLogger(__name__)

# Recorded in ONNX Runtime INT8 artifacts. Changing what the rewrites do means a new SCHEME *and* a new
# onnx_export.EXPORT_REVISION: cstf-n's artifacts are remade by revision, the peers' by this value.
SCHEME = "ort-int8-layout-v1"
TO_NHWC, TO_NCHW = [0, 2, 3, 1], [0, 3, 1, 2]
CHANNEL_MULTIPLE = 4  # input channels ONNX Runtime's symmetric x86 INT8 convolution kernels take
KERNEL_MIN_OUTPUT_CHANNELS = 16  # the fewest output channels they take
KERNEL_OUTPUT_ALIGNMENT = 4  # and a multiple of this


def apply(model) -> dict[str, int]:
    """Both rewrites, in place; how many of each were made (for the artifact's metadata). A graph the rewrites
    leave invalid is an :class:`ExportError` naming them."""
    import onnx

    from cstf_edge.export.errors import ExportError

    counts = {"gathered_upsamples": gather_nearest_upsamples(model), "padded_convs": pad_input_channels(model)}
    if any(counts.values()):
        _drop_unread(model.graph)
        try:
            onnx.checker.check_model(model)
        except onnx.checker.ValidationError as exc:
            raise ExportError(f"the ONNX Runtime INT8 layout rewrites ({SCHEME}) left an invalid graph: "
                              f"{str(exc).splitlines()[0]}") from None
        log.info("INT8 layout for ONNX Runtime: %d upsample(s) as NHWC Gathers, %d convolution(s) padded to a "
                 "multiple of %d input channels", counts["gathered_upsamples"], counts["padded_convs"],
                 CHANNEL_MULTIPLE)
    return counts


def gather_nearest_upsamples(model) -> int:
    """Rewrite in place every Q/DQ-wrapped nearest Resize of a 4-D tensor of static height and width by
    whole-number factors (``asymmetric`` coordinates, ``floor`` rounding: what PyTorch exports for
    ``nn.Upsample``); returns how many. A Resize whose input is not a DequantizeLinear, whose output is not read
    by exactly one QuantizeLinear with the same scale and zero point, or that is not such an upsample is left
    alone (ONNX Runtime would run it in float, or it is no plain repeat)."""
    from onnx import shape_inference

    graph = model.graph
    shapes = _static_shapes(shape_inference.infer_shapes(model, strict_mode=False).graph)
    constants = _constants(graph)
    count = 0
    for resize in [n for n in graph.node if n.op_type == "Resize"]:
        plan = _upsample_plan(graph, resize, shapes, constants)
        if plan is not None:
            _replace(graph, resize, _upsample_nodes(graph, resize, *plan))
            count += 1
    return count


def pad_input_channels(model) -> int:
    """Give every Q/DQ convolution (one group, int8 weights with zero zero points, at least
    ``KERNEL_MIN_OUTPUT_CHANNELS`` output channels in a multiple of 4) whose input channels are not a multiple
    of ``CHANNEL_MULTIPLE`` extra input channels: zero-point bytes padded onto its quantized input, zero
    weights; returns how many. The extra channels add exactly zero to every sum."""
    from onnx import helper, numpy_helper

    graph = model.graph
    constants = _constants(graph)
    producers = {out: node for node in graph.node for out in node.output}
    readers = Counter(name for node in graph.node for name in node.input)
    count = 0
    for conv in [n for n in graph.node if n.op_type == "Conv"]:
        plan = _pad_plan(conv, producers, readers, constants)
        if plan is None:
            continue
        dequantize, weights, extra = plan
        name = conv.name or conv.output[0]
        padded = np.pad(weights, [(0, 0), (0, extra)] + [(0, 0)] * (weights.ndim - 2))
        weight_dq = producers[conv.input[1]]
        graph.initializer.append(numpy_helper.from_array(padded, f"{name}/padded_weight"))
        weight_dq.input[0] = f"{name}/padded_weight"
        graph.initializer.append(numpy_helper.from_array(
            np.array([0, 0, 0, 0, 0, extra, 0, 0], np.int64), f"{name}/channel_pads"))
        scale, zero = dequantize.input[1:3]
        nodes = [helper.make_node("Pad", [dequantize.input[0], f"{name}/channel_pads", zero], [f"{name}/padded"],
                                  mode="constant", name=f"{name}/pad_channels"),
                 helper.make_node("DequantizeLinear", [f"{name}/padded", scale, zero], [f"{name}/padded_dq"],
                                  name=f"{name}/padded_DQ")]
        _insert_before(graph, conv, nodes)
        conv.input[0] = f"{name}/padded_dq"
        count += 1
    return count


def _pad_plan(conv, producers, readers, constants):
    """``(input DequantizeLinear, int8 weights, channels to add)`` when ``conv`` should be padded, else None."""
    dequantize, weight_dq = producers.get(conv.input[0]), producers.get(conv.input[1])
    if any(n is None or n.op_type != "DequantizeLinear" or len(n.input) < 3 for n in (dequantize, weight_dq)):
        return None
    weights, zero = constants.get(weight_dq.input[0]), constants.get(dequantize.input[2])
    weight_zero, weight_scale = constants.get(weight_dq.input[2]), constants.get(weight_dq.input[1])
    groups = next((a.i for a in conv.attribute if a.name == "group"), 1)
    if (weights is None or weights.dtype != np.int8 or weights.ndim != 4 or not _per_tensor(dequantize, constants)
            or zero is None or zero.ndim != 0 or weight_zero is None or np.any(weight_zero != 0)
            or weight_scale is None or groups != 1 or readers[conv.input[1]] != 1):
        return None
    out_channels, in_channels = weights.shape[:2]
    attrs = {a.name: a.i for a in weight_dq.attribute}
    per_output_channel = attrs.get("axis", 1) == 0 and weight_scale.shape == (out_channels,)
    if "block_size" in attrs or not (weight_scale.size == 1 or per_output_channel):
        return None  # scales along the input channels (or in blocks) would not fit the padded weights
    extra = -in_channels % CHANNEL_MULTIPLE
    if extra == 0 or out_channels < KERNEL_MIN_OUTPUT_CHANNELS or out_channels % KERNEL_OUTPUT_ALIGNMENT:
        return None
    return dequantize, weights, extra


def _per_tensor(node, constants) -> bool:
    """A Q/DQ node with one scale and one zero point (no axis, no blocks)."""
    if len(node.input) < 3 or any(a.name in ("axis", "block_size") for a in node.attribute):
        return False
    values = [constants.get(name) for name in node.input[1:3]]
    return all(v is not None and v.size == 1 for v in values)


def _static_shapes(graph) -> dict[str, list[int]]:
    """Tensor name -> shape for the 4-D tensors whose height and width are known."""
    out = {}
    for value in [*graph.input, *graph.value_info, *graph.output]:
        dims = value.type.tensor_type.shape.dim
        if len(dims) == 4 and all(d.HasField("dim_value") for d in dims[2:]):
            out[value.name] = [d.dim_value for d in dims]
    return out


def _constants(graph) -> dict[str, np.ndarray]:
    from onnx import numpy_helper

    values = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            values[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
    return values


def _upsample_plan(graph, resize, shapes, constants):
    """``(input DequantizeLinear, factors, (height, width))`` when ``resize`` can be rewritten, else None."""
    from onnx import helper

    attrs = {a.name: helper.get_attribute_value(a) for a in resize.attribute}
    if (attrs.get("mode", b"nearest") != b"nearest" or attrs.get("coordinate_transformation_mode") != b"asymmetric"
            or attrs.get("nearest_mode") != b"floor" or "axes" in attrs or resize.input[0] not in shapes):
        return None
    scales = constants.get(resize.input[2]) if len(resize.input) > 2 and resize.input[2] else None
    if scales is None or scales.shape != (4,) or list(scales[:2]) != [1, 1]:
        return None
    factors = [int(f) for f in scales[2:]]
    if any(f < 1 or f != s for f, s in zip(factors, scales[2:])):
        return None
    producer = next((n for n in graph.node if resize.input[0] in n.output), None)
    readers = [n for n in graph.node if resize.output[0] in n.input]
    if producer is None or producer.op_type != "DequantizeLinear" or len(readers) != 1:
        return None
    quantize = readers[0]
    if (quantize.op_type != "QuantizeLinear" or not _per_tensor(producer, constants)
            or not _per_tensor(quantize, constants) or not _same_parameters(producer, quantize, constants)):
        return None
    return producer, factors, shapes[resize.input[0]][2:]


def _same_parameters(dequantize, quantize, constants) -> bool:
    """Equal scale and zero point (by name, or by value when both are constants); both nodes name both."""
    pairs = zip(dequantize.input[1:3], quantize.input[1:3])
    return all(a == b or (a in constants and b in constants and np.array_equal(constants[a], constants[b])
                          and constants[a].dtype == constants[b].dtype) for a, b in pairs)


def _upsample_nodes(graph, resize, dequantize, factors, size) -> list:
    """Transpose, Gather rows, Gather columns, Transpose for ``resize``, each intermediate tensor quantized and
    dequantized with the parameters of ``dequantize``, its input's (defined before it; index initializers are
    added to ``graph``)."""
    from onnx import helper, numpy_helper

    name = resize.name or resize.output[0]
    rows, cols = (numpy_helper.from_array(np.repeat(np.arange(n, dtype=np.int64), f), f"{name}/nhwc/{axis}")
                  for n, f, axis in zip(size, factors, ("rows", "cols")))
    graph.initializer.extend([rows, cols])
    steps = [("Transpose", [], {"perm": TO_NHWC}), ("Gather", [rows.name], {"axis": 1}),
             ("Gather", [cols.name], {"axis": 2}), ("Transpose", [], {"perm": TO_NCHW})]
    scale, zero = dequantize.input[1:3]
    nodes, current = [], resize.input[0]
    for index, (op, extra, attrs) in enumerate(steps):
        last = index == len(steps) - 1
        out = resize.output[0] if last else f"{name}/nhwc/{index}"
        nodes.append(helper.make_node(op, [current, *extra], [out], name=f"{name}/nhwc/{op}_{index}", **attrs))
        if not last:
            nodes += [helper.make_node("QuantizeLinear", [out, scale, zero], [f"{out}/q"], name=f"{out}/Q"),
                      helper.make_node("DequantizeLinear", [f"{out}/q", scale, zero], [f"{out}/dq"], name=f"{out}/DQ")]
            current = f"{out}/dq"
    return nodes


def _drop_unread(graph) -> None:
    """Remove the DequantizeLinear nodes and initializers no one reads any more (a padded convolution's former
    input and weights, an upsample's scales): ONNX Runtime would still run such a node (0.36 ms for the
    image's). Reads inside subgraphs count; other nodes are never touched."""
    kept = {value.name for value in [*graph.input, *graph.output]}
    read = _names_read(graph) | kept
    for node in [n for n in graph.node if n.op_type == "DequantizeLinear" and n.output[0] not in read]:
        graph.node.remove(node)
    read = _names_read(graph) | kept
    for tensor in [t for t in graph.initializer if t.name not in read]:
        graph.initializer.remove(tensor)


def _names_read(graph) -> set[str]:
    """Every tensor name a node of ``graph`` or of any subgraph in it reads."""
    names = set()
    for node in graph.node:
        names.update(node.input)
        for attr in node.attribute:
            for sub in [attr.g] if attr.HasField("g") else list(attr.graphs):
                names |= _names_read(sub)
    return names


def _replace(graph, node, nodes) -> None:
    _insert_before(graph, node, nodes)
    graph.node.remove(node)


def _insert_before(graph, node, nodes) -> None:
    position = list(graph.node).index(node)
    for offset, new in enumerate(nodes):
        graph.node.insert(position + offset, new)
