"""Sum-preserving rounding of convolution weights onto the INT8 grid, before quantization.

Both INT8 quantizers (ONNX Runtime's, and Model Optimizer's, built on it) put a convolution's weights on a
per-output-channel symmetric grid, ``scale = max|w| / 127``, by rounding each weight to the nearest step. Each
error is at most half a step, but over a smooth image patch a kernel sees nearly the same value at every tap, so
its output moves by ``v * sum(errors)``: the errors of one kernel add up instead of cancelling. On the first
convolution (3 input channels, weights of up to 9 after batch-norm folding, all-positive inputs) nearest
rounding alone cost cstf-n-relu 1.9 points of mAP. Here each ``(output, input)`` kernel slice is rounded so that
its errors sum to at most half a step (the weights whose rounding was closest to a tie go the other way; none
moves by more than one step), then the quantizer finds the weights already on its grid and keeps them. A 1x1
convolution has one weight per slice, so for it this is nearest rounding. The export rounds only the
convolutions it quantizes: those the sweep or a profile keeps FP32 keep their weights (Model Optimizer may
still leave some rounded ones in float by its own rules). Checked with ONNX Runtime's quantizer (a test); Model
Optimizer uses the same per-channel grid (``amax / 127``) but has not been run with it here.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from cstf_edge._io import atomic_write_bytes

log = logging.getLogger(__name__)

INT8_MAX = 127  # symmetric, narrow range: the grid of both quantizers
SCHEME = "sum-preserving-v1"  # recorded in the INT8 artifact metadata


def round_to_int8_grid(weight: np.ndarray) -> np.ndarray:
    """``weight`` ``[O, I, ...]`` on its per-output-channel INT8 grid, every ``[o, i]`` slice's rounding errors
    summing to at most half a step. The largest weight of each channel keeps its value, so the grid (and the
    scale a quantizer computes from it) is unchanged."""
    weight = np.asarray(weight, dtype=np.float32)
    out_channels = weight.shape[0]
    absmax = np.abs(weight.reshape(out_channels, -1)).max(axis=1)
    scale = np.where(absmax > 0, absmax / INT8_MAX, 1.0).astype(np.float32)
    steps = weight.reshape(out_channels, weight.shape[1], -1) / scale[:, None, None]
    rounded = np.round(steps)
    error = rounded - steps
    extremes = np.abs(steps) >= INT8_MAX - 1e-3  # the channel maximum: never moved
    excess = np.round(error.sum(axis=-1)).astype(np.int64)  # whole steps each slice is off by
    down = _first_ranked(np.where(extremes, -np.inf, error), excess)  # largest positive errors first
    up = _first_ranked(np.where(extremes, -np.inf, -error), -excess)
    rounded = np.clip(rounded - down + up, -INT8_MAX, INT8_MAX)
    return (rounded * scale[:, None, None]).reshape(weight.shape).astype(np.float32)


def _first_ranked(key: np.ndarray, count: np.ndarray) -> np.ndarray:
    """Mask of the ``count[o, i]`` elements with the largest ``key`` along the last axis (none where
    ``count <= 0``)."""
    rank = np.argsort(np.argsort(-key, axis=-1, kind="stable"), axis=-1, kind="stable")
    return (rank < count[..., None]).astype(np.float32)


def round_conv_weights(src: Path, dst: Path, exclude: list[str] | set[str] = (),
                       only: list[str] | set[str] | None = None) -> int:
    """Write ``src`` to ``dst`` with the weights of every ``Conv`` not in ``exclude`` (and, given ``only``, in
    it) rounded by :func:`round_to_int8_grid`; returns how many were rounded. Weights that are not float32
    initializers, or are shared with another node, are left as they are."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(src))
    initializers = {i.name: i for i in model.graph.initializer}
    uses: dict[str, int] = {}
    for node in model.graph.node:
        for name in node.input:
            uses[name] = uses.get(name, 0) + 1
    skipped, wanted = set(exclude), None if only is None else set(only)
    count = 0
    for node in model.graph.node:
        if node.op_type != "Conv" or node.name in skipped or (wanted is not None and node.name not in wanted):
            continue
        weight = initializers.get(node.input[1]) if len(node.input) > 1 else None
        if (weight is None or weight.data_type != onnx.TensorProto.FLOAT or uses[node.input[1]] != 1
                or len(weight.dims) < 3):
            log.debug("INT8 weights: %s left as it is (not a float32 initializer of its own)", node.name)
            continue
        rounded = round_to_int8_grid(numpy_helper.to_array(weight))
        weight.CopyFrom(numpy_helper.from_array(rounded, weight.name))
        count += 1
    atomic_write_bytes(dst, model.SerializeToString())
    log.debug("INT8 weights: %d convolutions rounded onto their grid with sum-preserving rounding", count)
    return count
