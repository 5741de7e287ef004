"""What ``cstf-edge run`` writes, all of it atomically (a temporary name, then a rename):

    OUT/labelTxt/<name>.txt       dota:    DOTA label file, ``x1 y1 ... x4 y4 class 0`` a line
    OUT/Task1_<class>.txt         task1:   DOTA Task1 results of the run (``cstf-edge eval-dota --results OUT``)
    OUT/json/<name>.json          json:    boxes, polygons, scores, classes, timings of one image
    OUT/geojson/<name>.geojson    geojson: polygons in the raster's CRS (pixels when not georeferenced)
    OUT/vis/<name>.jpg            --save-vis: the image with its boxes drawn
    OUT/summary.json              always: counts, failures, timings, one entry per image

``task1`` implies ``json``: the per-image JSON is what a ``--skip-existing`` run reads back to rebuild the
Task1 files, which cover the whole run. An image counts as done when all its per-image files exist.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from cstf_edge._io import atomic_write_text, write_image
from cstf_edge.data.annotations import ImageLabels
from cstf_edge.data.dota import write_dota_labels
from cstf_edge.data.task1 import Task1Detections, write_task1_dir
from cstf_edge.errors import CstfError, DataError
from cstf_edge.runtime.detector import DetectionResult
from cstf_edge.runtime.sources import GeoInfo
from cstf_edge.runtime.visualize import render_scene

log = logging.getLogger(__name__)

FORMATS = ("dota", "task1", "json", "geojson")
DEFAULT_FORMATS = ("dota", "task1", "json")
SUMMARY_NAME = "summary.json"
_FOLDERS = {"dota": ("labelTxt", ".txt"), "json": ("json", ".json"), "geojson": ("geojson", ".geojson"),
            "vis": ("vis", ".jpg")}


def parse_formats(text) -> tuple[str, ...]:
    """``"dota,json"`` (or a list) -> the formats, ``json`` added when ``task1`` is asked for."""
    names = [f.strip().lower() for f in (text.split(",") if isinstance(text, str) else text) if f.strip()]
    unknown = sorted(set(names) - set(FORMATS))
    if unknown or not names:
        raise CstfError(f"--format {text!r}: unknown {unknown or 'empty'}; choose from {','.join(FORMATS)}")
    if "task1" in names and "json" not in names:
        names.append("json")
    return tuple(dict.fromkeys(names))


def detection_records(result: DetectionResult) -> list[dict]:
    """One dict per detection: class, class_id, score, rbox ``[cx, cy, w, h, angle]``, polygon ``[x1 .. y4]``."""
    return [
        {"class": result.class_names[int(c)], "class_id": int(c), "score": round(float(s), 6),
         "rbox": [round(float(v), 3) for v in box[:4]] + [round(float(box[4]), 6)],
         "polygon": [round(float(v), 2) for v in polygon.reshape(8)]}
        for box, polygon, s, c in zip(result.rboxes, result.polygons, result.scores, result.class_ids)
    ]


def image_record(name: str, path: str, result: DetectionResult, timings_ms: dict, geo: GeoInfo | None) -> dict:
    """The per-image JSON document."""
    return {"image": name, "path": path, "width": result.image_shape[1], "height": result.image_shape[0],
            "num_detections": len(result), "detections": detection_records(result),
            "timings_ms": {k: round(v, 3) for k, v in timings_ms.items()},
            "georeference": None if geo is None else {"crs": geo.crs, "epsg": geo.epsg,
                                                       "transform": list(geo.transform)}}


def apply_transform(points: np.ndarray, transform) -> np.ndarray:
    """Pixel ``[..., 2]`` points through the affine ``(a, b, c, d, e, f)``."""
    a, b, c, d, e, f = transform
    x, y = points[..., 0], points[..., 1]
    return np.stack([a * x + b * y + c, d * x + e * y + f], axis=-1)


def _ring(polygon: np.ndarray) -> list[list[float]]:
    """A closed ring, counter-clockwise in its own axes (the GeoJSON right-hand rule)."""
    x, y = polygon[:, 0], polygon[:, 1]
    if np.dot(x, np.roll(y, -1)) - np.dot(np.roll(x, -1), y) < 0:
        polygon = polygon[::-1]
    closed = np.concatenate([polygon, polygon[:1]])
    return closed.tolist()


def geojson_collection(name: str, result: DetectionResult, geo: GeoInfo | None) -> dict:
    """A FeatureCollection of the detections' polygons: in the raster's CRS through its affine transform when
    georeferenced, else in pixels (x right, y down), which ``coordinates`` says in every feature."""
    polygons = result.polygons
    space = "crs" if geo is not None else "pixel"
    if geo is not None:
        polygons = apply_transform(polygons, geo.transform)
    else:
        polygons = np.round(polygons, 2)
    features = [
        {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [_ring(polygon)]},
         "properties": {"class": result.class_names[int(c)], "class_id": int(c), "score": round(float(s), 6),
                        "image": name, "coordinates": space}}
        for polygon, s, c in zip(polygons, result.scores, result.class_ids)
    ]
    about = {"image": name, "coordinates": space, "width": result.image_shape[1], "height": result.image_shape[0]}
    collection = {"type": "FeatureCollection", "features": features}
    if geo is None:
        about["note"] = "the image is not georeferenced: coordinates are pixels, x right and y down"
    else:
        about.update(crs=geo.crs, crs_wkt=geo.crs_wkt, transform=list(geo.transform))
        if geo.epsg is not None:
            collection["crs"] = {"type": "name", "properties": {"name": f"urn:ogc:def:crs:EPSG::{geo.epsg}"}}
    collection["cstf_edge"] = about
    return collection


class OutputWriter:
    """Writes the outputs of one run under ``out_dir`` (see the module docstring)."""

    def __init__(self, out_dir, formats, class_names, save_vis: bool = False, skip_existing: bool = False,
                 vis_conf: float = 0.0):
        self.out = Path(out_dir)
        self.vis_conf = vis_conf  # the pictures draw only detections this confident (the files hold all)
        self.formats = parse_formats(formats)
        self.class_names = list(class_names)
        self.save_vis, self.skip_existing = save_vis, skip_existing
        self._task1: dict[str, list[tuple[str, float, list[float]]]] = {c: [] for c in self.class_names}

    def path(self, kind: str, name: str) -> Path:
        folder, suffix = _FOLDERS[kind]
        return self.out / folder / f"{name}{suffix}"

    def per_image_paths(self, name: str) -> list[Path]:
        kinds = [k for k in ("dota", "geojson", "json") if k in self.formats] + (["vis"] if self.save_vis else [])
        return [self.path(kind, name) for kind in kinds]

    def is_done(self, name: str) -> bool:
        """With ``skip_existing``: every per-image output of ``name`` is there (and readable for Task1)."""
        return self.skip_existing and all(p.is_file() for p in self.per_image_paths(name))

    def restore(self, name: str) -> int:
        """Take a done image's detections back from its JSON (for the Task1 files); returns their number."""
        if "json" not in self.formats:
            return 0
        path = self.path("json", name)
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
            for det in record["detections"]:
                self._task1.setdefault(det["class"], []).append((name, float(det["score"]), det["polygon"]))
            return len(record["detections"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise DataError(f"{path}: cannot read it back for --skip-existing ({exc}); delete it to redo "
                            f"{name}") from None

    def write(self, name: str, source_path: str, scene, result: DetectionResult, timings_ms: dict,
              geo: GeoInfo | None = None) -> None:
        """Every per-image output of one image; the JSON last, as the record that the image is done."""
        if self.save_vis:
            write_image(self.path("vis", name), render_scene(scene, result, min_score=self.vis_conf))
        if "dota" in self.formats:
            labels = ImageLabels(name, np.round(result.polygons, 2), result.names, np.zeros(len(result), int))
            write_dota_labels(self.path("dota", name), labels, header=False)
        if "geojson" in self.formats:
            atomic_write_text(self.path("geojson", name), json.dumps(geojson_collection(name, result, geo)))
        if "task1" in self.formats:
            for polygon, score, class_name in zip(result.polygons, result.scores, result.names):
                self._task1[class_name].append((name, float(score), polygon.reshape(8).tolist()))
        if "json" in self.formats:
            record = image_record(name, source_path, result, timings_ms, geo)
            atomic_write_text(self.path("json", name), json.dumps(record))

    def task1_detections(self) -> dict[str, Task1Detections]:
        """The run's detections per class, every class of the model included (empty ones too)."""
        out = {}
        for class_name, rows in self._task1.items():
            if not rows:
                out[class_name] = Task1Detections.empty()
                continue
            ids, scores, polygons = zip(*rows)
            out[class_name] = Task1Detections(list(ids), np.asarray(scores), np.asarray(polygons).reshape(-1, 4, 2))
        return out

    def finish(self, summary: dict) -> list[Path]:
        """The Task1 files (when asked for) and ``summary.json``; returns the paths written."""
        written = write_task1_dir(self.out, self.task1_detections()) if "task1" in self.formats else []
        written.append(atomic_write_text(self.out / SUMMARY_NAME, json.dumps(summary, indent=1)))
        return written
