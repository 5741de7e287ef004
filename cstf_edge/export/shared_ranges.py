"""One quantization range for a Concat and its inputs, so ONNX Runtime's INT8 Concat copies bytes.

ONNX Runtime runs a Q/DQ Concat as ``QLinearConcat``: an input whose scale and zero point equal the output's is
copied, any other goes through a 256-entry requantization table byte by byte. With each tensor calibrated on
its own, every input of every Concat of CSTF's C2f blocks and neck differed, and the Concats took 3.8 of 31 ms
of the INT8 network at 1024 x 1024 on a 2-core AMD EPYC (2.2 ms with the ranges shared; ONNX Runtime profile).
TensorRT merges Concat scales the same way when it builds an engine.

:func:`share_concat_ranges` unites the calibrated range of a Concat's output with those of its inputs, and
carries the union through the ops whose uint8 kernels need equal input and output parameters (MaxPool, Resize).
A tensor has one range whatever reads it, so sharing is transitive. A Concat is left alone:

- when it would widen some tensor's range beyond ``MAX_SPAN_RATIO`` times its own span (the CSTF fusion
  concatenates features of range ~15 with confidences in [0, 1]: one shared scale would leave the confidences
  a dozen levels);
- when it would give a non-negative tensor negative values: ONNX Runtime's quantizer removes every quantized
  ReLU, which is exact only while the ReLU's output range starts at 0 (sharing the neck's last Concat, between
  a ReLU output and the signed fused stride-32 map, cost 0.5 point of INT8 mAP that way);
- when it stays FP32.

The change is a function of the calibrated ranges and the graph, so the calibration cache stays the FP32
model's own.
"""
from __future__ import annotations

import numpy as np

SCHEME = "concat-shared-v1"  # recorded in INT8 artifacts; part of the sensitivity table's cache key
MAX_SPAN_RATIO = 2.0  # a tensor's range may grow to at most this times its own span (one bit of resolution)
PASS_THROUGH_OPS = ("MaxPool", "Resize")  # uint8 in ONNX Runtime only with equal input and output ranges


class _Groups:
    """Union-find over tensor names, each group with the union of its members' ranges and the narrowest
    member span."""

    def __init__(self, ranges: dict[str, tuple[float, float]]):
        self.parent = {name: name for name in ranges}
        self.bounds = dict(ranges)
        self.narrowest = {name: _span(bounds) for name, bounds in ranges.items()}

    def find(self, name: str) -> str:
        root = name
        while root != self.parent[root]:
            root = self.parent[root]
        self.parent[name] = root
        return root

    def union_if(self, names: list[str], max_ratio: float, keep_signs: bool) -> bool:
        """Join the groups of ``names`` unless a member's range would grow beyond ``max_ratio`` times its span, or
        (``keep_signs``) a non-negative range take in negative values."""
        roots = {self.find(n) for n in names}
        low = min(self.bounds[r][0] for r in roots)
        high = max(self.bounds[r][1] for r in roots)
        narrowest = min(self.narrowest[r] for r in roots)
        if narrowest <= 0 or (high - low) > max_ratio * narrowest:
            return False
        if keep_signs and low < 0 and any(self.bounds[r][0] >= 0 for r in roots):
            return False
        top, *rest = roots
        for root in rest:
            self.parent[root] = top
        self.bounds[top], self.narrowest[top] = (low, high), narrowest
        return True


def _span(bounds: tuple[float, float]) -> float:
    return bounds[1] - bounds[0]


def shared_ranges(graph, ranges: dict[str, tuple[float, float]],
                  float_nodes: set[str] = frozenset()) -> dict[str, tuple[float, float]]:
    """``ranges`` (tensor -> (lowest, highest)) with the inputs and output of each Concat, and the tensors joined
    to them by pass-through ops, on the union of their ranges. Concats are taken in graph order, and one is
    left alone when sharing would widen some tensor's range (its own or one joined before) beyond
    ``MAX_SPAN_RATIO`` times its span, or give a non-negative range negative values. A pass-through op always
    joins its input and output (ONNX Runtime's quantizer gives its output the input's parameters anyway).
    Nodes in ``float_nodes`` stay FP32 and join nothing."""
    groups = _Groups(ranges)
    for node in graph.node:
        if node.name in float_nodes or node.op_type not in ("Concat", *PASS_THROUGH_OPS):
            continue
        names = [*node.input, node.output[0]] if node.op_type == "Concat" else [node.input[0], node.output[0]]
        if all(n in ranges for n in names):
            concat = node.op_type == "Concat"
            groups.union_if(names, MAX_SPAN_RATIO if concat else float("inf"), keep_signs=concat)
    return {name: groups.bounds[groups.find(name)] for name in ranges}


def share_concat_ranges(graph, tensors_data, float_nodes: set[str] = frozenset()):
    """ONNX Runtime ``TensorsData`` with :func:`shared_ranges` applied (a new object; the input is unchanged)."""
    from onnxruntime.quantization.calibrate import TensorData, TensorsData

    ranges = {name: (float(np.min(d.range_value[0])), float(np.max(d.range_value[1])))
              for name, d in tensors_data.data.items()}
    shared = shared_ranges(graph, ranges, float_nodes)
    data = {name: TensorData(lowest=np.array([low], dtype=np.float32), highest=np.array([high], dtype=np.float32))
            if shared[name] != ranges[name] else tensors_data.data[name] for name, (low, high) in shared.items()}
    return TensorsData(tensors_data.calibration_method, data)
