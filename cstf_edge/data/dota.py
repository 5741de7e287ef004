"""DOTA ``labelTxt`` reading and writing, and DOTA-layout directories (``images/``, ``labelTxt/``).

A label file holds optional header lines (``imagesource:GoogleEarth``, ``gsd:0.13``; the quoted
``'imagesource':`` variant too), then one object per line::

    x1 y1 x2 y2 x3 y3 x4 y4 class-name [difficult]

with integer or float pixel coordinates, a hyphenated class name and ``difficult`` 0, 1 or 2 (absent
means 0). CRLF and LF line ends are both read. A malformed line is never turned into a box: it raises
``LabelFormatError`` (``on_error="raise"``) or is skipped with a warning naming file and line
(``on_error="warn"``).
"""
from __future__ import annotations

import logging
import math
import re
from pathlib import Path

import numpy as np

from cstf_edge._io import atomic_write_text, os_reason
from cstf_edge.data.annotations import ImageLabels
from cstf_edge.data.classes import DOTA_V1_0_CLASSES, DOTA_V1_5_CLASSES, DOTA_V2_0_CLASSES
from cstf_edge.errors import DataError, LabelFormatError

__all__ = [
    "DOTA_V1_0_CLASSES",
    "DOTA_V1_5_CLASSES",
    "DOTA_V2_0_CLASSES",
    "IMAGE_SUFFIXES",
    "find_images",
    "format_dota_line",
    "imageset_label_files",
    "load_dota_dir",
    "parse_number",
    "read_dota_labels",
    "read_imageset",
    "report_bad_label_line",
    "write_dota_labels",
]

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
ON_ERROR_CHOICES = ("raise", "warn")
VALID_DIFFICULT = (0, 1, 2)
_HEADER_RE = re.compile(r"^\s*['\"]?(imagesource|gsd)['\"]?\s*:\s*(.*?)\s*$", re.IGNORECASE)


def check_on_error(on_error: str) -> None:
    """Reject an ``on_error`` value other than ``"raise"`` or ``"warn"``."""
    if on_error not in ON_ERROR_CHOICES:
        raise ValueError(f"on_error must be one of {ON_ERROR_CHOICES}, got {on_error!r}")


def report_bad_label_line(message: str, path, line_no: int, on_error: str) -> None:
    """Raise ``LabelFormatError`` for a bad line, or log a warning naming file and line (``"warn"``)."""
    if on_error == "raise":
        raise LabelFormatError(message, str(path), line_no)
    log.warning("%s:%d: skipped: %s", path, line_no, message)


def read_label_lines(path) -> list[str]:
    """Lines of a UTF-8 text label file (BOM and CRLF tolerated); a missing file is a ``DataError``."""
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except FileNotFoundError:
        raise DataError(f"{path}: no such label file") from None
    except OSError as exc:
        raise DataError(
            f"{path}: cannot read this label file ({os_reason(exc)}); pass a readable text file"
        ) from exc
    except UnicodeDecodeError as exc:
        raise LabelFormatError(f"not UTF-8 text ({exc.reason} at byte {exc.start})", str(path)) from None
    return text.splitlines()


def parse_number(token: str, what: str = "value") -> float:
    """A finite float from a plain number token (digits, sign, point, exponent); ``nan``, ``inf``,
    ``1_0`` and non-ASCII digits, which ``float`` accepts, raise ``ValueError`` naming the token."""
    try:
        value = float(token)
    except ValueError:
        raise ValueError(f"{what} {token!r} is not a number") from None
    if not math.isfinite(value):
        raise ValueError(f"{what} {token!r} is not finite")
    if "_" in token or not token.isascii():
        raise ValueError(f"{what} {token!r} is not a plain number (write ASCII digits such as 12.5, no '_')")
    return value


