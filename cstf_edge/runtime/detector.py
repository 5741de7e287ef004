"""``Detector``: pre -> infer -> post on one artifact, and tiled detection of scenes larger than the input.

    with Detector("cstf-n.onnx") as detector:
        result = detector.detect(image)            # any size: letterboxed to the network input
        scene = detector.detect_large("big.tif")   # tiles of the input size overlapping by 200 px

``pipeline="cuda"`` (or ``"auto"`` on a CUDA device with cuda-python) runs letterbox + normalise and
decode/threshold/top-k/NMS on the GPU (``cstf_edge.runtime.cuda.pipeline``), with the same results.

Tiling follows DOTA's split: windows of ``tile`` pixels sliding by ``tile - overlap``, the last one snapped to
the edge (``cstf_edge.data.split.window_origins``), padded with the letterbox grey where the scene ends.
Tiles go through the backend ``batch`` at a time; detections are shifted to scene pixels and merged with
class-aware rotated NMS. Only one batch of tiles is in memory at once, and a :class:`WindowReader`
(e.g. a GeoTIFF opened by ``cstf_edge.runtime.sources``) is read window by window.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from cstf_edge.data.split import crop_window, window_origins
from cstf_edge.runtime.backends import Runner, open_runner
from cstf_edge.runtime.cuda.pipeline import open_pipeline
from cstf_edge.runtime.errors import PreprocessError
from cstf_edge.runtime.postprocess import MAX_DETECTIONS, Detections, nms, postprocess, to_image
from cstf_edge.runtime.preprocess import PreprocessSpec, preprocess_batch
from cstf_edge.runtime.timing import StageTimes

log = logging.getLogger(__name__)

DEFAULT_OVERLAP = 200


@dataclass
class DetectionResult(Detections):
    """Detections of one image in its pixels, with the model's class names and the image size."""

    class_names: list[str] = field(default_factory=list)
    image_shape: tuple[int, int] = (0, 0)  # height, width

    @property
    def names(self) -> list[str]:
        return [self.class_names[i] for i in self.class_ids]


class WindowReader(Protocol):
    """A scene read window by window: ``read(left, up, width, height)`` -> uint8 BGR (clipped at the edges)."""

    width: int
    height: int

    def read(self, left: int, up: int, width: int, height: int) -> np.ndarray: ...


class ArrayWindows:
    """:class:`WindowReader` over an image already in memory."""

    def __init__(self, image: np.ndarray):
        self.image = image
        self.height, self.width = image.shape[:2]

    def read(self, left: int, up: int, width: int, height: int) -> np.ndarray:
        return self.image[up:up + height, left:left + width]


