"""CUDA twin of :func:`cstf_edge.runtime.postprocess.postprocess` (``select_candidates`` then ``nms``).

On the device: best class and score threshold per anchor, a 64-bit key per candidate (score descending,
anchor index ascending: the numpy twin's stable sort), a bitonic sort of the keys, the top ``max_candidates``
gathered with their float64 polygons, and the NMS bitmask (torchvision's layout: row ``i`` holds, per block
of 64 later candidates, the bits of those of ``i``'s class with exact rotated IoU above the threshold). The
mask comes back to the host, where :func:`greedy_reduce` walks it in rank order.

Kept set and order equal the numpy twin's, ties included: candidates tie by anchor index (the sort key),
and the class-aware output is ordered by score, class, then rank as the twin orders it (:func:`order_kept`).
They can differ only where a pair's IoU lies within about 1e-12 of the threshold: the kernel clips polygons
(Sutherland-Hodgman, float64) where the twin integrates edges (Green's theorem); the tests allow 1e-6.
"""
from __future__ import annotations

import logging

import numpy as np

from cstf_edge.geometry import poly_to_hbb, rbox_to_poly
from cstf_edge.geometry.iou import polygon_iou_pairs
from cstf_edge.geometry.pairs import overlapping_pairs
from cstf_edge.runtime.cuda import _driver
from cstf_edge.runtime.cuda.kernels import NMS_BLOCK, POSTPROCESS_KERNEL_NAMES, POSTPROCESS_SOURCE, SORT_TILE
from cstf_edge.runtime.postprocess import MAX_CANDIDATES, MAX_DETECTIONS, Detections

log = logging.getLogger(__name__)

THREADS = 256
COMPILE_OPTIONS = ("--fmad=false",)  # no fused multiply-adds: the polygon arithmetic rounds as numpy's


def conf_threshold(conf, dtype=np.float32) -> np.float32:
    """The smallest float32 ``t`` with ``np.asarray([t], dtype) >= conf``: comparing float32 scores with
    ``t`` on the device selects exactly what numpy selects (a Python float compares in float32 under
    NEP 50, a float64 in float64)."""
    guess = np.float32(conf)
    for candidate in (np.nextafter(guess, np.float32(-np.inf)), guess, np.nextafter(guess, np.float32(np.inf))):
        if (np.asarray([candidate], dtype=dtype) >= conf)[0]:
            return np.float32(candidate)
    return np.float32(np.nan)  # conf is NaN (or above every float32): nothing passes


def padded_length(n: int) -> int:
    """The power of two (at least 2) the bitonic sort runs on."""
    return max(2, 1 << max(0, int(n) - 1).bit_length())


def bitonic_schedule(n: int, tile: int = SORT_TILE) -> list[tuple]:
    """Launches that sort ``n`` (a power of two) keys: ``("local", k_first, k_last, tile)`` sorts stages
    ``k_first..k_last`` for strides below the tile in shared memory, ``("global", k, j)`` is one step."""
    tile = min(tile, n)
    steps: list[tuple] = [("local", 2, tile, tile)]
    k = 2 * tile
    while k <= n:
        j = k // 2
        while j >= tile:
            steps.append(("global", k, j))
            j //= 2
        steps.append(("local", k, k, tile))
        k *= 2
    return steps