def parse_coordinates(tokens: list[str]) -> np.ndarray:
    """Finite floats from coordinate tokens, by ``parse_number``'s rules; raises ``ValueError`` with a
    message naming the bad token.

    A whole-line check first (``float`` of each, a finite sum, ASCII without ``_``): it passes only
    lines whose every token ``parse_number`` accepts; any other line is decided token by token.
    """
    try:
        values = [float(token) for token in tokens]
        joined = "".join(tokens)
        if math.isfinite(sum(values)) and joined.isascii() and "_" not in joined:
            return np.asarray(values, dtype=np.float64)
    except ValueError:
        pass
    return np.asarray([parse_number(token, "coordinate") for token in tokens], dtype=np.float64)


def _parse_object_line(tokens: list[str], classes) -> tuple[np.ndarray, str, int]:
    if len(tokens) not in (9, 10):
        raise ValueError(
            f"expected 'x1 y1 x2 y2 x3 y3 x4 y4 class [difficult]' (9 or 10 fields), got {len(tokens)}"
        )
    coords = parse_coordinates(tokens[:8])
    name = tokens[8]
    if classes is not None and name not in classes:
        raise ValueError(f"class {name!r} is not one of the {len(classes)} expected classes")
    difficult = 0
    if len(tokens) == 10:
        if tokens[9] not in {str(d) for d in VALID_DIFFICULT}:
            raise ValueError(f"difficult flag {tokens[9]!r} must be 0, 1 or 2")
        difficult = int(tokens[9])
    return coords, name, difficult


def read_dota_labels(path, *, classes=None, on_error: str = "raise") -> ImageLabels:
    """Read one DOTA label file; ``image_id`` is the file stem, ``meta`` the header values.

    ``classes``: if given, a class name outside it is a malformed line.
    """
    check_on_error(on_error)
    path = Path(path)
    class_set = None if classes is None else frozenset(classes)
    meta: dict[str, str] = {}
    polygons, names, difficult = [], [], []
    for line_no, line in enumerate(read_label_lines(path), start=1):
        if not line.strip():
            continue
        header = _HEADER_RE.match(line)
        if header:
            meta[header.group(1).lower()] = header.group(2)
            continue
        try:
            coords, name, flag = _parse_object_line(line.split(), class_set)
        except ValueError as exc:
            report_bad_label_line(str(exc), path, line_no, on_error)
            continue
        polygons.append(coords)
        names.append(name)
        difficult.append(flag)
    polys = np.asarray(polygons, dtype=np.float64).reshape(-1, 4, 2)
    return ImageLabels(path.stem, polys, names, np.asarray(difficult, dtype=np.int64), meta=meta)


def format_coordinate(value: float) -> str:
    """Shortest text that reads back as the same float (``1.0`` -> ``1.0``, ``0.1`` -> ``0.1``)."""
    return repr(float(value))


def format_dota_line(polygon, class_name: str, difficult: int) -> str:
    """One DOTA object line (no line end) for a ``[4, 2]`` or ``[8]`` polygon."""
    coords = np.asarray(polygon, dtype=np.float64).reshape(8)
    return " ".join([format_coordinate(v) for v in coords] + [class_name, str(int(difficult))])


def write_dota_labels(path, labels: ImageLabels, *, header: bool = True) -> Path:
    """Write ``labels`` as a DOTA label file (LF line ends, atomically).

    With ``header``, ``imagesource:`` and ``gsd:`` lines come first (``null`` where ``meta`` lacks them).
    """
    if not np.isfinite(labels.polygons).all():
        raise DataError(f"{path}: refusing to write non-finite coordinates for image {labels.image_id}")
    lines = []
    if header:
        lines.append(f"imagesource:{labels.meta.get('imagesource', 'null')}")
        lines.append(f"gsd:{labels.meta.get('gsd', 'null')}")
    for polygon, name, flag in zip(labels.polygons, labels.classes, labels.difficult):
        lines.append(format_dota_line(polygon, name, flag))
    return atomic_write_text(path, "".join(line + "\n" for line in lines))


