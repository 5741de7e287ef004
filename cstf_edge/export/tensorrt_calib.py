"""Classic INT8 calibration for TensorRT <= 10 (TensorRT 11 removed it: INT8 there is a Q/DQ ONNX).

The batch iteration (:class:`CalibrationBatches`) and the cache (:class:`CalibrationCache`) are plain Python;
:func:`make_entropy_calibrator` wraps them in a subclass of whatever base it is given, which
:func:`cstf_edge.export.tensorrt.build_engine` makes ``trt.IInt8EntropyCalibrator2``. The callback names and
contracts (``get_batch_size``, ``get_batch(names)`` -> device pointers or None, ``read_calibration_cache``
-> bytes or None, ``write_calibration_cache(memoryview)``) follow the TensorRT Python API "Int8" pages and
the samples' ``EngineCalibrator`` (``samples/python/efficientdet/build_engine.py``).
"""
from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Iterable

import numpy as np

from cstf_edge._io import atomic_write_bytes, atomic_write_text
from cstf_edge.errors import CstfError

log = logging.getLogger(__name__)


class CalibrationError(CstfError):
    """Calibration batches or a calibration cache cannot be used (the message says why)."""


class CalibrationBatches:
    """Fixed-size float32 ``[B, 3, H, W]`` batches from any iterable (the project's calibration batcher, which
    applies the runtime's preprocessing); a last, smaller batch is dropped (a calibrator's batch is fixed)."""

    def __init__(self, batches: Iterable[np.ndarray], chw: tuple[int, int, int], limit: int | None = None):
        self._iter, self.chw, self.limit = iter(batches), tuple(chw), limit
        self._peeked: np.ndarray | None = None
        self.count = self.dropped = 0
        self._size: int | None = None

    @property
    def batch_size(self) -> int:
        """Batch size of the first batch (0 when there are none)."""
        if self._size is None:
            self._peeked = self._pull()
            self._size = 0 if self._peeked is None else len(self._peeked)
        return self._size

    def _pull(self) -> np.ndarray | None:
        batch = next(self._iter, None)
        if batch is None:
            return None
        batch = np.asarray(batch)
        if batch.ndim != 4 or tuple(batch.shape[1:]) != self.chw or batch.dtype.kind != "f":
            want = ", ".join(map(str, self.chw))
            raise CalibrationError(f"calibration batches must be preprocessed float arrays [B, {want}] (the "
                                   f"runtime's preprocess_batch), got {batch.dtype} {batch.shape}")
        return np.ascontiguousarray(batch, dtype=np.float32)

    def next(self) -> np.ndarray | None:
        """The next full batch, or None when done (or ``limit`` batches were given)."""
        size = self.batch_size
        while size and (self.limit is None or self.count < self.limit):
            batch, self._peeked = (self._peeked, None) if self._peeked is not None else (self._pull(), None)
            if batch is None:
                break
            if len(batch) == size:
                self.count += 1
                return batch
            self.dropped += 1
            log.warning("calibration: dropped a batch of %d (calibration batches are all %d)", len(batch), size)
        return None


def calibration_cache_key(*, onnx_sha256: str, trt_version: tuple, input_shape, calibration_id: str = "") -> str:
    """What a calibration cache depends on: the model, TensorRT major.minor, the input shape, the data."""
    blob = json.dumps({"onnx": onnx_sha256, "tensorrt": list(trt_version[:2]), "shape": list(input_shape),
                       "data": calibration_id, "algorithm": "entropy2"}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


class CalibrationCache:
    """A TensorRT calibration cache file plus ``<cache>.json`` holding its key; a cache whose key differs
    (other model, TensorRT, shape or data) is ignored, so calibration runs again and rewrites it."""

    def __init__(self, path: str | Path, key: str):
        self.path, self.key = Path(path), key
        self.meta = self.path.with_name(self.path.name + ".json")

    def read(self) -> bytes | None:
        if not self.path.is_file():
            return None
        try:
            key = json.loads(self.meta.read_text()).get("key")
        except (OSError, ValueError, AttributeError):
            key = None
        if key != self.key:
            log.warning("%s: calibration cache is for another model/TensorRT/data; recalibrating", self.path)
            return None
        return self.path.read_bytes()

    def write(self, data: bytes) -> None:
        atomic_write_bytes(self.path, bytes(data))
        atomic_write_text(self.meta, json.dumps({"key": self.key}))


def make_entropy_calibrator(base, batches: CalibrationBatches | None, cache: CalibrationCache | None, stage):
    """An instance of a ``base`` subclass (``trt.IInt8EntropyCalibrator2``, TensorRT <= 10) that feeds
    ``batches`` through ``stage(array) -> device pointer`` and reads/writes ``cache``. Errors inside TensorRT's
    callbacks are kept in ``.error`` (an exception must not cross the C++ boundary) and end calibration."""

    class EntropyCalibrator(base):
        def __init__(self):
            base.__init__(self)  # pybind11 trampolines need the explicit base __init__
            self.error: BaseException | None = None

        def get_batch_size(self):
            return (batches.batch_size if batches is not None else 0) or 1

        def get_batch(self, names):
            try:
                batch = batches.next() if batches is not None else None
                return None if batch is None else [stage(batch)] * len(names)  # a reference input gets the query
            except Exception as exc:  # noqa: BLE001 - handed back to build_engine
                self.error = exc
                return None

        def read_calibration_cache(self):
            return cache.read() if cache is not None else None

        def write_calibration_cache(self, data):
            if cache is not None:
                cache.write(bytes(data))

    return EntropyCalibrator()
