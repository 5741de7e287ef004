"""The batch job behind ``cstf-edge run``: every image of the sources through one :class:`Detector`, the
outputs written as each image finishes (``cstf_edge.runtime.outputs``), one summary at the end.

    from cstf_edge.runtime.run import RunConfig, run
    summary = run(RunConfig(["scenes/"], model="cstf-n.onnx", out="out", formats=("dota", "task1")))
    summary.failed, summary.images_per_second, summary.to_dict()

Everything that can be checked before starting is (arguments, sources that name nothing, the model, its
classes, the device): those raise ``CstfError``. A source that cannot be read or run is recorded with its
path and reason, and the run goes on. Small in-memory images go through the backend ``batch`` at a time;
images larger than the tile are tiled (``Detector.detect_large``), rasters read window by window.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import cv2
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from cstf_edge.errors import CstfError, DataError
from cstf_edge.runtime.backends import open_runner
from cstf_edge.runtime.cuda.pipeline import PIPELINES
from cstf_edge.runtime.detector import DEFAULT_OVERLAP, DetectionResult, Detector
from cstf_edge.runtime.errors import PreprocessError
from cstf_edge.runtime.outputs import DEFAULT_FORMATS, OutputWriter, parse_formats
from cstf_edge.runtime.source_list import SourceItem, resolve_sources
from cstf_edge.runtime.sources import (IMAGE_SUFFIXES, MAX_DECODED_BYTES, RASTER_SUFFIXES, OpenedImage, SourceError,
                                       open_image)
from cstf_edge.runtime.timing import StageTimes

log = logging.getLogger(__name__)

# What one bad source may raise; anything else (a backend or model failure) stops the run.
RECOVERABLE = (DataError, PreprocessError, cv2.error, MemoryError, OSError)


@dataclass
class RunConfig:
    """The settings of one run (the ``cstf-edge run`` options)."""

    sources: list[str]
    model: str
    device: str = "cpu"
    out: str = "runs/detect"
    imgsz: int | None = None
    tile: int | None = None
    overlap: int = DEFAULT_OVERLAP
    conf: float = 0.25
    iou: float = 0.1
    classes: list[str] | None = None
    formats: tuple[str, ...] = DEFAULT_FORMATS
    save_vis: bool = False
    vis_conf: float | None = None  # pictures: draw detections of this score or more (None: all, as --conf keeps)
    batch: int = 1
    reference: str | None = None
    bands: list[int] | None = None
    skip_existing: bool = False
    max_frames: int | None = None
    progress: bool = True
    max_image_bytes: int = MAX_DECODED_BYTES
    pipeline: str = "cpu"

    def check(self) -> None:
        """Raise ``CstfError`` on a setting out of range."""
        self.formats = parse_formats(self.formats)
        problems = [
            (not 0.0 <= self.conf < 1.0, f"--conf must be in [0, 1), got {self.conf}"),
            (not 0.0 < self.iou <= 1.0, f"--iou must be in (0, 1], got {self.iou}"),
            (self.vis_conf is not None and not 0.0 <= self.vis_conf <= 1.0,
             f"--vis-conf must be in [0, 1], got {self.vis_conf}"),
            (self.vis_conf is not None and not self.save_vis, "--vis-conf sets what --save-vis draws: add --save-vis"),
            (self.batch < 1, f"--batch must be at least 1, got {self.batch}"),
            (self.imgsz is not None and self.imgsz < 32, f"--imgsz must be at least 32, got {self.imgsz}"),
            (self.tile is not None and self.tile < 32, f"--tile must be at least 32, got {self.tile}"),
            (self.overlap < 0, f"--overlap must be >= 0, got {self.overlap}"),
            (self.pipeline not in PIPELINES, f"--pipeline must be one of {', '.join(PIPELINES)}, got {self.pipeline}"),
            (self.max_frames is not None and self.max_frames < 1, f"--max-frames must be >= 1, got {self.max_frames}"),
            (self.bands is not None and (len(self.bands) not in (1, 3) or min(self.bands) < 1),
             f"--bands takes 1 or 3 band numbers from 1, got {self.bands}"),
        ]
        for bad, message in problems:
            if bad:
                raise CstfError(message)


@dataclass
class RunSummary:
    """Counts, failures and timings of a run; ``to_dict`` is what ``summary.json`` and ``--json`` hold."""

    model: str
    out: str
    total: int = 0
    processed: int = 0
    skipped: int = 0
    failures: list[dict] = field(default_factory=list)
    detections: int = 0
    per_class: dict[str, int] = field(default_factory=dict)
    wall_s: float = 0.0
    times: StageTimes = field(default_factory=StageTimes)
    images: list[dict] = field(default_factory=list)
    interrupted: bool = False

    @property
    def failed(self) -> int:
        return len(self.failures)

    @property
    def images_per_second(self) -> float:
        return self.processed / self.wall_s if self.wall_s > 0 else 0.0

    def per_image_ms(self) -> dict[str, float]:
        """Mean milliseconds per processed image of each stage."""
        return {k: round(v / max(1, self.processed), 3) for k, v in self.times.as_ms().items()}

    def to_dict(self, images: bool = True) -> dict:
        data = {"model": self.model, "out": self.out, "sources": self.total, "processed": self.processed,
                "skipped": self.skipped, "failed": self.failed, "failures": self.failures,
                "detections": self.detections, "per_class": self.per_class, "wall_s": round(self.wall_s, 3),
                "images_per_second": round(self.images_per_second, 3), "timings_ms": self.times.as_ms(),
                "timings_ms_per_image": self.per_image_ms(), "interrupted": self.interrupted}
        return {**data, "images": self.images} if images else data

    def line(self) -> str:
        """The one-line human summary."""
        stages = ", ".join(f"{k} {v:.1f}" for k, v in self.per_image_ms().items())
        return (f"{self.total} sources: {self.processed} done, {self.skipped} skipped, {self.failed} failed; "
                f"{self.detections} detections; {self.images_per_second:.2f} images/s; ms per image: {stages}; "
                f"outputs in {self.out}")


def resolve_classes(classes, names: list[str]) -> list[int] | None:
    """``--classes`` (names or 0-based indices, a list or ``"a,b"``) -> class indices of the model."""
    if not classes:
        return None
    tokens = [t.strip() for t in (classes.split(",") if isinstance(classes, str) else classes) if str(t).strip()]
    ids = []
    for token in map(str, tokens):
        if token in names:
            ids.append(names.index(token))
        elif token.isdigit() and int(token) < len(names):
            ids.append(int(token))
        else:
            raise CstfError(f"--classes: {token!r} is not a class of the model ({', '.join(names)})")
    return ids


class ReferenceImages:
    """``--reference``: one image for every source, or a folder holding one per source (same stem)."""

    def __init__(self, path: str, bands=None):
        self.path, self.bands = Path(path), bands
        if not self.path.exists():
            raise CstfError(f"--reference {path}: no such file or directory")

    def _file_for(self, item: SourceItem) -> Path:
        if self.path.is_file():
            return self.path
        for suffix in IMAGE_SUFFIXES + RASTER_SUFFIXES:
            for candidate in (self.path / f"{item.name}{suffix}", self.path / f"{item.name}{suffix.upper()}"):
                if candidate.is_file():
                    return candidate
        raise SourceError(item.path, f"no reference image {item.name}.* in {self.path}")

    def open_for(self, item: SourceItem, opened: OpenedImage, tiled: bool) -> OpenedImage:
        """The reference of ``item``; tiling needs it co-registered at the same size."""
        reference = open_image(self._file_for(item), self.bands)
        if tiled and reference.size != opened.size:
            reference.close()
            raise SourceError(item.path, f"its reference is {reference.size[0]} x {reference.size[1]} px, the image "
                              f"{opened.size[0]} x {opened.size[1]}; co-register them to the same grid first")
        return reference


def _stage_ms(times: StageTimes, before: dict, share: int = 1) -> dict[str, float]:
    """Milliseconds per stage since the ``before`` snapshot of ``times.seconds``, divided by ``share``."""
    return {k: (v - before.get(k, 0.0)) * 1000.0 / share for k, v in times.seconds.items() if v != before.get(k, 0.0)}


def _sum_ms(first: dict, second: dict) -> dict[str, float]:
    return {k: first.get(k, 0.0) + second.get(k, 0.0) for k in {**first, **second}}


def _reason(exc: BaseException) -> tuple[str | None, str]:
    if isinstance(exc, SourceError):
        return exc.path, exc.reason
    if isinstance(exc, MemoryError):
        return None, "out of memory"
    return None, str(exc).strip() or type(exc).__name__


class _Job:
    """The per-image work of one run: open, detect (batched when possible), write, count."""

    def __init__(self, detector: Detector, writer: OutputWriter, summary: RunSummary,
                 reference: ReferenceImages | None):
        self.detector, self.writer, self.summary, self.reference = detector, writer, summary, reference
        self.pending: list[tuple[SourceItem, OpenedImage, dict]] = []

    def process(self, item: SourceItem) -> None:
        self.summary.total += 1
        if self._already_done(item):
            return
        before = dict(self.detector.times.seconds)
        try:
            with self.detector.times("decode"):
                opened = item.open()
        except RECOVERABLE as exc:
            self._fail(item, exc)
            return
        opened_ms = _stage_ms(self.detector.times, before)
        if self._batchable(opened):
            self.pending.append((item, opened, opened_ms))
            if len(self.pending) >= self.detector.batch:
                self.flush()
            return
        self.flush()
        self._detect_one(item, opened, opened_ms)

    def _already_done(self, item: SourceItem) -> bool:
        if not self.writer.is_done(item.name):
            return False
        try:
            found = self.writer.restore(item.name)
        except DataError as exc:
            log.warning("%s; running it again", exc)
            return False
        self.summary.skipped += 1
        self.summary.images.append({"name": item.name, "path": item.path, "status": "skipped", "detections": found})
        return True

    def _batchable(self, opened: OpenedImage) -> bool:
        width, height = opened.size
        return (self.detector.batch > 1 and self.reference is None and opened.in_memory
                and not self.detector.needs_tiling(height, width))

    def flush(self) -> None:
        """Detect the pending small images in one batch (one by one if the batch fails)."""
        batch, self.pending = self.pending, []
        if not batch:
            return
        before = dict(self.detector.times.seconds)
        try:
            results = self.detector.detect_batch([opened.pixels for _, opened, _ in batch])
        except RECOVERABLE:
            for item, opened, opened_ms in batch:
                self._detect_one(item, opened, opened_ms)
            return
        shared = _stage_ms(self.detector.times, before, len(batch))
        for (item, opened, opened_ms), result in zip(batch, results):
            self._finish(item, opened, result, _sum_ms(opened_ms, shared))

    def _detect_one(self, item: SourceItem, opened: OpenedImage, opened_ms: dict) -> None:
        before, reference = dict(self.detector.times.seconds), None
        try:
            if self.reference is not None:
                tiled = self.detector.needs_tiling(opened.size[1], opened.size[0])
                reference = self.reference.open_for(item, opened, tiled)
            result = self.detector.detect_large(opened.reader, None if reference is None else reference.reader)
        except RECOVERABLE as exc:
            opened.close()
            self._fail(item, exc)
            return
        finally:
            if reference is not None:
                reference.close()
        self._finish(item, opened, result, _sum_ms(opened_ms, _stage_ms(self.detector.times, before)))

    def _finish(self, item: SourceItem, opened: OpenedImage, result: DetectionResult, timings: dict) -> None:
        try:
            with self.detector.times("write"):
                self.writer.write(item.name, item.path, opened.pixels, result, timings, opened.geo)
        except RECOVERABLE as exc:
            self._fail(item, exc)
            return
        finally:
            opened.close()
        self.summary.processed += 1
        self.summary.detections += len(result)
        for name in result.names:
            self.summary.per_class[name] = self.summary.per_class.get(name, 0) + 1
        self.summary.images.append({"name": item.name, "path": item.path, "status": "done", "detections": len(result),
                                    "width": result.image_shape[1], "height": result.image_shape[0]})

    def _fail(self, item: SourceItem, exc: BaseException) -> None:
        path, reason = _reason(exc)
        path = path or item.path
        log.warning("%s: %s", path, reason)
        self.summary.failures.append({"path": path, "reason": reason, "error": type(exc).__name__})
        self.summary.images.append({"name": item.name, "path": item.path, "status": "failed", "reason": reason})


def _open_detector(config: RunConfig) -> tuple[Detector, list[int] | None]:
    runner = open_runner(config.model, config.device)
    class_ids = resolve_classes(config.classes, list(runner.info.class_names))
    if config.reference is not None and not runner.info.with_reference:
        raise CstfError(f"--reference: {config.model} takes one input (no reference image); leave it out or "
                        "use a model exported with a reference input")
    detector = Detector(runner, config.device, conf=config.conf, iou=config.iou, imgsz=config.imgsz,
                        tile=config.tile, overlap=config.overlap, batch=config.batch, classes=class_ids,
                        pipeline=config.pipeline)
    if detector.batch != config.batch:
        log.info("%s is built for batch %d: --batch %d is not used", config.model, detector.batch, config.batch)
    return detector, class_ids


def _loop(job: _Job, sources, progress: bool) -> None:
    with logging_redirect_tqdm(), tqdm(sources.items, total=sources.total, desc="detect", unit="img",
                                       disable=not progress, dynamic_ncols=True) as bar:
        for item in bar:
            job.process(item)
            bar.set_postfix(dets=job.summary.detections, failed=job.summary.failed, refresh=False)
        job.flush()


def run(config: RunConfig) -> RunSummary:
    """Run ``config``; returns the summary (``failed`` > 0 when some source could not be used)."""
    config.check()
    sources = resolve_sources(config.sources, config.bands, config.max_frames, config.max_image_bytes)
    detector, _ = _open_detector(config)
    reference = None if config.reference is None else ReferenceImages(config.reference, config.bands)
    writer = OutputWriter(config.out, config.formats, detector.class_names, config.save_vis, config.skip_existing,
                          vis_conf=config.vis_conf or 0.0)
    summary = RunSummary(model=str(config.model), out=str(config.out), times=detector.times)
    with detector:
        job = _Job(detector, writer, summary, reference)
        start = time.perf_counter()
        try:
            _loop(job, sources, config.progress)
        except KeyboardInterrupt:
            summary.interrupted = True
            log.warning("interrupted: writing the results so far (--skip-existing resumes)")
        summary.wall_s = time.perf_counter() - start
    writer.finish(summary.to_dict())
    return summary