def find_images(folder) -> dict[str, Path]:
    """Image files of a folder (not recursive), keyed by stem; a stem found twice is a ``DataError``."""
    images: dict[str, Path] = {}
    try:
        entries = sorted(Path(folder).iterdir())
    except OSError as exc:
        raise DataError(
            f"{folder}: cannot list this image folder ({os_reason(exc)}); pass a readable folder"
        ) from exc
    for entry in entries:
        if entry.is_file() and entry.suffix.lower() in IMAGE_SUFFIXES:
            if entry.stem in images:
                raise DataError(
                    f"{folder}: images {images[entry.stem].name} and {entry.name} share the id "
                    f"{entry.stem!r}; keep one of them"
                )
            images[entry.stem] = entry
    return images


def read_imageset(path) -> list[str]:
    """Image ids of an image-set file, one a line (blank lines skipped)."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(
            f"{path}: cannot read the image-set file ({exc}); pass a UTF-8 file of image ids, one a line"
        ) from exc
    return [line.strip() for line in lines if line.strip()]


def imageset_label_files(labels_dir, suffix: str, imageset=None, *, subfolder: str) -> list[Path]:
    """The label files ``<labels_dir>/<image_id><suffix>`` of the image set (default: every such file),
    in image-set order. A missing folder or file, or an empty set, is a ``DataError``; for an empty set
    the message asks whether ``labels_dir/subfolder`` (e.g. ``labelTxt``) was meant, when that exists."""
    labels_dir = Path(labels_dir)
    if not labels_dir.is_dir():
        raise DataError(f"{labels_dir}: no such label directory (expected <image_id>{suffix} files)")
    if imageset is None:
        image_ids = sorted(path.stem for path in labels_dir.glob(f"*{suffix}"))
    else:
        image_ids = read_imageset(imageset)
    if not image_ids:
        where = f"the image set {imageset}" if imageset is not None else f"{labels_dir} (no *{suffix} file)"
        hint = labels_dir / subfolder
        advice = f"did you mean {hint}?" if hint.is_dir() else f"pass the folder of <image_id>{suffix} files"
        raise DataError(f"{labels_dir}: no images to evaluate in {where}; {advice}")
    paths = [labels_dir / f"{image_id}{suffix}" for image_id in image_ids]
    for image_id, path in zip(image_ids, paths):
        if not path.is_file():
            raise DataError(f"{path}: image {image_id} of the image set has no label file")
    return paths


def load_dota_dir(root, *, classes=None, on_error: str = "raise") -> list[ImageLabels]:
    """Labels of a DOTA-layout directory ``root/images``, ``root/labelTxt``, sorted by image id.

    Images without a label file get empty labels. Label files without an image are kept (with
    ``image_path=None``, as evaluation ground truth needs them) and reported in one warning.
    """
    check_on_error(on_error)
    root = Path(root)
    image_dir, label_dir = root / "images", root / "labelTxt"
    if not image_dir.is_dir() and not label_dir.is_dir():
        raise DataError(f"{root}: not a DOTA-layout directory (expected images/ and labelTxt/ in it)")
    images = find_images(image_dir) if image_dir.is_dir() else {}
    label_files = sorted(label_dir.glob("*.txt")) if label_dir.is_dir() else []
    by_id: dict[str, ImageLabels] = {}
    for label_file in label_files:
        labels = read_dota_labels(label_file, classes=classes, on_error=on_error)
        labels.image_path = images.get(labels.image_id)
        by_id[labels.image_id] = labels
    orphans = sorted(set(by_id) - set(images))
    if orphans:
        shown = ", ".join(orphans[:10]) + (" ..." if len(orphans) > 10 else "")
        log.warning("%s: %d label files have no image in %s: %s", root, len(orphans), image_dir, shown)
    for image_id, image_path in images.items():
        if image_id not in by_id:
            by_id[image_id] = ImageLabels.empty(image_id, image_path)
    return [by_id[key] for key in sorted(by_id)]
