"""Nearest upsampling that ONNX Runtime runs at memory speed in an INT8 CPU model.

ONNX Runtime runs a Q/DQ convolution channels-last (NHWC), and its transpose optimizer carries a uint8 nearest
``Resize`` between two such convolutions into NHWC as well. Its uint8 nearest kernel has a fast path for NCHW
only: in cstf-n INT8 at 1024 x 1024 the neck's 64 -> 128 upsample of 128 channels took 1.4 ms in NHWC, where an
NCHW one of half the size took 0.03 ms (ONNX Runtime 1.32 profile, 2-core AMD EPYC).

:func:`gather_nearest_upsamples` writes such a Resize as an explicit NCHW -> NHWC ``Transpose``, a ``Gather`` of
rows, a ``Gather`` of columns and a ``Transpose`` back. The Gathers copy whole pixels (``C`` bytes each), and
the transposes cancel against those ONNX Runtime puts around its NHWC convolutions: 0.08 ms for that upsample.
Every new tensor carries the Resize's own scale and zero point, so ONNX Runtime drops the Q/DQ pairs and moves
the same uint8 values: the output is bit-identical. Only for ONNX Runtime targets; TensorRT keeps its Resize.
"""
from __future__ import annotations

import logging

import numpy as np

log = logging.getLogger(__name__)

SCHEME = "nearest-upsample-gather-v1"  # recorded in ONNX Runtime INT8 artifacts
TO_NHWC, TO_NCHW = [0, 2, 3, 1], [0, 3, 1, 2]


def gather_nearest_upsamples(model) -> int:
    """Rewrite in place every Q/DQ-wrapped nearest Resize of a 4-D tensor of static height and width by
    whole-number factors (``asymmetric`` coordinates, ``floor`` rounding: what PyTorch exports for
    ``nn.Upsample``); returns how many. A Resize whose input is not a DequantizeLinear, whose output is not read
    by exactly one QuantizeLinear with the same scale and zero point, or that is not such an upsample is left
    alone (ONNX Runtime would run it in float, or it is no plain repeat)."""
    import onnx
    from onnx import shape_inference

    graph = model.graph
    shapes = _static_shapes(shape_inference.infer_shapes(model, strict_mode=False).graph)
    constants = _constants(graph)
    count = 0
    for resize in [n for n in graph.node if n.op_type == "Resize"]:
        plan = _plan(graph, resize, shapes, constants)
        if plan is not None:
            _rewrite(graph, resize, *plan)
            count += 1
    if count:
        onnx.checker.check_model(model)
        log.info("INT8 layout: %d nearest upsample(s) written as NHWC Gathers", count)
    return count


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


def _plan(graph, resize, shapes, constants):
    """``(quantize_node, factors, (height, width))`` when ``resize`` can be rewritten, else None."""
    from onnx import helper

    attrs = {a.name: helper.get_attribute_value(a) for a in resize.attribute}
    if (attrs.get("mode", b"nearest") != b"nearest" or attrs.get("coordinate_transformation_mode") != b"asymmetric"
            or attrs.get("nearest_mode") != b"floor" or resize.input[0] not in shapes):
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
    if quantize.op_type != "QuantizeLinear" or not _same_parameters(producer, quantize, constants):
        return None
    return quantize, factors, shapes[resize.input[0]][2:]


def _same_parameters(dequantize, quantize, constants) -> bool:
    """Equal scale and zero point (by name, or by value when both are constants)."""
    pairs = list(zip(dequantize.input[1:3], quantize.input[1:3]))
    if len(pairs) < 2:
        return False
    return all(a == b or (a in constants and b in constants and np.array_equal(constants[a], constants[b])
                          and constants[a].dtype == constants[b].dtype) for a, b in pairs)


def _rewrite(graph, resize, quantize, factors, size) -> None:
    """Replace ``resize`` by Transpose, Gather rows, Gather columns, Transpose, each intermediate tensor
    quantized and dequantized with ``quantize``'s parameters."""
    from onnx import helper, numpy_helper

    name = resize.name or resize.output[0]
    rows, cols = (numpy_helper.from_array(np.repeat(np.arange(n, dtype=np.int64), f), f"{name}/nhwc/{axis}")
                  for n, f, axis in zip(size, factors, ("rows", "cols")))
    graph.initializer.extend([rows, cols])
    steps = [("Transpose", [], {"perm": TO_NHWC}), ("Gather", [rows.name], {"axis": 1}),
             ("Gather", [cols.name], {"axis": 2}), ("Transpose", [], {"perm": TO_NCHW})]
    scale, zero = quantize.input[1:3]
    nodes, current = [], resize.input[0]
    for index, (op, extra, attrs) in enumerate(steps):
        last = index == len(steps) - 1
        out = resize.output[0] if last else f"{name}/nhwc/{index}"
        nodes.append(helper.make_node(op, [current, *extra], [out], name=f"{name}/nhwc/{op}_{index}", **attrs))
        if not last:
            nodes += [helper.make_node("QuantizeLinear", [out, scale, zero], [f"{out}/q"], name=f"{out}/Q"),
                      helper.make_node("DequantizeLinear", [f"{out}/q", scale, zero], [f"{out}/dq"], name=f"{out}/DQ")]
            current = f"{out}/dq"
    position = list(graph.node).index(resize)
    graph.node.remove(resize)
    for offset, node in enumerate(nodes):
        graph.node.insert(position + offset, node)
