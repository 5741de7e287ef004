"""One bench run: plan the variants, export what is missing, then per variant measure accuracy (mAP VOC07 and
VOC12, parity against the PyTorch FP32 reference) and speed (per-stage latency percentiles, FPS, memory), and
write the report. :func:`run_bench` is the whole of ``cstf-edge bench``."""
from __future__ import annotations

import inspect
import logging
import time
from contextlib import ExitStack
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

from tqdm import tqdm

from cstf_edge import __version__
from cstf_edge.bench import measure, peers
from cstf_edge.bench.environment import environment, load_average
from cstf_edge.bench.options import BenchError, BenchOptions
from cstf_edge.bench.plot import pareto_front
from cstf_edge.bench.variants import Artifacts, Variant, all_variants, open_runner, unavailable_reason
from cstf_edge.errors import CstfError
from cstf_edge.eval.detector_map import MAP_CONF, MAP_NMS_IOU
from cstf_edge.export.parity import MATCH_IOU, PARITY_CONF, PARITY_NMS_IOU
from cstf_edge.runtime.detector import Detector
from cstf_edge.shipped import SHIPPED_WEIGHTS

log = logging.getLogger(__name__)

REPORT_FORMAT = "cstf-edge-bench/1"
# Speed is measured at the runtime's own defaults (what `cstf-edge run` and Detector use), accuracy at the
# evaluator's (a low confidence floor, so the precision-recall curve is complete).
_DETECTOR_DEFAULTS = inspect.signature(Detector.__init__).parameters
SPEED_CONF = _DETECTOR_DEFAULTS["conf"].default
SPEED_IOU = _DETECTOR_DEFAULTS["iou"].default


def resolve_weights(options: BenchOptions) -> Path:
    if options.weights:
        return Path(options.weights)
    shipped = SHIPPED_WEIGHTS
    if not shipped.is_file():
        raise BenchError(f"the shipped weights are missing ({shipped}); pass --weights W")
    try:  # as reports show it: relative to the working directory when inside it
        return shipped.relative_to(Path.cwd())
    except ValueError:
        return shipped


def load_data(options: BenchOptions) -> tuple[list, dict]:
    """The labelled images (a SynthRS manifest or a DOTA/HRSC2016 folder), the first ``--max-images``."""
    from cstf_edge.export.accuracy import load_validation

    labels, description = load_validation(options.data, options.progress)
    if not labels:
        raise BenchError(f"--data {options.data}: no labelled images found")
    labels = labels[: options.max_images] if options.max_images else labels
    return labels, {**description, "images": len(labels), "given": str(options.data)}


