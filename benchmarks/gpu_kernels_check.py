"""GPU check of the CUDA pre/post-processing twins (``cstf_edge.runtime.cuda``): parity with the numpy twins
and CPU-vs-GPU timings, printed as one JSON report.

    python benchmarks/gpu_kernels_check.py [--out report.json] [--repeats 20]

Parity: the preprocessor on odd frame sizes (1 x 1, 300 x 517, 517 x 300, 7 x 13, 1024 x 1024,
2048 x 2048, 3000 x 4000) against ``preprocess_batch`` (tolerance 1 grey level; the exact fraction is
reported too), and the post-processor on dense, overlapping, multi-class raw detections and on uniform random
ones (21504 x (5 + 15)), class-aware and agnostic, against ``select_candidates`` / ``postprocess`` (equal, or
differing only where an IoU lies within 1e-6 of the threshold). Timings (median of ``--repeats``): the numpy
twin vs the CUDA twin for a 4000 x 3000 frame letterboxed to 1024 (end to end from a host frame, and the
kernel alone) and for post-processing 21504 x 20 raw detections (from a host array, and from device memory).

Without cuda-python or a GPU it prints ``{"skipped": "no GPU", ...}`` and exits 0; it exits 1 when a parity
check fails.
"""
from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np

from cstf_edge.bench.raw_detections import ANCHORS, CLASSES, dense_raw
from cstf_edge.geometry import rbox_to_poly
from cstf_edge.geometry.iou import polygon_iou_matrix
from cstf_edge.runtime.errors import BackendUnavailableError
from cstf_edge.runtime.postprocess import postprocess, select_candidates
from cstf_edge.runtime.preprocess import PreprocessSpec, preprocess_batch

SIZES = [(1, 1), (300, 517), (517, 300), (7, 13), (1024, 1024), (2048, 2048), (3000, 4000)]
SPEC = PreprocessSpec(1024, 1024)


def uniform_raw(rng) -> np.ndarray:
    scale = np.r_[[1024, 1024, 90, 90, 3], np.ones(CLASSES)]
    return (rng.random((ANCHORS, 5 + CLASSES)) * scale).astype(np.float32)


def median_ms(work, repeats: int) -> float:
    work()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        work()
        times.append((time.perf_counter() - start) * 1000)
    return round(float(np.median(times)), 3)


def same_detections(got, want, iou: float) -> bool:
    """Equal, or different only where two boxes have an IoU within 1e-6 of the threshold."""
    if len(got) == len(want) and np.array_equal(got.rboxes, want.rboxes) and \
            np.array_equal(got.scores, want.scores) and np.array_equal(got.class_ids, want.class_ids):
        return True
    both = rbox_to_poly(np.concatenate([got.rboxes, want.rboxes]))
    return bool((np.abs(polygon_iou_matrix(both, both) - iou) < 1e-6).any())


def preprocess_parity(cuda_pre, rng) -> dict:
    out = {}
    for height, width in SIZES:
        frame = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        with cuda_pre.CudaPreprocessor(SPEC) as pre:
            pre(frame)
            got = pre.download(1)
        want, _ = preprocess_batch([frame], SPEC)
        grey = np.abs(got - want) * 255
        out[f"{height}x{width}"] = {"max_grey_levels": round(float(grey.max()), 4),
                                    "exact_fraction": round(float((grey < 1e-3).mean()), 6),
                                    "ok": bool(grey.max() <= 1 + 1e-3)}
    return out


def postprocess_parity(cuda_post, rng) -> dict:
    out = {}
    with cuda_post.CudaPostprocessor(ANCHORS, CLASSES) as post:
        for name, raw in (("dense", dense_raw(rng)), ("uniform", uniform_raw(rng))):
            for conf in (0.05, 0.25, 0.5):
                select_ok = same_detections(post.select(raw, conf), select_candidates(raw, conf), 2.0)
                for agnostic in (False, True):
                    want = postprocess(raw, conf, 0.5, agnostic=agnostic)
                    got = post(raw, conf, 0.5, agnostic=agnostic)
                    out[f"{name}-conf{conf}-{'agnostic' if agnostic else 'classes'}"] = {
                        "candidates": len(select_candidates(raw, conf)), "kept": len(want),
                        "select_ok": select_ok, "ok": same_detections(got, want, 0.5)}
    return out


