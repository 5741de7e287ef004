"""Synthetic raw network outputs ``[N, 5 + C]`` (decoded boxes, class scores) for checking and timing
post-processing without a model: the CUDA kernels' parity tests and ``benchmarks/gpu_kernels_check.py``
draw from the same generator."""
from __future__ import annotations

import numpy as np

ANCHORS, CLASSES = 21504, 15  # a 1024 x 1024 input at strides 8, 16, 32; DOTA's class count


def dense_raw(rng: np.random.Generator, n: int = ANCHORS, num_classes: int = CLASSES,
              clusters: int = 400) -> np.ndarray:
    """Raw detections of a dense scene: boxes jittered around cluster centres, several classes."""
    centre, size = rng.uniform(0, 1024, (clusters, 2)), rng.uniform(8, 120, (clusters, 2))
    which = rng.integers(0, clusters, n)
    raw = np.zeros((n, 5 + num_classes), dtype=np.float32)
    raw[:, :2] = centre[which] + rng.normal(0, 3, (n, 2))
    raw[:, 2:4] = size[which] * rng.uniform(0.8, 1.2, (n, 2))
    raw[:, 4] = rng.uniform(-np.pi / 2, np.pi / 2, clusters)[which] + rng.normal(0, 0.05, n)
    raw[:, 5:] = rng.random((n, num_classes)) ** 8 * 0.26
    bump = rng.uniform(0, 0.8, n) * (rng.random(n) < 0.15)
    raw[np.arange(n), 5 + rng.integers(0, num_classes, clusters)[which]] += bump
    return raw
