"""Measurements of one variant: per-iteration stage timings (monotonic clock on the CPU, CUDA events for
PyTorch inference on a GPU), latency percentiles, throughput, host and GPU memory, and accuracy (mAP, and
detection-level parity against the reference) through the runtime's :class:`Detector`.
"""
from __future__ import annotations

import time
from collections import defaultdict
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from tqdm import tqdm

from cstf_edge._io import read_image
from cstf_edge.export.accuracy import artifact_map
from cstf_edge.export.parity import PARITY_CONF, matched_count
from cstf_edge.runtime.detector import Detector
from cstf_edge.runtime.postprocess import Detections
from cstf_edge.runtime.timing import STAGES, StageTimes

PERCENTILES = (50, 90, 99)


def summarize(samples_ms) -> dict:
    """``p50``/``p90``/``p99`` (linear interpolation between order statistics, numpy's default), ``mean``,
    ``min``, ``max`` and ``n`` of a list of milliseconds; all None for an empty list."""
    values = np.asarray(list(samples_ms), dtype=np.float64)
    if values.size == 0:
        return {**{f"p{q}": None for q in PERCENTILES}, "mean": None, "min": None, "max": None, "n": 0}
    points = np.percentile(values, PERCENTILES)
    stats = {f"p{q}": round(float(v), 4) for q, v in zip(PERCENTILES, points)}
    return {**stats, "mean": round(float(values.mean()), 4), "min": round(float(values.min()), 4),
            "max": round(float(values.max()), 4), "n": int(values.size)}


class SampledTimes(StageTimes):
    """:class:`StageTimes` that also keeps what each stage took in the current iteration (:meth:`take`), so
    the bench gets per-iteration samples for percentiles. ``cuda_infer``: time the ``infer`` stage with CUDA
    events (PyTorch on a GPU) instead of the host clock."""

    def __init__(self, cuda_infer: bool = False):
        super().__init__()
        self.current: dict[str, float] = defaultdict(float)
        self.cuda_infer = cuda_infer

    @contextmanager
    def __call__(self, stage: str):
        if self.cuda_infer and stage == "infer":
            with self._cuda_events(stage):
                yield
            return
        start = time.perf_counter()
        try:
            yield
        finally:
            self._add(stage, time.perf_counter() - start)

    @contextmanager
    def _cuda_events(self, stage: str):
        import torch

        begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        begin.record()
        try:
            yield
        finally:
            end.record()
            end.synchronize()
            self._add(stage, begin.elapsed_time(end) / 1000.0)

    def _add(self, stage: str, seconds: float) -> None:
        self.seconds[stage] += seconds
        self.counts[stage] += 1
        self.current[stage] += seconds

    def take(self) -> dict[str, float]:
        """Seconds per stage since the last call, and reset."""
        taken, self.current = dict(self.current), defaultdict(float)
        return taken


# ---- memory ------------------------------------------------------------------------------------------------

def proc_status_mb() -> dict[str, float | None]:
    """``VmRSS`` (resident now) and ``VmHWM`` (resident high-water mark) of this process, in MiB (None where
    /proc is absent)."""
    found: dict[str, float | None] = {"VmRSS": None, "VmHWM": None}
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                key, _, value = line.partition(":")
                if key in found:
                    found[key] = round(int(value.split()[0]) / 1024.0, 1)
    except OSError:
        pass
    return found


