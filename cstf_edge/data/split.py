"""DOTA image splitting with the rules of DOTA_devkit's ``ImgSplit``, and the inverse mapping.

Rules (as the devkit applies them):

* The image (and its polygons) is first rescaled by ``rate`` (bicubic). Windows of ``subsize`` slide by
  ``subsize - gap``; the last window of a row/column is snapped to the image edge (``max(W - subsize, 0)``).
  The window rectangle used for clipping is ``[left, min(left + subsize, W - 1)] x [up, min(up + subsize,
  H - 1)]``. Patches smaller than ``subsize`` (small images) are zero-padded at the right/bottom.
* Objects with zero polygon area are dropped. An object with all corners inside the window keeps its own
  polygon. One that overlaps it partly is intersected with the window (shapely): a 4-point result is
  used as is, a 5-point result loses its shortest edge (its two ends merge into their midpoint), fewer
  than 4 or more than 5 points drop the object; the corners are then rotated to best match the original
  order, and each coordinate is clamped to ``[1, subsize]``. Its difficult flag becomes 2 when the
  inside fraction (intersection area / object area) is ``<= thresh`` (0.7), otherwise it is kept.
* Patch coordinates are ``int(x - left)`` (truncated, as the devkit writes them); ``integer_coords=False``
  keeps floats so that inside objects map back exactly.
* Patches are named ``<image>__<rate>__<left>___<up>`` (rate as Python prints it, ``1`` for 1.0).

``patch_origin`` parses such a name and ``patch_to_image`` maps patch coordinates back to the full image.
"""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np
import shapely
from shapely.geometry import Polygon, box
from shapely.geometry.polygon import orient
from tqdm import tqdm

from cstf_edge._io import read_image, write_image
from cstf_edge.data.annotations import ImageLabels
from cstf_edge.data.dota import IMAGE_SUFFIXES, load_dota_dir, write_dota_labels
from cstf_edge.errors import DataError
from cstf_edge.geometry import polygon_area

__all__ = [
    "SplitSummary",
    "clip_labels_to_window",
    "format_patch_name",
    "patch_origin",
    "patch_to_image",
    "split_dataset",
    "split_image",
    "window_origins",
]

log = logging.getLogger(__name__)

DIFFICULT_CUT = 2
DEFAULT_THRESH = 0.7
_PATCH_NAME_RE = re.compile(r"^(?P<image>.+)__(?P<rate>[0-9.eE+-]+)__(?P<left>\d+)___(?P<up>\d+)$")


def window_origins(width: int, height: int, subsize: int, gap: int) -> list[tuple[int, int]]:
    """``(left, up)`` of every window, column by column, as the devkit visits them."""
    slide = subsize - gap
    if subsize <= 0 or slide <= 0:
        raise ValueError(f"need subsize > 0 and gap < subsize, got subsize={subsize}, gap={gap}")
    return [(left, up) for left in _starts(width, subsize, slide) for up in _starts(height, subsize, slide)]


def _starts(length: int, subsize: int, slide: int) -> list[int]:
    starts, start = [], 0
    while True:
        if start + subsize >= length:
            starts.append(max(length - subsize, 0))
            return starts
        starts.append(start)
        start += slide


def format_rate(rate: float) -> str:
    """The rate as the devkit's ``str(rate)`` prints it for the rates people pass (``1``, ``0.5``)."""
    rate = float(rate)
    return str(int(rate)) if rate.is_integer() else repr(rate)


def format_patch_name(image_id: str, rate: float, left: int, up: int) -> str:
    """``<image>__<rate>__<left>___<up>``."""
    return f"{image_id}__{format_rate(rate)}__{int(left)}___{int(up)}"


def patch_origin(patch_name: str) -> tuple[str, float, int, int]:
    """``(image_id, rate, left, up)`` of a patch name (a file name with an image/label suffix works too).

    Note: Ultralytics/mmrotate splits write the window size, not a rate, in the middle field.
    """
    name = Path(str(patch_name)).name
    if Path(name).suffix.lower() in IMAGE_SUFFIXES + (".txt",):
        name = Path(name).stem
    match = _PATCH_NAME_RE.match(name)
    rate = _parse_rate(match.group("rate")) if match else None
    if rate is None:
        raise DataError(
            f"patch name {patch_name!r} is not '<image>__<rate>__<left>___<up>' "
            "(e.g. 'P1478__1__853___962') with a positive rate"
        )
    return match.group("image"), rate, int(match.group("left")), int(match.group("up"))


def _parse_rate(text: str) -> float | None:
    try:
        rate = float(text)
    except ValueError:
        return None
    return rate if np.isfinite(rate) and rate > 0 else None


