"""CUDA twin of :func:`cstf_edge.runtime.preprocess.preprocess_batch`: letterbox (cv2 INTER_LINEAR resize +
constant pad), BGR -> RGB, times ``scale``, HWC -> CHW, float32, in one kernel per image.

The host computes cv2's resize taps once per source size (:func:`resize_taps`: ``cv2.resize`` computes
``fx = (float)((dx + 0.5) * scale_x - 0.5)``, ``sx = floor(fx)``, clamps at the borders and rounds the
weights to 11 bits), so the kernel only gathers and mixes integers. On this project's OpenCV build the
kernel's arithmetic reproduces ``cv2.resize`` bit for bit; other builds (a scalar rather than SIMD vertical
pass) may differ by 1 grey level, which is the tolerance the parity tests use (1/255 after scaling).
"""
from __future__ import annotations

import logging

import numpy as np

from cstf_edge.runtime.cuda import _driver
from cstf_edge.runtime.cuda.kernels import PREPROCESS_SOURCE
from cstf_edge.runtime.preprocess import Letterbox, PreprocessError, PreprocessSpec, check_image

log = logging.getLogger(__name__)

# Fixed-point scale of cv2's resize weights (INTER_RESIZE_COEF_SCALE).
COEF_SCALE = 2048
BLOCK = (32, 8)
# Byte alignment of each image's taps and pixels in the staging buffer.
ALIGN = 256