def event_ms(driver, stream, work, repeats: int) -> float:
    """Median device time of ``work()`` on ``stream``, from CUDA events."""
    rt = driver.bindings().runtime
    start, end = (driver.check(rt.cudaEventCreate(), "cudaEventCreate") for _ in range(2))
    times = []
    for _ in range(repeats + 1):
        driver.check(rt.cudaEventRecord(start, stream.handle), "cudaEventRecord")
        work()
        driver.check(rt.cudaEventRecord(end, stream.handle), "cudaEventRecord")
        driver.check(rt.cudaEventSynchronize(end), "cudaEventSynchronize")
        times.append(driver.check(rt.cudaEventElapsedTime(start, end), "cudaEventElapsedTime"))
    for event in (start, end):
        driver.check(rt.cudaEventDestroy(event), "cudaEventDestroy")
    return round(float(np.median(times[1:])), 3)


def preprocess_timing(cuda_pre, driver, rng, repeats: int) -> dict:
    frame = rng.integers(0, 256, (3000, 4000, 3), dtype=np.uint8)
    with cuda_pre.CudaPreprocessor(SPEC) as pre:
        def gpu():
            pre(frame)
            pre.stream.synchronize()

        gpu_ms = median_ms(gpu, repeats)
        _, box = pre(frame)
        offsets, _ = cuda_pre.staging_layout([frame], [box])
        kernel_ms = event_ms(driver, pre.stream, lambda: pre._launch(0, box, *offsets[0]), repeats)
    return {"frame": "4000x3000 -> 1024", "cpu_numpy_ms": median_ms(lambda: preprocess_batch([frame], SPEC),
                                                                    max(3, repeats // 4)),
            "cuda_end_to_end_ms": gpu_ms, "cuda_kernel_ms": kernel_ms}


def postprocess_timing(cuda_post, driver, rng, repeats: int) -> dict:
    raw = dense_raw(rng)
    with cuda_post.CudaPostprocessor(ANCHORS, CLASSES) as post:
        on_device = driver.DeviceBuffer(raw.nbytes)
        post.stream.to_device(on_device.ptr, raw.ctypes.data, raw.nbytes)
        post.stream.synchronize()
        result = {"raw": f"{ANCHORS}x{5 + CLASSES}", "conf": 0.25, "iou": 0.5,
                  "candidates": len(select_candidates(raw, 0.25)), "kept": len(postprocess(raw)),
                  "cpu_numpy_ms": median_ms(lambda: postprocess(raw), max(3, repeats // 4)),
                  "cuda_from_host_ms": median_ms(lambda: post(raw), repeats),
                  "cuda_from_device_ms": median_ms(lambda: post(on_device.ptr), repeats)}
        on_device.free()
    return result


def device_info(driver) -> dict:
    props = driver.check(driver.bindings().runtime.cudaGetDeviceProperties(0), "cudaGetDeviceProperties")
    name = props.name
    if isinstance(name, (bytes, bytearray)):
        name = bytes(name).split(b"\0", 1)[0].decode()
    return {"gpu": str(name).strip(), "compute_capability": f"{props.major}.{props.minor}"}


def run(repeats: int) -> tuple[dict, bool]:
    from cstf_edge.runtime.cuda import _driver as driver
    from cstf_edge.runtime.cuda import postprocess as cuda_post
    from cstf_edge.runtime.cuda import preprocess as cuda_pre

    try:
        driver.use_device(0)
    except BackendUnavailableError as exc:
        return {"skipped": "no GPU", "reason": str(exc)}, True
    rng = np.random.default_rng(0)
    report = {"device": device_info(driver), "preprocess_parity": preprocess_parity(cuda_pre, rng),
              "postprocess_parity": postprocess_parity(cuda_post, rng)}
    report["timing"] = {"preprocess": preprocess_timing(cuda_pre, driver, rng, repeats),
                        "postprocess": postprocess_timing(cuda_post, driver, rng, repeats)}
    ok = all(entry["ok"] for entry in report["preprocess_parity"].values()) and \
        all(entry["ok"] and entry["select_ok"] for entry in report["postprocess_parity"].values())
    report["parity_ok"] = ok
    return report, ok


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", help="also write the JSON report here")
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args(argv)
    report, ok = run(args.repeats)
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        with open(args.out, "w") as handle:
            handle.write(text + "\n")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