class BenchRun:
    """State of one run: the artifacts, the accuracy already measured, the reference's detections."""

    def __init__(self, options: BenchOptions):
        self.options = options.check()
        self.weights = resolve_weights(options)
        self.labels, self.data = load_data(options)
        self.paths = [Path(item.image_path) for item in self.labels]
        self.artifacts = Artifacts(options, self.weights)
        self.accuracy: dict[tuple, tuple[str, dict, list]] = {}  # key -> (variant id, accuracy, detections)
        self.rows: list[dict] = []
        self.unavailable: list[dict] = []
        self.tiled: bool | None = None  # whether any scene is larger than the tile

    def run(self) -> dict:
        start = time.perf_counter()
        env = environment()
        runnable = self._plan()
        if self.options.interleave:
            self._run_interleaved(runnable)
        else:
            self._run_sequential(runnable)
        self._compare()
        env["load_average_end"] = load_average()
        return self._report(env, time.perf_counter() - start)

    def _run_sequential(self, runnable: list[Variant]) -> None:
        """Each variant alone: load, mAP, warm-up, timed iterations, unload."""
        for variant in tqdm(runnable, desc="variants", unit="variant", disable=not self.options.progress):
            with ExitStack() as stack:
                prepared = self._try_prepare(variant, stack)
                if prepared is None:
                    continue
                for _ in tqdm(range(self.options.iters), desc=f"speed {variant.label}", unit="it", leave=False,
                              disable=not self.options.progress):
                    prepared.loop.step()
                self.rows.append(prepared.finish())

    def _run_interleaved(self, runnable: list[Variant]) -> None:
        """Load, score and warm up every variant, then time them in turns (one iteration each per round), so
        that load from other processes falls on every variant alike and their ratios hold."""
        with ExitStack() as stack:
            prepared = [p for p in (self._try_prepare(v, stack) for v in tqdm(
                runnable, desc="variants (load, mAP, warm-up)", unit="variant", disable=not self.options.progress))
                if p is not None]
            for _ in tqdm(range(self.options.iters), desc=f"timed rounds of {len(prepared)} variants", unit="round",
                          disable=not self.options.progress or not prepared):
                for item in prepared:
                    if len(prepared) > 1:  # let the previous variant's spinning worker threads go idle
                        time.sleep(self.options.settle)
                    item.loop.step()
            self.rows += [item.finish() for item in prepared]

    def _try_prepare(self, variant: Variant, stack: ExitStack) -> "Prepared | None":
        """:meth:`prepare`, or None with the variant listed as not run (export or load failed) and its runner
        closed; on success its runner stays open until ``stack`` closes."""
        try:
            with ExitStack() as own:
                prepared = self.prepare(variant, own)
                stack.enter_context(own.pop_all())
            return prepared
        except CstfError as exc:
            log.warning("%s: not run (%s)", variant.id, exc)
            self._skip(variant, str(exc))
            return None

    def _plan(self) -> list[Variant]:
        runnable = []
        for variant in all_variants(self.options):
            reason = unavailable_reason(variant, self.options)
            if reason:
                self._skip(variant, reason)
            else:
                runnable.append(variant)
        return runnable

    def _skip(self, variant: Variant, reason: str) -> None:
        self.unavailable.append({"variant": variant.id, "label": variant.label, "backend": variant.backend,
                                 "precision": variant.precision, "batch": variant.batch, "reason": reason})

    def _accuracy_key(self, variant: Variant, detector: Detector) -> tuple:
        """Whole images go through the detector one at a time for mAP, so the batch size only matters when a
        scene is tiled (its tiles go ``batch`` at a time)."""
        if self.tiled is None:
            self.tiled = any(detector.needs_tiling(*image_size(path)) for path in self.paths)
        return variant.backend, variant.precision, variant.batch if self.tiled else 1

    def prepare(self, variant: Variant, stack: ExitStack) -> "Prepared":
        """Export if needed, load, measure mAP and warm up one variant (its runner entered on ``stack``);
        peak memory is read over these steps, reset before them."""
        path = self.artifacts.ensure(variant)
        runner = open_runner(variant, path, self.options)
        cuda = variant.backend == "torch" and self.options.device != "cpu"
        rss_before, reset = measure.proc_status_mb()["VmRSS"], measure.reset_peak_rss()
        if cuda:
            measure.cuda_memory_start(self.options.device)
        detector = measure.RecordingDetector(runner, self.options.device, conf=MAP_CONF, iou=MAP_NMS_IOU,
                                             imgsz=self.options.imgsz, batch=variant.batch)
        detector.times = measure.SampledTimes(cuda_infer=cuda)
        stack.enter_context(detector)
        source, accuracy = self._measure_accuracy(variant, detector, runner)
        detector.conf, detector.iou = SPEED_CONF, SPEED_IOU
        loop = measure.SpeedLoop(detector, self.paths, variant.batch)
        for _ in tqdm(range(self.options.warmup), desc=f"warm-up {variant.label}", unit="it", leave=False,
                      disable=not self.options.progress):
            loop.step(record=False)
        after = measure.proc_status_mb()
        memory = {"rss_before_mb": rss_before, "rss_after_mb": after["VmRSS"], "peak_rss_mb": after["VmHWM"],
                  "peak_is_per_variant": reset}
        if cuda:
            memory.update(measure.cuda_memory_mb(self.options.device))
        row = {"variant": variant.id, "label": variant.label, "backend": variant.backend, "peer": variant.peer,
               "precision": variant.precision, "batch": variant.batch, "device": self.options.device,
               "artifact": str(path), "artifact_bytes": path.stat().st_size, "accuracy": accuracy,
               "accuracy_from": source, "memory": memory, "how": describe(variant, path, runner, self.options)}
        return Prepared(row, loop)

    def _measure_accuracy(self, variant: Variant, detector, runner) -> tuple[str | None, dict]:
        if variant.peer:
            reason = peers.scorable(runner.info, self.artifacts.peers.class_names)
            if reason:
                return None, {"map50_voc07": None, "map50_voc12": None, "per_class_ap_voc07": {}, "note": reason}
        key = (variant.peer, *self._accuracy_key(variant, detector))
        if key not in self.accuracy:
            result = measure.measure_accuracy(detector, self.labels, self.options.progress, f"mAP {variant.label}")
            self.accuracy[key] = (variant.id, result, list(detector.found))
        return self.accuracy[key][0], self.accuracy[key][1]

    def _found(self, row: dict) -> list:
        return next(found for source, _, found in self.accuracy.values() if source == row["accuracy_from"])

    def _compare(self) -> None:
        """mAP drop, parity and speed-up of every row against the PyTorch FP32 reference (first such row); a peer
        gets its mAP drop (when scored) and speed-up, not parity (it is another model)."""
        reference = next((r for r in self.rows if r["backend"] == "torch" and r["precision"] == "fp32"
                          and not r["peer"]), None)
        for row in self.rows:
            row.update(reference=reference["variant"] if reference else None, map_drop_voc07=None,
                       map_drop_voc12=None, parity=None, speedup_vs_reference=None, speedup_vs_reference_mean=None)
            if reference is None:
                continue
            row["speedup_vs_reference"] = _ratio(row["speed"]["fps_p50"], reference["speed"]["fps_p50"])
            row["speedup_vs_reference_mean"] = _ratio(row["speed"]["fps"], reference["speed"]["fps"])
            if row["accuracy_from"] is None:
                continue
            ref_acc, acc = reference["accuracy"], row["accuracy"]
            row["map_drop_voc07"] = round(ref_acc["map50_voc07"] - acc["map50_voc07"], 3)
            row["map_drop_voc12"] = round(ref_acc["map50_voc12"] - acc["map50_voc12"], 3)
            if not row["peer"]:
                row["parity"] = measure.detection_parity(self._found(reference), self._found(row))
        scored = [r for r in self.rows if r["accuracy"]["map50_voc07"] is not None]
        front = pareto_front([(r["speed"]["fps"] or 0.0, r["accuracy"]["map50_voc07"]) for r in scored])
        for row in self.rows:
            row["pareto"] = any(row is scored[i] for i in front)

    def _report(self, env: dict, seconds: float) -> dict:
        from cstf_edge.export.onnx_export import sha256_file

        options = {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self.options).items()}
        return {
            "format": REPORT_FORMAT, "cstf_edge": __version__,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "options": options, "weights": str(self.weights), "weights_sha256": sha256_file(self.weights),
            "data": self.data, "imgsz": self.options.imgsz, "device": self.options.device,
            "settings": {"speed_conf": SPEED_CONF, "speed_nms_iou": SPEED_IOU, "map_conf": MAP_CONF,
                         "map_nms_iou": MAP_NMS_IOU, "parity_conf": PARITY_CONF, "parity_nms_iou": PARITY_NMS_IOU,
                         "parity_match_iou": MATCH_IOU, "warmup": self.options.warmup,
                         "iters": self.options.iters,
                         "schedule": "interleaved" if self.options.interleave else "sequential",
                         "settle_s": self.options.settle if self.options.interleave and len(self.rows) > 1 else 0.0,
                         "calibration": _calibration(self.options)},
            "environment": env, "reference": self.rows[0]["reference"] if self.rows else None,
            "rows": self.rows, "unavailable": self.unavailable,
            "pareto_front": [r["variant"] for r in sorted(self.rows, key=lambda r: r["speed"]["fps"] or 0)
                             if r["pareto"]],
            "exports": self.artifacts.exports, "peer_artifacts": self.artifacts.peers.made,
            "seconds": round(seconds, 1),
        }


