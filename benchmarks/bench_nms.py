"""Benchmark of rotated NMS on the CPU: the numba kernel against the numpy reference, 20,000 boxes.

Two layouts in an 8000 x 8000 px scene (seed fixed):
- ``dense``: 2000 objects x 10 jittered candidates each, as a detector emits them before NMS (centres
  moved by up to a fifth of the short side, sides by about 8 %, angles by about 3 degrees);
- ``uniform``: 20,000 independent boxes, centres uniform over the scene.
Sides 20-150 px (short side 20-100 % of the long one, at least 8 px), any angle. Each layout runs
class-agnostic and class-aware with 15 classes (dense: a candidate takes its object's class, one in ten
another class at random). Reports the median milliseconds of the numba path after warm-up calls (the
first call compiles the kernel, or loads it from numba's cache) and of the numpy reference, the kept
counts, and whether both keep the same indices. The target is under 10 ms per call on this machine.

    python benchmarks/bench_nms.py [--repeat 21] [--numpy-repeat 3] [--threshold 0.5] [--json]
"""
from __future__ import annotations

import argparse
import json
import time

import numpy as np

from cstf_edge.geometry.nms import (class_aware_nms, class_aware_nms_numpy, numba_kernel, rotated_nms,
                                    rotated_nms_numpy)

SCENE, OBJECTS, CANDIDATES, CLASSES = 8000.0, 2000, 10, 15
TARGET_MS = 10.0
WARMUP = 3  # untimed calls after the first, so that caches and the workspace are settled


def object_boxes(rng: np.random.Generator, count: int) -> np.ndarray:
    """Rotated boxes ``[count, 5]`` spread over the scene."""
    width = rng.uniform(20, 150, count)
    height = np.maximum(rng.uniform(0.2, 1.0, count) * width, 8.0)
    centre = rng.uniform(0, SCENE, (count, 2))
    return np.column_stack([centre, width, height, rng.uniform(-np.pi / 2, np.pi / 2, count)])


def dense_layout(rng: np.random.Generator):
    """Clusters of jittered candidates: boxes, scores, class ids."""
    objects = object_boxes(rng, OBJECTS)
    boxes = np.repeat(objects, CANDIDATES, axis=0)
    shift = rng.uniform(0, 0.2, len(boxes)) * boxes[:, 3]
    direction = rng.uniform(0, 2 * np.pi, len(boxes))
    boxes[:, 0] += shift * np.cos(direction)
    boxes[:, 1] += shift * np.sin(direction)
    boxes[:, 2:4] *= rng.normal(1.0, 0.08, (len(boxes), 2))
    boxes[:, 4] += rng.normal(0, 0.05, len(boxes))
    scores = np.clip(np.repeat(rng.uniform(0.3, 0.95, OBJECTS), CANDIDATES) - rng.uniform(0, 0.3, len(boxes)),
                     0.01, 1.0).astype(np.float32)
    classes = np.repeat(rng.integers(0, CLASSES, OBJECTS), CANDIDATES)
    other = rng.random(len(boxes)) < 0.1
    classes[other] = rng.integers(0, CLASSES, other.sum())
    return boxes, scores, classes


def uniform_layout(rng: np.random.Generator):
    """Independent boxes uniform over the scene: boxes, scores, class ids."""
    count = OBJECTS * CANDIDATES
    return object_boxes(rng, count), rng.random(count).astype(np.float32), rng.integers(0, CLASSES, count)


def median_ms(run, repeat: int) -> float:
    """Median wall time of ``run()`` in milliseconds."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return float(np.median(times) * 1e3)


def bench_case(name: str, mode: str, data, threshold: float, repeat: int, numpy_repeat: int) -> dict:
    """Time one layout and mode on both paths; check that they keep the same indices."""
    boxes, scores, classes = data
    if mode == "agnostic":
        fast, reference = (lambda: rotated_nms(boxes, scores, threshold),
                           lambda: rotated_nms_numpy(boxes, scores, threshold))
    else:
        fast, reference = (lambda: class_aware_nms(boxes, scores, classes, threshold),
                           lambda: class_aware_nms_numpy(boxes, scores, classes, threshold))
    start = time.perf_counter()
    kept = fast()  # the first call compiles the kernel, or loads it from numba's cache
    first_ms = (time.perf_counter() - start) * 1e3
    for _ in range(WARMUP):
        fast()
    expected = reference()
    return {"layout": name, "mode": mode, "boxes": len(boxes), "kept": int(len(kept)),
            "same_indices": bool(np.array_equal(kept, expected)), "first_call_ms": round(first_ms, 1),
            "numba_ms": round(median_ms(fast, repeat), 2), "numpy_ms": round(median_ms(reference, numpy_repeat), 1)}


def run(repeat: int = 21, numpy_repeat: int = 3, threshold: float = 0.5, seed: int = 0) -> list[dict]:
    """All cases: dense and uniform layouts, class-agnostic and class-aware."""
    rng = np.random.default_rng(seed)
    layouts = {"dense": dense_layout(rng), "uniform": uniform_layout(rng)}
    return [bench_case(name, mode, data, threshold, repeat, numpy_repeat)
            for name, data in layouts.items() for mode in ("agnostic", "class-aware")]


def table(rows: list[dict]) -> str:
    """The results as a fixed-width table."""
    head = f"{'layout':8} {'mode':12} {'boxes':>6} {'kept':>6} {'numba ms':>9} {'numpy ms':>9} {'speed-up':>8} same"
    lines = [head, "-" * len(head)]
    for row in rows:
        lines.append(f"{row['layout']:8} {row['mode']:12} {row['boxes']:6d} {row['kept']:6d} {row['numba_ms']:9.2f} "
                     f"{row['numpy_ms']:9.1f} {row['numpy_ms'] / row['numba_ms']:7.0f}x {row['same_indices']}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=21, help="timed numba calls per case (median)")
    parser.add_argument("--numpy-repeat", type=int, default=3, help="timed numpy calls per case (median)")
    parser.add_argument("--threshold", type=float, default=0.5, help="IoU threshold")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args()
    if numba_kernel() is None:
        parser.error("numba is not importable: only the numpy reference would run")
    rows = run(args.repeat, args.numpy_repeat, args.threshold)
    if args.json:
        print(json.dumps({"target_ms": TARGET_MS, "threshold": args.threshold, "results": rows}, indent=2))
    else:
        print(table(rows))
        print(f"target: numba under {TARGET_MS:.0f} ms per call; first_call_ms includes loading the kernel")


if __name__ == "__main__":
    main()
