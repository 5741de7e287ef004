"""What a run's SOURCE arguments name: files, folders (not recursive), globs, videos (frame by frame) and
camera indexes, as a lazy list of items each opened only when the run reaches it (pixels by the conversion
rule of :mod:`cstf_edge.runtime.sources`)."""
from __future__ import annotations

import glob
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import cv2

from cstf_edge.errors import CstfError
from cstf_edge.runtime.sources import (IMAGE_SUFFIXES, MAX_DECODED_BYTES, RASTER_SUFFIXES, VIDEO_SUFFIXES,
                                       OpenedImage, UnreadableImageError, open_image, to_bgr8)


@dataclass
class SourceItem:
    """One image of a run: ``name`` (output stem and DOTA image id), ``path`` (for reports) and ``open``."""

    name: str
    path: str
    open: Callable[[], OpenedImage]


@dataclass
class SourceSet:
    """The items of a run (lazy for videos and cameras) and their number when known."""

    items: Iterator[SourceItem]
    total: int | None


def _video_items(video, name: str, bands, max_frames: int | None) -> Iterator[SourceItem]:
    """One item per decoded frame of a video file or camera index."""
    capture = cv2.VideoCapture(video)
    if not capture.isOpened():
        reason = "cannot open this camera" if isinstance(video, int) else "OpenCV cannot open this video"

        def fail():
            raise UnreadableImageError(video, reason)
        yield SourceItem(name, str(video), fail)
        return
    try:
        index = 0
        while max_frames is None or index < max_frames:
            ok, frame = capture.read()
            if not ok:
                break
            yield SourceItem(f"{name}_{index:06d}", f"{video}#{index}",
                             lambda f=frame: OpenedImage(to_bgr8(f[..., ::-1] if f.ndim == 3 else f, bands)))
            index += 1
    finally:
        capture.release()


def _frame_count(path: Path, max_frames: int | None) -> int:
    capture = cv2.VideoCapture(str(path))
    count = max(1, int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) if capture.isOpened() else 1)
    capture.release()
    return count if max_frames is None else min(count, max_frames)


def _expand(spec: str) -> list[Path] | int:
    """The files a SOURCE argument names, or a camera index."""
    path = Path(spec)
    if path.is_dir():
        suffixes = IMAGE_SUFFIXES + RASTER_SUFFIXES + VIDEO_SUFFIXES
        files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in suffixes)
        if not files:
            raise CstfError(f"{spec}: no image, raster or video file in this directory")
        return files
    if path.is_file():
        return [path]
    if spec.isdigit():
        return int(spec)
    if glob.has_magic(spec):
        files = sorted(Path(p) for p in glob.glob(spec, recursive=True) if Path(p).is_file())
        if not files:
            raise CstfError(f"{spec}: the pattern matches no file")
        return files
    raise CstfError(f"{spec}: no such file or directory (nor a glob pattern or camera index)")


def _check_names(files: list[Path]) -> None:
    seen: dict[str, Path] = {}
    for path in files:
        if path.stem in seen:
            raise CstfError(f"{seen[path.stem]} and {path} would write the same outputs ({path.stem}); "
                            "run them separately or rename one")
        seen[path.stem] = path


def resolve_sources(specs, bands=None, max_frames: int | None = None,
                    max_bytes: int = MAX_DECODED_BYTES) -> SourceSet:
    """Every SOURCE argument expanded into items; a SOURCE naming nothing is a ``CstfError`` (raised now,
    before any work), an item that cannot be read raises its ``SourceError`` when opened."""
    expanded = [_expand(str(spec)) for spec in ([specs] if isinstance(specs, (str, Path)) else specs)]
    files = [path for entry in expanded if not isinstance(entry, int) for path in entry]
    _check_names(files)
    total: int | None = 0
    for entry in expanded:
        if isinstance(entry, int):
            total = None
        elif total is not None:
            total += sum(_frame_count(p, max_frames) if p.suffix.lower() in VIDEO_SUFFIXES else 1 for p in entry)
    return SourceSet(_items(expanded, bands, max_frames, max_bytes), total)


def _items(expanded, bands, max_frames, max_bytes) -> Iterator[SourceItem]:
    for entry in expanded:
        if isinstance(entry, int):
            yield from _video_items(entry, f"camera{entry}", bands, max_frames)
            continue
        for path in entry:
            if path.suffix.lower() in VIDEO_SUFFIXES:
                yield from _video_items(str(path), path.stem, bands, max_frames)
            else:
                yield SourceItem(path.stem, str(path), lambda p=path: open_image(p, bands, max_bytes))