def image_size(path: Path) -> tuple[int, int]:
    """``(height, width)`` of an image file from its header (Pillow), else by decoding it."""
    try:
        from PIL import Image

        with Image.open(path) as image:
            return image.height, image.width
    except Exception:  # noqa: BLE001 - Pillow absent or a format it does not read: decode with OpenCV
        from cstf_edge._io import read_image

        return read_image(path).shape[:2]


@dataclass
class Prepared:
    """A loaded, scored and warmed-up variant waiting for its timed iterations."""

    row: dict
    loop: measure.SpeedLoop

    def finish(self) -> dict:
        return {**self.row, "speed": self.loop.summary()}


def _ratio(value, reference) -> float | None:
    return round(value / reference, 3) if value and reference else None


def _calibration(options: BenchOptions) -> str | None:
    calib = options.calibration()
    return None if calib is None else f"{calib} ({options.calib_method})"


def describe(variant: Variant, path: Path, runner, options: BenchOptions) -> str:
    """How the variant was run, in one line for the report."""
    if variant.peer:
        return peers.describe(variant.peer, variant.precision, runner.info, options.device)
    common = (f"Detector(batch={variant.batch}, imgsz={options.imgsz}); speed at conf {SPEED_CONF} / NMS IoU "
              f"{SPEED_IOU}, mAP at conf {MAP_CONF} / NMS IoU {MAP_NMS_IOU}")
    if variant.backend == "torch":
        import torch

        mode = "FP16 autocast" if variant.precision == "fp16" else "FP32"
        return (f"PyTorch {torch.__version__} eager {mode} on {options.device} ({torch.get_num_threads()} threads), "
                f"TorchRunner({path.name}); {common}")
    if variant.backend == "onnxruntime":
        import onnxruntime

        calib = runner.info.extra.get("calibration")
        made = f", Q/DQ calibrated on {calib.get('manifest')} ({calib.get('method')})" if calib else ""
        return (f"ONNX Runtime {onnxruntime.__version__} {runner.session.get_providers()[0]}, ORT_ENABLE_ALL, "
                f"default intra-op threads, OnnxRuntimeRunner({path.name}){made}; {common}")
    return f"TensorRT engine {path.name} ({variant.precision}, built by cstf_edge.export), TensorRTRunner; {common}"


def run_bench(options: BenchOptions) -> dict:
    """Run the bench as ``options`` say, write ``report.{md,csv,json}`` and ``accuracy_vs_fps.png`` to
    ``options.out``; returns the report."""
    from cstf_edge.bench.report import write_reports

    report = BenchRun(options).run()
    write_reports(report, Path(options.out))
    return report