class Detector:
    """One artifact, its preprocessing and post-processing. ``imgsz``, when given, must equal the artifact's
    input size (checked at load); ``tile`` defaults to the input size. ``pipeline``: ``cpu`` (numpy twins),
    ``cuda`` (CUDA twins; :class:`BackendUnavailableError` without cuda-python) or ``auto`` (``cuda`` when
    ``device`` is a CUDA device and cuda-python imports)."""

    def __init__(self, artifact: str | Path | Runner, device: str = "cpu", *, conf: float = 0.25, iou: float = 0.1,
                 imgsz: int | None = None, tile: int | None = None, overlap: int = DEFAULT_OVERLAP, batch: int = 1,
                 classes=None, max_det: int = MAX_DETECTIONS, pipeline: str = "cpu"):
        self.runner = artifact if isinstance(artifact, Runner) else open_runner(artifact, device)
        self.info = self.runner.info
        self.spec: PreprocessSpec = self.info.preprocess
        if imgsz is not None:
            self.info.check_against(PreprocessSpec(imgsz, imgsz, **_conversion(self.spec)), self.runner.path)
        self.conf, self.iou, self.max_det = conf, iou, max_det
        self.tile = tile or max(self.spec.height, self.spec.width)
        if not 0 <= overlap < self.tile:
            raise PreprocessError(f"overlap {overlap} must be >= 0 and smaller than the tile {self.tile}")
        self.overlap = overlap
        self.batch = batch
        self.classes = None if classes is None else np.asarray(classes)
        self.times = StageTimes()
        if self.info.batch is not None:
            self.batch = self.info.batch
        self.runner.check_batch(self.batch)
        self.pipeline = open_pipeline(pipeline, device, self.spec, self.batch)
        self._preprocess = preprocess_batch if self.pipeline is None else self.pipeline.preprocess
        self._postprocess = postprocess if self.pipeline is None else self.pipeline.postprocess

    def __enter__(self) -> "Detector":
        self.runner.__enter__()
        return self

    def __exit__(self, *exc_info) -> None:
        try:
            self.runner.__exit__(*exc_info)
        finally:
            if self.pipeline is not None:
                self.pipeline.close()

    @property
    def class_names(self) -> list[str]:
        return list(self.info.class_names)

    def _infer(self, images: list[np.ndarray], references: list[np.ndarray] | None) -> list[Detections]:
        """Letterboxed inference on up to ``batch`` images; detections in each image's pixels."""
        with self.times("pre"):
            tensor, boxes = self._preprocess(images, self.spec)
            feed = {"images": tensor}
            if self.info.with_reference:
                feed["reference"] = tensor if references is None else self._preprocess(references, self.spec)[0]
            padding = self.batch - len(images) if self.info.batch is not None else 0
            if padding > 0:
                feed = {k: np.concatenate([v, np.repeat(v[-1:], padding, 0)]) for k, v in feed.items()}
        with self.times("infer"):
            raw = self.runner.infer(feed)["detections"]
        with self.times("post"):
            return [to_image(self._postprocess(raw[i], self.conf, self.iou, classes=self.classes,
                                               max_det=self.max_det), box) for i, box in enumerate(boxes)]

    def detect_batch(self, images: list[np.ndarray], references: list[np.ndarray] | None = None) -> list[DetectionResult]:
        """Each image letterboxed whole to the network input (no tiling)."""
        results = []
        for start in range(0, len(images), self.batch):
            chunk = images[start:start + self.batch]
            refs = None if references is None else references[start:start + self.batch]
            for image, found in zip(chunk, self._infer(chunk, refs)):
                results.append(self._result(found, image.shape[:2]))
        return results

    def detect(self, image: np.ndarray, reference: np.ndarray | None = None) -> DetectionResult:
        """One image of any size, letterboxed whole to the network input."""
        return self.detect_batch([image], None if reference is None else [reference])[0]

    def needs_tiling(self, height: int, width: int) -> bool:
        return max(height, width) > self.tile

    def detect_large(self, scene, reference=None) -> DetectionResult:
        """A scene of any size — an array, a :class:`WindowReader` or a path (an image, or a GeoTIFF read
        window by window; ``cstf_edge.runtime.sources``) — tiled when larger than ``tile``."""
        opened = [_open_scene(item) for item in (scene, reference)]
        try:
            return self._detect_large(*(reader for reader, _ in opened))
        finally:
            for _, close in opened:
                close()

    def _detect_large(self, reader: WindowReader, ref_reader: WindowReader | None) -> DetectionResult:
        if not self.needs_tiling(reader.height, reader.width):
            with self.times("decode"):
                image = reader.read(0, 0, reader.width, reader.height)
                ref = None if ref_reader is None else ref_reader.read(0, 0, reader.width, reader.height)
            return self.detect(image, ref)
        return self._detect_tiled(reader, ref_reader)

    def _read_tile(self, reader: WindowReader, left: int, up: int) -> np.ndarray:
        with self.times("decode"):
            return crop_window(reader.read(left, up, self.tile, self.tile), 0, 0, self.tile, self.spec.pad_value)

    def _detect_tiled(self, reader: WindowReader, ref_reader: WindowReader | None) -> DetectionResult:
        origins = window_origins(reader.width, reader.height, self.tile, self.overlap)
        parts = []
        for start in range(0, len(origins), self.batch):
            chunk = origins[start:start + self.batch]
            tiles = [self._read_tile(reader, left, up) for left, up in chunk]
            refs = None if ref_reader is None else [self._read_tile(ref_reader, left, up) for left, up in chunk]
            parts += [found.shifted(left, up) for (left, up), found in zip(chunk, self._infer(tiles, refs))]
        with self.times("merge"):
            merged = nms(Detections.concatenate(parts), self.iou, max_det=self.max_det * max(1, len(origins)))
        log.debug("%d tiles -> %d detections", len(origins), len(merged))
        return self._result(merged, (reader.height, reader.width))

    def _result(self, found: Detections, shape) -> DetectionResult:
        return DetectionResult(found.rboxes, found.scores, found.class_ids, self.class_names,
                               (int(shape[0]), int(shape[1])))


def _open_scene(scene):
    """``(reader, close)`` for an array, a window reader, a path or None."""
    if scene is None or isinstance(scene, np.ndarray):
        return (None if scene is None else ArrayWindows(scene)), lambda: None
    if isinstance(scene, (str, Path)):
        from cstf_edge.runtime.sources import open_image  # sources builds on this module

        opened = open_image(scene)
        return opened.reader, opened.close
    return scene, lambda: None


def _conversion(spec: PreprocessSpec) -> dict:
    meta = spec.to_metadata()
    return {k: v for k, v in meta.items() if k not in ("height", "width")}
