"""HRSC2016 XML annotations (``HRSC_Image/HRSC_Objects/HRSC_Object``).

Each object carries a rotated box ``mbox_cx, mbox_cy, mbox_w, mbox_h, mbox_ang`` (pixels, radians) and the
bow point ``header_x, header_y``. HRSC measures ``mbox_ang`` as cstf-edge does: from +x towards +y with
image y pointing down, the width along the angle. Checked on 100000002.xml: the bow point lies inside the
box at distance ~w/2 from the centre along that direction (with the opposite sign it lies far outside),
and the axis-aligned ``box_xmin..box_ymax`` (the hull's tight bounds) lies inside the rotated box's bounds.
So the mapping is the identity followed by canonicalisation (``w >= h``, angle in ``[-pi/2, pi/2)``).

Bow points are kept in ``meta["header_xy"]`` as ``"x1 y1 x2 y2 ..."`` (one pair per object, ``nan`` where
absent); ``hrsc_header_points(labels)`` decodes them to an ``[N, 2]`` array.
"""
from __future__ import annotations

import logging
import math
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np

from cstf_edge._io import os_reason
from cstf_edge.data.annotations import ImageLabels
from cstf_edge.data.dota import check_on_error, imageset_label_files, parse_number
from cstf_edge.errors import DataError, LabelFormatError
from cstf_edge.geometry import canonicalize_rboxes, rbox_to_poly

__all__ = ["hrsc_header_points", "load_hrsc_ground_truth", "read_hrsc_xml"]

log = logging.getLogger(__name__)

CLASS_LEVELS = ("ship", "class_id")
_MBOX_FIELDS = ("mbox_cx", "mbox_cy", "mbox_w", "mbox_h", "mbox_ang")


def _number(node: ET.Element, tag: str, where: str, required: bool = True) -> float:
    """The number in ``<tag>``; ``ValueError`` naming ``where`` (the object) when absent or not finite."""
    text = node.findtext(tag)
    if text is None or not text.strip():
        if required:
            raise ValueError(f"{where} has no <{tag}> value")
        return math.nan
    return parse_number(text.strip(), f"{where}: <{tag}> value")


def _image_path(root: ET.Element, xml_path: Path) -> Path | None:
    """``FullDataSet/AllImages/<Img_FileName>.<Img_FileFmt>`` beside ``Annotations/``, if present."""
    name = (root.findtext("Img_FileName") or xml_path.stem).strip()
    fmt = (root.findtext("Img_FileFmt") or "bmp").strip()
    for folder in (xml_path.parent.parent / "AllImages", xml_path.parent):
        candidate = folder / f"{name}.{fmt}"
        if candidate.is_file():
            return candidate
    return None


def _parse_root(path: Path) -> ET.Element:
    try:
        root = ET.parse(path).getroot()
    except FileNotFoundError:
        raise DataError(f"{path}: no such HRSC2016 annotation file") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read this annotation file ({os_reason(exc)})") from exc
    except ET.ParseError as exc:
        raise LabelFormatError(f"not well-formed XML ({exc})", str(path)) from None
    if root.tag != "HRSC_Image":
        raise LabelFormatError(f"root element is <{root.tag}>, expected <HRSC_Image>", str(path))
    return root


def _read_object(obj: ET.Element, index: int, class_level: str) -> tuple[list[float], str, int, list[float]]:
    """Rotated box, class, difficult flag and bow point of the ``index``-th object (0-based);
    ``ValueError`` naming the object for a missing, non-numeric or non-positive size."""
    where = f"HRSC object {index} (0-based)"
    rbox = [_number(obj, tag, where) for tag in _MBOX_FIELDS]
    if not (rbox[2] > 0 and rbox[3] > 0):
        raise ValueError(f"{where}: mbox_w {rbox[2]:g} and mbox_h {rbox[3]:g} must both be positive")
    name = "ship"
    if class_level == "class_id":
        name = (obj.findtext("Class_ID") or "").strip()
        if not name:
            raise ValueError(f"{where} has no <Class_ID> (use class_level='ship')")
    difficult = int(_number(obj, "difficult", where, required=False) == 1)
    header = [_number(obj, "header_x", where, False), _number(obj, "header_y", where, False)]
    return rbox, name, difficult, header


def read_hrsc_xml(path, *, class_level: str = "ship", on_error: str = "raise") -> ImageLabels:
    """Read one HRSC2016 XML file into polygons in cstf-edge's convention.

    ``class_level="ship"`` names every object ``ship`` (the usual class-agnostic task);
    ``"class_id"`` uses the object's ``Class_ID`` text (e.g. ``100000013``).
    ``meta`` holds ``width``, ``height`` and ``header_xy``. A malformed object (missing or non-finite
    value, non-positive size) raises ``LabelFormatError`` naming the file and the object's index, or
    with ``on_error="warn"`` is skipped with a warning saying the same.
    """
    if class_level not in CLASS_LEVELS:
        raise ValueError(f"class_level must be one of {CLASS_LEVELS}, got {class_level!r}")
    check_on_error(on_error)
    path = Path(path)
    root = _parse_root(path)
    objects = []
    for index, obj in enumerate(root.iter("HRSC_Object")):
        try:
            objects.append(_read_object(obj, index, class_level))
        except ValueError as exc:
            if on_error == "raise":
                raise LabelFormatError(str(exc), str(path)) from None
            log.warning("%s: skipped: %s", path, exc)
    rboxes, names, difficult, headers = (list(column) for column in (list(zip(*objects)) or [()] * 4))
    boxes = canonicalize_rboxes(np.asarray(rboxes, dtype=np.float64).reshape(-1, 5))
    meta = {
        "width": (root.findtext("Img_SizeWidth") or "").strip(),
        "height": (root.findtext("Img_SizeHeight") or "").strip(),
        "header_xy": " ".join(repr(float(v)) for v in np.asarray(headers).reshape(-1)),
    }
    image_id = (root.findtext("Img_ID") or path.stem).strip()
    return ImageLabels(image_id, rbox_to_poly(boxes), names, difficult, _image_path(root, path), meta)


def load_hrsc_ground_truth(
    annotations_dir, imageset=None, *, class_level: str = "ship", on_error: str = "raise"
) -> list[ImageLabels]:
    """HRSC2016 labels of the image set (default: every ``<annotations_dir>/*.xml``), for evaluation:
    one ``ImageLabels`` per file read by ``read_hrsc_xml``, ``image_id`` the file stem (as result
    files name images). A missing folder or file, or an empty set, is a ``DataError``."""
    paths = imageset_label_files(annotations_dir, ".xml", imageset, subfolder="Annotations")
    labels = []
    for path in paths:
        item = read_hrsc_xml(path, class_level=class_level, on_error=on_error)
        item.image_id = path.stem
        labels.append(item)
    return labels


def hrsc_header_points(labels: ImageLabels) -> np.ndarray:
    """Bow points ``[N, 2]`` (``nan`` where the XML had none) of labels read by ``read_hrsc_xml``."""
    text = labels.meta.get("header_xy")
    if text is None:
        raise DataError(f"{labels.image_id}: labels carry no HRSC header points (read them with read_hrsc_xml)")
    values = np.array([float(v) for v in text.split()], dtype=np.float64)
    return values.reshape(len(labels), 2)