def reset_peak_rss() -> bool:
    """Reset ``VmHWM`` to the current RSS (Linux >= 4.0: write 5 to /proc/self/clear_refs); False if not."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


def cuda_memory_start(device: str) -> None:
    import torch

    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)


def cuda_memory_mb(device: str) -> dict:
    """PyTorch's peak allocated and reserved memory on ``device``, and the device's used memory, in MiB."""
    import torch

    free, total = torch.cuda.mem_get_info(device)
    mib = 1024.0 ** 2
    return {"torch_peak_allocated_mb": round(torch.cuda.max_memory_allocated(device) / mib, 1),
            "torch_peak_reserved_mb": round(torch.cuda.max_memory_reserved(device) / mib, 1),
            "device_used_mb": round((total - free) / mib, 1)}


# ---- speed -----------------------------------------------------------------------------------------------

def _iteration(detector: Detector, paths: list[Path]) -> int:
    """Decode ``paths`` and detect: scenes larger than the tile are tiled, the rest go as one batch. Returns
    the pixels processed."""
    images = []
    for path in paths:
        with detector.times("decode"):
            images.append(read_image(path))
    whole = [image for image in images if not detector.needs_tiling(*image.shape[:2])]
    for image in images:
        if detector.needs_tiling(*image.shape[:2]):
            detector.detect_large(image)
    if whole:
        detector.detect_batch(whole)
    return sum(int(image.shape[0]) * int(image.shape[1]) for image in images)


class SpeedLoop:
    """Timed iterations of one detector: each :meth:`step` decodes and detects ``batch`` images (cycling
    through ``paths``) and, when recorded, keeps its end-to-end and per-stage times. Loops of several variants
    can be stepped in turn (interleaved), so load from other processes falls on every variant alike."""

    def __init__(self, detector: Detector, paths: list[Path], batch: int):
        self.detector, self.paths, self.batch = detector, paths, batch
        if not isinstance(detector.times, SampledTimes):
            detector.times = SampledTimes()
        self.cursor = 0
        self.end_to_end: list[float] = []
        self.stages: dict[str, list[float]] = defaultdict(list)
        self.pixels = 0

    def step(self, record: bool = True) -> None:
        chunk = [self.paths[(self.cursor + k) % len(self.paths)] for k in range(self.batch)]
        self.cursor += self.batch
        times = self.detector.times
        times.take()
        start = time.perf_counter()
        done = _iteration(self.detector, chunk)
        wall = time.perf_counter() - start
        taken = times.take()
        if not record:
            return
        self.end_to_end.append(1000.0 * wall)
        self.pixels += done
        for stage in set(taken) | {"decode", "pre", "infer", "post"}:
            self.stages[stage].append(1000.0 * taken.get(stage, 0.0))

    def summary(self) -> dict:
        """Latency percentiles (ms per iteration), per stage too; FPS (images/s) and megapixels/s."""
        seconds = sum(self.end_to_end) / 1000.0
        order = [s for s in STAGES if s in self.stages] + sorted(s for s in self.stages if s not in STAGES)
        latency = summarize(self.end_to_end)
        count = len(self.end_to_end)
        return {"iterations": count, "images_per_iteration": self.batch, "latency_ms": latency,
                "stages_ms": {stage: summarize(self.stages[stage]) for stage in order},
                "fps": round(self.batch * count / seconds, 3) if seconds else None,
                "fps_p50": round(1000.0 * self.batch / latency["p50"], 3) if latency["p50"] else None,
                "megapixels_per_s": round(self.pixels / 1e6 / seconds, 3) if seconds else None}


def measure_speed(detector: Detector, paths: list[Path], batch: int, warmup: int, iters: int,
                  progress: bool = True, desc: str = "speed") -> dict:
    """``warmup`` untimed then ``iters`` timed iterations of one detector; :meth:`SpeedLoop.summary`."""
    loop = SpeedLoop(detector, paths, batch)
    for index in tqdm(range(warmup + iters), desc=desc, unit="it", disable=not progress, leave=False):
        loop.step(record=index >= warmup)
    return loop.summary()


# ---- accuracy ----------------------------------------------------------------------------------------------

class RecordingDetector(Detector):
    """A :class:`Detector` that keeps each scene's detections (in call order) for the parity check."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.found: list[Detections] = []

    def detect_large(self, scene, reference=None):
        result = super().detect_large(scene, reference)
        self.found.append(Detections(result.rboxes, result.scores, result.class_ids))
        return result


def measure_accuracy(detector: RecordingDetector, labels, progress: bool = True, desc: str = "mAP") -> dict:
    """VOC07 and VOC12 mAP (points, 0-100) and per-class VOC07 AP with the project's DOTA evaluator."""
    detector.found = []
    figures = artifact_map(detector, labels, progress, desc)
    return {**figures, "detections": int(sum(len(d) for d in detector.found))}


def confident(found: list[Detections], conf: float = PARITY_CONF) -> list[Detections]:
    """Each image's detections scoring at least ``conf``. Greedy NMS lets only higher scores suppress, so this
    equals post-processing at ``conf`` (below the candidate and detection caps)."""
    return [d.take(np.flatnonzero(d.scores >= conf)) for d in found]


def detection_parity(reference: list[Detections], candidate: list[Detections]) -> dict:
    """Share of the reference's detections (score >= 0.25) matched one-to-one by the candidate's (same class,
    rotated IoU >= 0.95), over all images."""
    reference, candidate = confident(reference), confident(candidate)
    total = sum(len(d) for d in reference)
    matched = sum(matched_count(r, c) for r, c in zip(reference, candidate))
    return {"reference_detections": total, "matched": matched,
            "detection_parity": round(matched / total, 6) if total else 1.0}
