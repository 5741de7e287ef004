"""Accuracy of exported artifacts on a validation set, through the runtime (ONNX Runtime on this CPU),
scored with the project's DOTA evaluator; and a quick latency figure for the export report."""
from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np

from cstf_edge.data.annotations import ImageLabels
from cstf_edge.data.labelled import load_labelled_dir
from cstf_edge.eval.detector_map import MAP_CONF, MAP_NMS_IOU, evaluate_detector
from cstf_edge.export.calibration import CalibrationManifest, synthrs_folder
from cstf_edge.export.errors import ExportError
from cstf_edge.runtime.detector import Detector

log = logging.getLogger(__name__)

FP16_MAX_DROP = 0.2  # mAP points (of 100) against the FP32 ONNX
INT8_MAX_DROP = 1.0
FP32_MIN_PARITY = 0.99


def load_validation(val: str | Path, progress: bool = True) -> tuple[list[ImageLabels], dict]:
    """Labelled images of ``val``: a SynthRS manifest (``calibration/*.toml`` with ``source = "synthrs"``) or
    a labelled folder (DOTA or HRSC2016 layout); and a description for the report."""
    path = Path(val)
    if path.suffix.lower() == ".toml":
        manifest = CalibrationManifest.load(path)
        if manifest.source == "synthrs":
            folder = synthrs_folder(manifest.seed, manifest.size, manifest.count, progress)
        elif manifest.source == "dir":
            folder = Path(manifest.path)
        else:
            raise ExportError(f"{path}: a validation set needs labels: use source = \"synthrs\" or \"dir\" with a "
                              "DOTA-layout folder")
        labels = load_labelled_dir(folder)[: manifest.count]
        return labels, {**manifest.describe(), "images": len(labels)}
    labels = load_labelled_dir(path)
    return labels, {"source": "dir", "path": str(path), "images": len(labels)}


def evaluate_artifact(path: Path, labels: list[ImageLabels], progress: bool = True) -> tuple[dict, float]:
    """An artifact's accuracy (:func:`artifact_map`) and batch-1 latency (:func:`latency_ms`), from one
    loaded session."""
    with Detector(path, "cpu", conf=MAP_CONF, iou=MAP_NMS_IOU) as detector:
        return artifact_map(detector, labels, progress, desc=f"mAP {path.name}"), latency_ms(detector)


def artifact_map(detector: Detector, labels: list[ImageLabels], progress: bool = True, desc: str = "mAP") -> dict:
    """VOC07 and VOC12 mAP (in points, 0-100) of a detector (at the mAP confidence floor), and its time."""
    start = time.perf_counter()
    results = evaluate_detector(detector, labels, progress=progress, desc=desc)
    seconds = time.perf_counter() - start
    return {"map50_voc07": round(100 * results["voc07"].mAP, 3), "map50_voc12": round(100 * results["voc12"].mAP, 3),
            "per_class_ap_voc07": {k: round(100 * v, 3) for k, v in results["voc07"].per_class_ap.items()},
            "images": len(labels), "seconds": round(seconds, 2)}


def latency_ms(detector: Detector, runs: int = 5) -> float:
    """Median wall time of one batch-1 inference of the detector's network (ONNX Runtime, CPU, all cores),
    after one warm-up."""
    height, width = detector.info.imgsz
    feed = {name: np.random.default_rng(0).random((1, 3, height, width), dtype=np.float32)
            for name in detector.info.input_names}
    detector.runner.infer(feed)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        detector.runner.infer(feed)
        times.append(time.perf_counter() - start)
    return round(1000 * float(np.median(times)), 2)


def accuracy_gates(maps: dict[str, dict]) -> dict[str, dict]:
    """Gate verdicts: FP16 and INT8 mAP drops (VOC07 points) against the FP32 ONNX."""
    gates = {}
    base = maps.get("fp32", {}).get("map50_voc07")
    for precision, limit in (("fp16", FP16_MAX_DROP), ("int8", INT8_MAX_DROP)):
        if precision in maps and base is not None:
            drop = round(base - maps[precision]["map50_voc07"], 3)
            gates[f"{precision}_map_drop"] = {"value": drop, "limit": limit, "passed": drop <= limit}
    return gates