def _weights(frac: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """cv2's ``saturate_cast<short>(cbuf[k] * INTER_RESIZE_COEF_SCALE)`` of ``cbuf = (1 - f, f)`` (float32)."""
    one = np.float32(1.0)
    w0 = np.rint((one - frac) * np.float32(COEF_SCALE)).astype(np.int32)
    w1 = np.rint(frac * np.float32(COEF_SCALE)).astype(np.int32)
    return w0, w1


def _positions(src: int, dst: int) -> tuple[np.ndarray, np.ndarray]:
    """cv2's source position of each destination index: integer part and float32 fraction."""
    scale = 1.0 / (dst / src)  # cv2: scale_x = 1. / inv_scale_x, inv_scale_x = (double)dsize / ssize
    pos = ((np.arange(dst, dtype=np.float64) + 0.5) * scale - 0.5).astype(np.float32)
    start = np.floor(pos).astype(np.int64)
    return start, (pos - start.astype(np.float32)).astype(np.float32)


def resize_taps(src: int, dst: int, axis: str = "x") -> np.ndarray:
    """int32 ``[4, dst]``: the two source indices and the two 11-bit weights of each destination index,
    as ``cv2.resize(INTER_LINEAR)`` uses them along ``axis`` ("x": columns, "y": rows)."""
    if src < 1 or dst < 1:
        raise PreprocessError(f"cannot resize {src} pixels to {dst}")
    start, frac = _positions(src, dst)
    if axis == "x":  # cv2 moves out-of-range columns onto the border with weight (1, 0)
        outside = (start < 0) | (start >= src - 1)
        frac[outside] = 0.0
        start = np.clip(start, 0, src - 1)
    w0, w1 = _weights(frac)
    first = np.clip(start, 0, src - 1)
    return np.stack([first, np.clip(start + 1, 0, src - 1), w0, w1]).astype(np.int32)


def letterbox_taps(box: Letterbox) -> np.ndarray:
    """The kernel's table for one image: x taps ``[4, new_w]`` then y taps ``[4, new_h]``, flat int32."""
    return np.concatenate([resize_taps(box.src_w, box.new_w, "x").ravel(),
                           resize_taps(box.src_h, box.new_h, "y").ravel()])


def _aligned(offset: int) -> int:
    return -(-offset // ALIGN) * ALIGN


def staging_layout(images, boxes) -> tuple[list[tuple[int, int]], int]:
    """Byte offsets ``(taps, pixels)`` of each image in the staging buffer, and its total size."""
    offsets, end = [], 0
    for image, box in zip(images, boxes):
        taps = _aligned(end)
        pixels = _aligned(taps + 4 * 4 * (box.new_w + box.new_h))
        offsets.append((taps, pixels))
        end = pixels + image.nbytes
    return offsets, _aligned(end)


def check_spec(spec: PreprocessSpec) -> None:
    """Raise unless the kernel can do ``spec``'s conversion."""
    if spec.channels not in ("RGB", "BGR"):
        raise PreprocessError(f"channels {spec.channels!r} is not RGB or BGR")
    if not 0 <= int(spec.pad_value) <= 255:
        raise PreprocessError(f"pad_value {spec.pad_value} is not a uint8 grey level")


class CudaPreprocessor(_driver.StreamWork):
    """Letterbox + pixel conversion on the GPU into a float32 ``[max_batch, 3, H, W]`` device tensor.

    Images go through a pinned uint8 staging buffer, one async host -> device copy per call, and one
    ``letterbox_chw`` launch per image, all on :attr:`stream`. The returned device pointer stays valid (and
    its contents unchanged) until the next call; :meth:`download` copies it to the host.

        with CudaPreprocessor(spec, max_batch=4) as pre:
            ptr, box = pre(image)              # or: ptr, boxes = pre.run(images)
    """

    def __init__(self, spec: PreprocessSpec, max_batch: int = 1, device: int | None = None):
        check_spec(spec)
        if max_batch < 1:
            raise PreprocessError(f"max_batch must be at least 1, got {max_batch}")
        self.spec, self.max_batch = spec, int(max_batch)
        self.device = _driver.use_device(device)
        module = _driver.load_module(PREPROCESS_SOURCE, "cstf_preprocess.cu", self.device)
        self._kernel = module.function("letterbox_chw")
        self.stream = _driver.Stream()
        self.image_elements = 3 * spec.height * spec.width
        self.output = _driver.DeviceBuffer(self.max_batch * self.image_elements * 4)
        self._staging = _driver.PinnedBuffer(0)
        self._source = _driver.DeviceBuffer(0)
        self._taps: dict[tuple[int, int], np.ndarray] = {}

    def buffers(self) -> list:
        return [self.output, self._source, self._staging]

    def _table(self, box: Letterbox) -> np.ndarray:
        key = (box.src_h, box.src_w)
        if key not in self._taps:
            if len(self._taps) > 16:
                self._taps.clear()
            self._taps[key] = letterbox_taps(box)
        return self._taps[key]

    def _stage(self, images, boxes) -> list[tuple[int, int]]:
        """Copy taps and pixels into the pinned buffer, then one async copy of it to the device."""
        offsets, total = staging_layout(images, boxes)
        self._staging.ensure(total)
        self._source.ensure(total)
        for image, box, (taps_at, pixels_at) in zip(images, boxes, offsets):
            table = self._table(box)
            self._staging.view(taps_at, np.int32, table.shape)[:] = table
            self._staging.view(pixels_at, np.uint8, image.shape)[:] = image
        self.stream.to_device(self._source.ptr, self._staging.ptr, total)
        return offsets

    def _launch(self, index: int, box: Letterbox, taps_at: int, pixels_at: int) -> None:
        spec = self.spec
        out = self.output.ptr + index * self.image_elements * 4
        args = (_driver.pointer(self._source.ptr + pixels_at), np.int32(box.src_w),
                _driver.pointer(self._source.ptr + taps_at), np.int32(box.new_w), np.int32(box.new_h),
                np.int32(box.left), np.int32(box.top), np.int32(spec.pad_value), np.float32(spec.scale),
                np.int32(spec.channels == "RGB"), _driver.pointer(out), np.int32(spec.width),
                np.int32(spec.height))
        _driver.launch(self._kernel, _driver.grid_2d(spec.width, spec.height, BLOCK), BLOCK, args, self.stream)

    def run(self, images) -> tuple[int, list[Letterbox]]:
        """uint8 BGR images (any sizes, at most ``max_batch``) -> device pointer of the float32
        ``[len(images), 3, H, W]`` input (queued on :attr:`stream`) and each image's letterbox."""
        images = list(images)
        if not images or len(images) > self.max_batch:
            raise PreprocessError(f"expected 1 to {self.max_batch} images, got {len(images)}")
        for image in images:
            check_image(image)
        images = [np.ascontiguousarray(image) for image in images]
        boxes = [Letterbox.fit(image.shape[0], image.shape[1], self.spec) for image in images]
        _driver.check(_driver.bindings().runtime.cudaSetDevice(self.device), "cudaSetDevice")
        self.stream.synchronize()  # the previous call's copy out of the staging buffer is done
        offsets = self._stage(images, boxes)
        for index, (box, (taps_at, pixels_at)) in enumerate(zip(boxes, offsets)):
            self._launch(index, box, taps_at, pixels_at)
        return self.output.ptr, boxes

    def __call__(self, image: np.ndarray) -> tuple[int, Letterbox]:
        """One image -> device pointer of its ``[1, 3, H, W]`` input and its letterbox."""
        ptr, boxes = self.run([image])
        return ptr, boxes[0]

    def download(self, count: int = 1) -> np.ndarray:
        """The first ``count`` images of the device tensor as a host ``[count, 3, H, W]`` float32 array."""
        out = np.empty((count, 3, self.spec.height, self.spec.width), dtype=np.float32)
        self.stream.to_host(out.ctypes.data, self.output.ptr, out.nbytes)
        self.stream.synchronize()
        return out