def expand_schedule(steps) -> list[tuple[int, int]]:
    """Every ``(k, j)`` compare-exchange step the launches of :func:`bitonic_schedule` perform, in order."""
    out = []
    for step in steps:
        if step[0] == "global":
            out.append((step[1], step[2]))
            continue
        _, k, k_last, tile = step
        while k <= k_last:
            j = min(k // 2, tile // 2)
            while j > 0:
                out.append((k, j))
                j //= 2
            k *= 2
    return out


def nms_mask_numpy(rboxes: np.ndarray, class_ids: np.ndarray, iou: float, agnostic: bool = False) -> np.ndarray:
    """Reference for the ``nms_mask`` kernel: uint64 ``[K, ceil(K / 64)]`` from exact IoU (geometry.iou),
    evaluated on the pairs whose axis-aligned bounds overlap (the others have IoU 0)."""
    count = len(rboxes)
    polys = rbox_to_poly(np.asarray(rboxes, dtype=np.float64).reshape(-1, 5))
    first, second = overlapping_pairs(poly_to_hbb(polys))  # first < second
    if not agnostic:
        same = np.asarray(class_ids)[first] == np.asarray(class_ids)[second]
        first, second = first[same], second[same]
    hits = polygon_iou_pairs(polys[first], polys[second]) > iou
    first, second = first[hits], second[hits]
    mask = np.zeros((count, _driver.ceil_div(count, NMS_BLOCK)), dtype=np.uint64)
    bits = np.left_shift(np.uint64(1), (second % NMS_BLOCK).astype(np.uint64))
    np.bitwise_or.at(mask, (first, second // NMS_BLOCK), bits)
    return mask


def greedy_reduce(mask: np.ndarray, count: int) -> np.ndarray:
    """Ranks kept by greedy NMS over the bitmask (row ``i``: the later ranks ``i`` suppresses)."""
    rows = np.ascontiguousarray(mask[:count], dtype="<u8")
    removed, keep = 0, []
    for rank in range(count):
        if (removed >> rank) & 1:
            continue
        keep.append(rank)
        removed |= int.from_bytes(rows[rank].tobytes(), "little")
    return np.asarray(keep, dtype=np.int64)


def order_kept(kept: np.ndarray, scores: np.ndarray, class_ids: np.ndarray, agnostic: bool) -> np.ndarray:
    """The numpy twin's output order: rank order when agnostic, else by score, then class, then rank."""
    if agnostic or not len(kept):
        return kept
    return kept[np.lexsort((kept, class_ids[kept], -scores[kept]))]


class CudaPostprocessor(_driver.StreamWork):
    """Candidate selection and class-aware rotated NMS of one image's ``raw [N, 5 + C]`` float32 output on
    the GPU; results equal :func:`cstf_edge.runtime.postprocess.postprocess`'s (see the module docstring).

        post = CudaPostprocessor(num_anchors=21504, num_classes=15)
        found = post(raw, conf=0.25, iou=0.5)     # raw: host float32 array or a device pointer
    """

    def __init__(self, num_anchors: int, num_classes: int, max_candidates: int = MAX_CANDIDATES,
                 max_det: int = MAX_DETECTIONS, device: int | None = None):
        if num_anchors < 1 or num_classes < 1 or max_candidates < 1:
            raise ValueError("num_anchors, num_classes and max_candidates must be at least 1")
        self.num_anchors, self.num_classes = int(num_anchors), int(num_classes)
        self.max_candidates, self.max_det = int(max_candidates), int(max_det)
        self.padded = padded_length(self.num_anchors)
        self.device = _driver.use_device(device)
        module = _driver.load_module(POSTPROCESS_SOURCE, "cstf_postprocess.cu", self.device, COMPILE_OPTIONS)
        self._kernels = {name: module.function(name) for name in POSTPROCESS_KERNEL_NAMES}
        self.stream = _driver.Stream()
        self._buffers = self._allocate()

    def _allocate(self) -> dict:
        k, words = self.max_candidates, _driver.ceil_div(self.max_candidates, NMS_BLOCK)
        sizes = {"raw": self.num_anchors * (5 + self.num_classes) * 4, "class_ok": self.num_classes,
                 "keys": self.padded * 8, "count": 4, "boxes": k * 20, "scores": k * 4, "classes": k * 4,
                 "polys": k * 64, "mask": k * words * 8}
        return {name: _driver.DeviceBuffer(size) for name, size in sizes.items()}

    def buffers(self) -> list:
        return list(self._buffers.values())

    def _ptr(self, name: str) -> np.uint64:
        return _driver.pointer(self._buffers[name].ptr)

    def _launch(self, name: str, n: int, args, grid=None, block=THREADS, shared: int = 0) -> None:
        grid = grid or _driver.grid_1d(n, block)
        _driver.launch(self._kernels[name], grid, (block,), args, self.stream, shared)

    def _upload(self, raw) -> int:
        """Device address of the raw output (copied from the host when given as an array)."""
        if not isinstance(raw, np.ndarray):
            return int(raw)
        expected = (self.num_anchors, 5 + self.num_classes)
        if raw.shape != expected:
            raise ValueError(f"raw detections of shape {raw.shape}, expected {expected}")
        host = np.ascontiguousarray(raw, dtype=np.float32)
        self.stream.to_device(self._buffers["raw"].ptr, host.ctypes.data, host.nbytes)
        return self._buffers["raw"].ptr

    def _select(self, raw_ptr: int, conf, classes) -> None:
        use = classes is not None
        if use:  # np.isin, as select_candidates filters
            allowed = np.isin(np.arange(self.num_classes), np.asarray(classes)).astype(np.uint8)
            self.stream.to_device(self._buffers["class_ok"].ptr, allowed.ctypes.data, allowed.nbytes)
        self.stream.memset(self._buffers["count"].ptr, 0, 4)
        args = (_driver.pointer(raw_ptr), np.int32(self.num_anchors), np.int32(5 + self.num_classes),
                np.int32(self.num_classes), conf_threshold(conf), self._ptr("class_ok"), np.int32(use),
                self._ptr("keys"), np.int32(self.padded), self._ptr("count"))
        self._launch("select_keys", self.padded, args)

    def _sort(self) -> None:
        for step in bitonic_schedule(self.padded):
            if step[0] == "global":
                args = (self._ptr("keys"), np.uint32(self.padded), np.uint32(step[2]), np.uint32(step[1]))
                self._launch("bitonic_global", self.padded // 2, args)
            else:
                _, k_first, k_last, tile = step
                args = (self._ptr("keys"), np.uint32(k_first), np.uint32(k_last))
                self._launch("bitonic_local", 0, args, grid=(self.padded // tile,), block=tile // 2,
                             shared=tile * 8)

    def _candidate_count(self) -> int:
        count = np.zeros(1, dtype=np.uint32)
        self.stream.to_host(count.ctypes.data, self._buffers["count"].ptr, 4)
        self.stream.synchronize()
        return min(int(count[0]), self.max_candidates)

    def _candidates(self, raw, conf, classes) -> tuple[int, int]:
        """Select, sort and gather on the device: (raw address, number of candidates)."""
        _driver.check(_driver.bindings().runtime.cudaSetDevice(self.device), "cudaSetDevice")
        raw_ptr = self._upload(raw)
        self._select(raw_ptr, conf, classes)
        self._sort()
        count = self._candidate_count()
        if count:
            args = (self._ptr("keys"), np.int32(count), _driver.pointer(raw_ptr), np.int32(5 + self.num_classes),
                    np.int32(self.num_classes), self._ptr("boxes"), self._ptr("scores"), self._ptr("classes"),
                    self._ptr("polys"))
            self._launch("gather_candidates", count, args)
        return raw_ptr, count

    def _mask(self, count: int, iou: float, agnostic: bool) -> int:
        """Queue the NMS bitmask of the ``count`` candidates; its words per row."""
        words = _driver.ceil_div(count, NMS_BLOCK)
        args = (np.int32(count), np.int32(words), self._ptr("polys"), self._ptr("classes"), np.int32(agnostic),
                np.float64(iou), self._ptr("mask"))
        self._launch("nms_mask", count, args, grid=(_driver.ceil_div(count, NMS_BLOCK), words), block=NMS_BLOCK)
        return words

    def _download(self, count: int, words: int = 0) -> tuple[np.ndarray, ...]:
        boxes = np.empty((count, 5), np.float32)
        scores, classes = np.empty(count, np.float32), np.empty(count, np.int32)
        mask = np.empty((count, words), np.uint64)
        for name, array in (("boxes", boxes), ("scores", scores), ("classes", classes), ("mask", mask)):
            if array.nbytes:
                self.stream.to_host(array.ctypes.data, self._buffers[name].ptr, array.nbytes)
        self.stream.synchronize()
        return boxes, scores, classes, mask

    def select(self, raw, conf: float = 0.25, classes=None) -> Detections:
        """The candidates alone: equals :func:`cstf_edge.runtime.postprocess.select_candidates`."""
        _, count = self._candidates(raw, conf, classes)
        boxes, scores, class_ids, _ = self._download(count)
        return Detections(boxes.astype(np.float64), scores, class_ids.astype(np.int64))

    def mask(self, raw, conf: float = 0.25, iou: float = 0.5, classes=None, agnostic: bool = False) -> np.ndarray:
        """The NMS bitmask of the candidates (for parity checks against :func:`nms_mask_numpy`)."""
        _, count = self._candidates(raw, conf, classes)
        return self._download(count, self._mask(count, iou, agnostic) if count else 0)[3]

    def __call__(self, raw, conf: float = 0.25, iou: float = 0.5, classes=None, agnostic: bool = False,
                 max_det: int | None = None) -> Detections:
        """Raw ``[N, 5 + C]`` (host float32 array, or a device address of one) -> NMS-ed detections in
        network-input pixels, as :func:`cstf_edge.runtime.postprocess.postprocess` returns them for the
        same float32 array (a float64 host array is converted to float32 first)."""
        _, count = self._candidates(raw, conf, classes)
        if count == 0:
            return Detections.empty()
        boxes, scores, class_ids, mask = self._download(count, self._mask(count, iou, agnostic))
        limit = self.max_det if max_det is None else int(max_det)
        kept = order_kept(greedy_reduce(mask, count), scores, class_ids, agnostic)[:limit]
        log.debug("CUDA post-processing: %d candidates, %d kept", count, len(kept))
        return Detections(boxes[kept].astype(np.float64), scores[kept], class_ids[kept].astype(np.int64))
