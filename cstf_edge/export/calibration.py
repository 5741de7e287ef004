"""Calibration sets: a manifest in ``calibration/`` says where the images come from; one batcher feeds them
through the runtime's own preprocessing to every consumer (ONNX Runtime's quantizer, Model Optimizer,
TensorRT's entropy calibrator), so calibration and inference cannot drift apart.

Manifest (TOML)::

    source = "synthrs"      # "synthrs" (scenes made on demand), "dir" (a folder of images) or "images"
    count = 32              # images used (the first ``count`` in name order; a set with fewer is an error)
    seed = 3                # SynthRS: the data-set seed (keep it apart from training and validation seeds)
    size = 1024             # SynthRS: scene size in pixels
    path = "data/calib"     # dir: the folder; images: a list in ``images = [...]``

SynthRS scenes are generated once into the cache folder (``$CSTF_EDGE_CACHE`` or ``~/.cache/cstf-edge``).
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np

from cstf_edge._io import read_image
from cstf_edge.data.dota import IMAGE_SUFFIXES
from cstf_edge.errors import DataError
from cstf_edge.export.errors import ExportError
from cstf_edge.runtime.preprocess import PreprocessSpec, preprocess_batch

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

log = logging.getLogger(__name__)

MIN_IMAGES = 8
SOURCES = ("synthrs", "dir", "images")


def cache_dir() -> Path:
    """Where generated calibration/validation scenes and calibration results are kept."""
    return Path(os.environ.get("CSTF_EDGE_CACHE", Path.home() / ".cache" / "cstf-edge"))


@dataclass
class CalibrationManifest:
    """A calibration (or validation) set as a manifest describes it."""

    source: str
    count: int
    seed: int = 3
    size: int = 1024
    path: str | None = None
    images: list[str] = field(default_factory=list)
    origin: str = ""

    @classmethod
    def load(cls, path: str | Path) -> "CalibrationManifest":
        path = Path(path)
        if not path.is_file():
            raise ExportError(f"{path}: no such calibration manifest (see calibration/README.md)")
        try:
            values = tomllib.loads(path.read_text())
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ExportError(f"{path}: not valid TOML ({exc})") from None
        values.pop("name", None)
        values.pop("description", None)
        try:
            manifest = cls(**values, origin=str(path))
        except TypeError as exc:
            raise ExportError(f"{path}: {exc}; keys are source, count, seed, size, path, images") from None
        return manifest.check()

    def check(self) -> "CalibrationManifest":
        if self.source not in SOURCES:
            raise ExportError(f"{self.origin}: source {self.source!r} is not one of {', '.join(SOURCES)}")
        if self.count < MIN_IMAGES:
            raise ExportError(f"{self.origin}: count {self.count} is too small to calibrate; use at least "
                              f"{MIN_IMAGES} (32 to 512 images is usual)")
        if self.source == "dir" and not self.path:
            raise ExportError(f"{self.origin}: source 'dir' needs path = \"folder of images\"")
        return self

    def describe(self) -> dict:
        """JSON-able description for reports and artifact metadata."""
        return {"source": self.source, "count": self.count, "seed": self.seed, "size": self.size,
                "path": self.path, "manifest": self.origin}

    def image_paths(self, progress: bool = True) -> list[Path]:
        """The ``count`` image files of the set (SynthRS scenes generated into the cache if needed)."""
        if self.source == "synthrs":
            found = _synthrs_images(self.seed, self.size, self.count, progress)
        elif self.source == "dir":
            folder = Path(self.path)
            if not folder.is_dir():
                raise ExportError(f"{self.origin}: calibration folder {folder} does not exist")
            found = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        else:
            found = [Path(p) for p in self.images]
        if len(found) < self.count:
            raise ExportError(f"{self.origin}: needs {self.count} images, found {len(found)}; lower count or add "
                              "images")
        return found[: self.count]


def synthrs_folder(seed: int, size: int, count: int, progress: bool = True) -> Path:
    """A SynthRS folder (DOTA layout) in the cache with at least ``count`` scenes of data set ``seed``."""
    from cstf_edge.data.synthrs import generate_dataset

    folder = cache_dir() / "synthrs" / f"seed{seed}_size{size}"
    generate_dataset(folder, count, size=size, seed=seed, progress=progress)
    return folder


def _synthrs_images(seed: int, size: int, count: int, progress: bool) -> list[Path]:
    return sorted((synthrs_folder(seed, size, count, progress) / "images").glob("*.png"))[:count]


def fingerprint(paths: list[Path]) -> str:
    """sha256 over the images' bytes (a changed image changes the calibration cache key)."""
    digest = hashlib.sha256()
    for path in paths:
        digest.update(path.name.encode())
        try:
            digest.update(path.read_bytes())
        except OSError as exc:
            raise ExportError(f"{path}: calibration image unreadable ({exc.strerror})") from None
    return digest.hexdigest()


class CalibrationBatcher:
    """Batches ``[B, 3, H, W]`` float32 of the calibration images through the runtime's preprocessing.
    Iterate it as often as needed (each pass re-reads the files)."""

    def __init__(self, paths: list[Path], spec: PreprocessSpec, batch: int = 1):
        self.paths, self.spec, self.batch = list(paths), spec, batch

    def __len__(self) -> int:
        return (len(self.paths) + self.batch - 1) // self.batch

    def __iter__(self) -> Iterator[np.ndarray]:
        return self.batches(0, len(self))

    def batches(self, first: int, stop: int) -> Iterator[np.ndarray]:
        """Batches ``first`` to ``stop - 1``."""
        for index in range(first, min(stop, len(self))):
            chunk = self.paths[index * self.batch:(index + 1) * self.batch]
            yield preprocess_batch([_read(path) for path in chunk], self.spec)[0]


def _read(path: Path) -> np.ndarray:
    try:
        return read_image(path)
    except DataError as exc:
        raise ExportError(f"calibration set: {exc}; remove it from the set or fix it") from None


def cache_key(*parts: str) -> str:
    """A short hash of everything a calibration result depends on."""
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


def calibration_cache(name: str, model: Path, spec: PreprocessSpec, paths: list[Path], method: str,
                      target: str) -> tuple[str, Path]:
    """The key of a calibration result and the file its ranges are cached in: a hash of the FP32 model's bytes,
    the preprocessing, the calibration images, the method and the target."""
    from cstf_edge.export.onnx_export import sha256_file

    key = cache_key(sha256_file(model), json.dumps(spec.to_metadata(), sort_keys=True), fingerprint(paths), method,
                    target)
    return key, cache_dir() / "calibration" / f"{name}-{key}.json"