def patch_to_image(polys, patch_name: str) -> np.ndarray:
    """Map patch coordinates to the full image: ``(p + (left, up)) / rate``.

    ``polys``: points ``[..., 2]``, polygons ``[..., 4, 2]`` or flat polygons ``[..., 8]``; the result
    has the same shape.
    """
    _, rate, left, up = patch_origin(patch_name)
    arr = np.asarray(polys, dtype=np.float64)
    if arr.ndim == 0 or arr.shape[-1] not in (2, 8):
        raise ValueError(f"expected points [..., 2] or flat polygons [..., 8], got shape {arr.shape}")
    points = arr.reshape(arr.shape[:-1] + (-1, 2))
    return ((points + np.array([left, up], dtype=np.float64)) / rate).reshape(arr.shape)


def _quad_from_pentagon(points: np.ndarray) -> np.ndarray:
    """Merge the two ends of the shortest edge (first one on ties) into their midpoint."""
    edges = np.linalg.norm(np.roll(points, -1, axis=0) - points, axis=1)
    shortest = int(np.argmin(edges))
    merged = points.copy()
    merged[shortest] = (points[shortest] + points[(shortest + 1) % 5]) / 2
    return np.delete(merged, (shortest + 1) % 5, axis=0)


def _best_rotation(quad: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """The cyclic rotation of ``quad`` closest (sum of squared distances) to ``reference``."""
    rotations = np.stack([np.roll(quad, -k, axis=0) for k in range(4)])
    cost = ((rotations - reference) ** 2).sum(axis=(1, 2))
    return rotations[int(np.argmin(cost))]


def _clipped_quad(geometry, reference: np.ndarray) -> np.ndarray | None:
    """The devkit's 4-point polygon of an intersection, or ``None`` when it drops the object."""
    if not isinstance(geometry, Polygon) or geometry.is_empty:
        return None  # a multi-part cut of a concave object: the devkit cannot write it either
    points = np.asarray(orient(geometry, sign=1.0).exterior.coords, dtype=np.float64)[:-1]
    if len(points) == 5:
        points = _quad_from_pentagon(points)
    if len(points) != 4:
        return None
    return _best_rotation(points, reference)


@dataclass(frozen=True)
class _Window:
    left: int
    up: int
    right: int
    down: int


def clip_labels_to_window(labels: ImageLabels, window, subsize: int, *, thresh: float = DEFAULT_THRESH,
                          integer_coords: bool = True, name: str | None = None) -> ImageLabels:
    """Labels of one window ``(left, up, right, down)`` (already rescaled image coordinates), in patch
    coordinates, by the rules of the module docstring; object order is kept."""
    win = _Window(*(int(v) for v in window))
    polys = labels.polygons
    area = np.abs(polygon_area(polys))
    lo, hi = polys.min(axis=1), polys.max(axis=1)
    inside = (lo[:, 0] >= win.left) & (lo[:, 1] >= win.up) & (hi[:, 0] <= win.right) & (hi[:, 1] <= win.down)
    overlaps = (lo[:, 0] < win.right) & (hi[:, 0] > win.left) & (lo[:, 1] < win.down) & (hi[:, 1] > win.up)
    keep = area > 0
    out_polys = {int(i): polys[i] for i in np.flatnonzero(keep & inside)}
    out_difficult = {i: int(labels.difficult[i]) for i in out_polys}
    cut = np.flatnonzero(keep & overlaps & ~inside)
    if len(cut):
        geoms = shapely.make_valid(shapely.polygons(polys[cut]))
        inter = shapely.intersection(geoms, box(win.left, win.up, win.right, win.down))
        fraction = shapely.area(inter) / area[cut]
        for i, geometry, frac in zip(cut, inter, fraction):
            quad = _clipped_quad(geometry, polys[i]) if frac > 0 else None
            if quad is None:
                continue
            out_polys[int(i)] = quad
            out_difficult[int(i)] = int(labels.difficult[i]) if frac > thresh else DIFFICULT_CUT
    order = sorted(out_polys)
    shifted = np.array([out_polys[i] for i in order]).reshape(-1, 4, 2) - np.array([win.left, win.up])
    if integer_coords:
        shifted = np.trunc(shifted)
    is_cut = np.isin(order, cut)
    shifted[is_cut] = np.where(shifted[is_cut] <= 1, 1.0, np.minimum(shifted[is_cut], subsize))
    return ImageLabels(name or labels.image_id, shifted, [labels.classes[i] for i in order],
                       [out_difficult[i] for i in order])


def crop_window(image: np.ndarray, left: int, up: int, size: int, pad_value: int = 0) -> np.ndarray:
    """A copy of the ``size x size`` window of ``image`` at ``(left, up)``, padded right/bottom with
    ``pad_value`` where the image ends (the devkit pads with 0)."""
    patch = image[up:up + size, left:left + size]
    if patch.shape[:2] == (size, size):
        return patch.copy()
    padded = np.full((size, size) + image.shape[2:], pad_value, dtype=image.dtype)
    padded[: patch.shape[0], : patch.shape[1]] = patch
    return padded


def _patch_pixels(image: np.ndarray, left: int, up: int, subsize: int, pad: bool) -> np.ndarray:
    if pad:
        return crop_window(image, left, up, subsize)
    return image[up:up + subsize, left:left + subsize].copy()


def split_image(image: np.ndarray, labels: ImageLabels, *, subsize: int = 1024, gap: int = 200,
                rate: float = 1.0, thresh: float = DEFAULT_THRESH, pad: bool = True,
                integer_coords: bool = True) -> Iterator[tuple[str, np.ndarray, ImageLabels]]:
    """Yield ``(patch_name, patch_image, patch_labels)`` for every window of ``image`` rescaled by ``rate``.

    ``labels`` are in ``image``'s pixels; patch labels are in patch pixels (see the module docstring).
    """
    if not rate > 0:
        raise ValueError(f"rate must be positive, got {rate!r}")
    if rate != 1:
        image = cv2.resize(image, None, fx=rate, fy=rate, interpolation=cv2.INTER_CUBIC)
    scaled = ImageLabels(labels.image_id, labels.polygons * rate, labels.classes, labels.difficult)
    height, width = image.shape[:2]
    for left, up in window_origins(width, height, subsize, gap):
        window = (left, up, min(left + subsize, width - 1), min(up + subsize, height - 1))
        name = format_patch_name(labels.image_id, rate, left, up)
        patch_labels = clip_labels_to_window(scaled, window, subsize, thresh=thresh,
                                             integer_coords=integer_coords, name=name)
        yield name, _patch_pixels(image, left, up, subsize, pad), patch_labels


@dataclass
class SplitSummary:
    """What ``split_dataset`` wrote."""

    images: int = 0
    patches: int = 0
    objects_in: int = 0
    objects_out: int = 0
    objects_cut: int = 0  # written with difficult=2
    skipped_labels: int = 0  # label files without an image


def split_dataset(src_root, dst_root, *, subsize: int = 1024, gap: int = 200, rates=(1.0,),
                  thresh: float = DEFAULT_THRESH, ext: str = ".png", pad: bool = True,
                  integer_coords: bool = True, classes=None, on_error: str = "raise",
                  progress: bool = True) -> SplitSummary:
    """Split a DOTA-layout directory into ``dst_root/images`` and ``dst_root/labelTxt`` (no header lines).

    Every image of ``src_root/images`` is split at every rate; images without labels give empty patch
    labels, label files without an image are skipped (``load_dota_dir`` reports them).
    """
    if ext.lower() not in IMAGE_SUFFIXES:
        raise ValueError(f"ext must be one of {IMAGE_SUFFIXES}, got {ext!r}")
    window_origins(1, 1, subsize, gap)  # validates subsize/gap before any work
    dst_root = Path(dst_root)
    entries = load_dota_dir(src_root, classes=classes, on_error=on_error)
    with_images = [labels for labels in entries if labels.image_path is not None]
    summary = SplitSummary(skipped_labels=len(entries) - len(with_images))
    if not with_images:
        raise DataError(f"{src_root}: no images to split in {Path(src_root) / 'images'}")
    for labels in tqdm(with_images, desc="split", unit="image", disable=not progress):
        image = read_image(labels.image_path, cv2.IMREAD_UNCHANGED)
        summary.images += 1
        for rate in rates:
            summary.objects_in += len(labels)
            for name, patch, patch_labels in split_image(image, labels, subsize=subsize, gap=gap, rate=rate,
                                                         thresh=thresh, pad=pad,
                                                         integer_coords=integer_coords):
                write_image(dst_root / "images" / f"{name}{ext}", patch)
                write_dota_labels(dst_root / "labelTxt" / f"{name}.txt", patch_labels, header=False)
                summary.patches += 1
                summary.objects_out += len(patch_labels)
                summary.objects_cut += int((patch_labels.difficult == DIFFICULT_CUT).sum())
    log.info("split %d images into %d patches under %s", summary.images, summary.patches, dst_root)
    return summary
