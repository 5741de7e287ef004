"""Ultralytics YOLO-OBB labels: one object per line, ``class_id x1 y1 x2 y2 x3 y3 x4 y4`` with corners
normalised by the image width (x) and height (y). The format has no difficult flag (read as 0). A line
with a corner value outside ``NORMALISED_RANGE`` (pixel coordinates by mistake) is a malformed line.

``DOTA8_CLASSES`` is the class-id order of Ultralytics' DOTA8 / DOTA-v1 data, with DOTA's hyphenated names.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from cstf_edge._io import read_image
from cstf_edge.data.annotations import ImageLabels
from cstf_edge.data.classes import DOTA8_CLASSES
from cstf_edge.data.dota import (
    check_on_error,
    find_images,
    parse_coordinates,
    read_label_lines,
    report_bad_label_line,
)
from cstf_edge.errors import DataError

__all__ = ["DOTA8_CLASSES", "load_yolo_obb_dir", "read_yolo_obb_labels"]

log = logging.getLogger(__name__)

# Normalised corners of objects cut by the image border run a little outside [0, 1] (DOTA8: -0.072 ..
# 1.057); beyond this range a value is taken for a pixel coordinate.
NORMALISED_RANGE = (-0.5, 1.5)


def _parse_yolo_line(tokens: list[str], class_names) -> tuple[np.ndarray, str]:
    if len(tokens) != 9:
        raise ValueError(f"expected 'class_id x1 y1 x2 y2 x3 y3 x4 y4' (9 fields), got {len(tokens)}")
    if not tokens[0].isdigit() or int(tokens[0]) >= len(class_names):
        raise ValueError(
            f"class id {tokens[0]!r} is not an integer in [0, {len(class_names) - 1}] "
            f"(the {len(class_names)} class names given)"
        )
    coords = parse_coordinates(tokens[1:])
    if coords.min() < NORMALISED_RANGE[0] or coords.max() > NORMALISED_RANGE[1]:
        raise ValueError(
            f"corner values {coords.min():g} .. {coords.max():g} lie outside {list(NORMALISED_RANGE)}: they "
            "look like pixels, and YOLO-OBB wants corners normalised by the image width and height (0..1)"
        )
    return coords, class_names[int(tokens[0])]


def read_yolo_obb_labels(path, image_size, class_names, *, on_error: str = "raise") -> ImageLabels:
    """Read one YOLO-OBB label file into pixel polygons of an image of ``image_size = (width, height)``.

    ``class_names[i]`` names class id ``i``. Malformed lines raise ``LabelFormatError`` or, with
    ``on_error="warn"``, are skipped with a warning.
    """
    check_on_error(on_error)
    path = Path(path)
    width, height = (float(v) for v in image_size)
    if not (width > 0 and height > 0):
        raise ValueError(f"image_size must be a positive (width, height), got {image_size!r}")
    class_names = list(class_names)
    polygons, names = [], []
    for line_no, line in enumerate(read_label_lines(path), start=1):
        if not line.strip():
            continue
        try:
            coords, name = _parse_yolo_line(line.split(), class_names)
        except ValueError as exc:
            report_bad_label_line(str(exc), path, line_no, on_error)
            continue
        polygons.append(coords)
        names.append(name)
    polys = np.asarray(polygons, dtype=np.float64).reshape(-1, 4, 2) * np.array([width, height])
    return ImageLabels(path.stem, polys, names, np.zeros(len(names), dtype=np.int64))


def load_yolo_obb_dir(images_dir, labels_dir, class_names, *, on_error: str = "raise") -> list[ImageLabels]:
    """Labels of every image in ``images_dir`` (sorted by id) from ``labels_dir/<stem>.txt``.

    Image sizes come from the image files. An image without a label file has no objects (the YOLO
    convention for background images); label files without an image are reported in one warning.
    """
    images_dir, labels_dir = Path(images_dir), Path(labels_dir)
    for folder in (images_dir, labels_dir):
        if not folder.is_dir():
            raise DataError(f"{folder}: no such directory (pass the images and labels folders of one split)")
    images = find_images(images_dir)
    out = []
    for image_id, image_path in images.items():
        label_path = labels_dir / f"{image_id}.txt"
        if not label_path.is_file():
            out.append(ImageLabels.empty(image_id, image_path))
            continue
        height, width = read_image(image_path).shape[:2]
        labels = read_yolo_obb_labels(label_path, (width, height), class_names, on_error=on_error)
        labels.image_path = image_path
        out.append(labels)
    orphans = sorted(p.stem for p in labels_dir.glob("*.txt") if p.stem not in images)
    if orphans:
        log.warning("%s: %d label files have no image in %s: %s", labels_dir, len(orphans), images_dir,
                    ", ".join(orphans[:10]))
    return out
