"""The export pipeline: weights -> FP32 ONNX (+ parity against PyTorch) -> FP16 ONNX -> INT8 Q/DQ ONNX
(calibration, sensitivity sweep) -> accuracy gates on a validation set -> TensorRT engine (target tensorrt),
each artifact with ``<artifact>.report.json`` and one ``export_report.json`` for the whole run.

Files, for ``--out DIR`` and name ``cstf-n-relu-1024`` (model and input size; the shipped weights')::

    DIR/cstf-n-relu-1024.fp32.onnx   DIR/cstf-n-relu-1024.fp16.onnx   DIR/cstf-n-relu-1024.int8.onnx
    DIR/<artifact>.report.json  DIR/cstf-n-relu-1024.int8.sensitivity.json  DIR/export_report.json
"""
from __future__ import annotations

import json
import logging
import platform
import time
from functools import cached_property
from pathlib import Path

import numpy as np

from cstf_edge import __version__
from cstf_edge._io import atomic_write_text
from cstf_edge.export import accuracy, sensitivity
from cstf_edge.export.calibration import CalibrationBatcher, CalibrationManifest, calibration_cache
from cstf_edge.export.fp16 import convert_fp16
from cstf_edge.export.graph_policy import int8_float_nodes
from cstf_edge.export.onnx_export import export_onnx, load_checkpoint, sha256_file
from cstf_edge.export.options import ExportOptions
from cstf_edge.export.parity import compare_outputs
from cstf_edge.export.quantize_ort import finish_int8, quantize, run_onnx
from cstf_edge.export.shared_ranges import SCHEME as RANGES
from cstf_edge.export.weight_rounding import SCHEME as ROUNDING
from cstf_edge.export.weight_rounding import round_conv_weights
from cstf_edge.runtime.artifact import ArtifactInfo
from cstf_edge.runtime.preprocess import PreprocessSpec, preprocess_batch

log = logging.getLogger(__name__)

PARITY_IMAGES = 2


class ExportRun:
    """One export, step by step; :meth:`run` does them all and returns the summary report."""

    def __init__(self, options: ExportOptions, progress: bool = True):
        from cstf_edge.model.checkpoint import shipped_weights

        self.options = options
        self.progress = progress
        self.weights = Path(options.weights) if options.weights else shipped_weights()
        self.model, self.meta = load_checkpoint(self.weights)
        self.source_sha = sha256_file(self.weights)
        self.out = Path(options.out)
        self.name = options.name or f"{self.meta['model']}-{options.imgsz}"
        self.spec = PreprocessSpec(options.imgsz, options.imgsz)
        self.artifacts: dict[str, Path] = {}
        self.reports: dict[str, dict] = {}
        self.val_labels, self.val_description = None, None

    def path(self, precision: str) -> Path:
        return self.out / f"{self.name}.{precision}.onnx"

    @cached_property
    def parity_inputs(self) -> list[np.ndarray]:
        """A few preprocessed images: validation images when there are, else SynthRS-like noise."""
        if self.val_labels:
            from cstf_edge._io import read_image

            return [preprocess_batch([read_image(item.image_path)], self.spec)[0]
                    for item in self.val_labels[:PARITY_IMAGES]]
        rng = np.random.default_rng(0)
        return [rng.random((1, 3, self.options.imgsz, self.options.imgsz), dtype=np.float32)
                for _ in range(PARITY_IMAGES)]

    def export_fp32(self) -> ArtifactInfo:
        self.out.mkdir(parents=True, exist_ok=True)
        info = export_onnx(self.model, self.meta, self.options, self.path("fp32"), self.source_sha)
        self.artifacts["fp32"] = self.path("fp32")
        import torch

        with torch.no_grad():
            reference = np.concatenate([self._torch_forward(torch.from_numpy(x)) for x in self.parity_inputs])
        self._report("fp32", info, compare_outputs(reference, self.fp32_outputs), "pytorch fp32")
        return info

    @cached_property
    def fp32_outputs(self) -> np.ndarray:
        """The FP32 ONNX's raw outputs on the parity inputs (the reference of the FP16/INT8 parity)."""
        return run_onnx(self.path("fp32"), self.parity_inputs)

    def _torch_forward(self, images) -> np.ndarray:
        """The PyTorch output the ONNX must match; a two-input export is fed the query as its reference."""
        if self.options.with_reference:
            return self.model(images, images.clone()).numpy()
        return self.model(images).numpy()

    def export_fp16(self, info: ArtifactInfo) -> None:
        fp16_info = convert_fp16(self.path("fp32"), self.path("fp16"), info)
        self.artifacts["fp16"] = self.path("fp16")
        self._compare_to_fp32("fp16", fp16_info)

    def export_int8(self, info: ArtifactInfo) -> None:
        manifest = CalibrationManifest.load(self.options.calib)
        paths = manifest.image_paths(self.progress)
        batcher = CalibrationBatcher(paths, self.spec)
        key, cache = calibration_cache(self.name, self.path("fp32"), self.spec, paths, self.options.calib_method,
                                       self.options.target)
        log.info("calibration: %d images from %s, method %s, cache %s (%s)", len(paths), manifest.origin,
                 self.options.calib_method, cache, "reused" if cache.is_file() else "new")
        graph = _load_graph(self.path("fp32"))
        base = int8_float_nodes(graph, self.options.fp32_groups)
        rounding = self.options.weight_rounding == "sum-preserving"
        rounded = self.out / f".{self.name}.int8.rounded.onnx"  # the FP32 model with INT8-bound weights rounded
        staging = self.out / f".{self.name}.int8.staging.onnx"
        try:
            rows, float_groups = self._sensitivity(graph, batcher, base, cache, staging, rounding)
            exclude = base + [node for row in float_groups for node in row]
            source = self.path("fp32")  # nearest: the quantizer rounds the FP32 weights itself
            if rounding:  # only the convolutions that become INT8: those kept FP32 keep their weights
                round_conv_weights(self.path("fp32"), rounded, exclude=exclude)
                source = rounded
            if self._onnxruntime_quantizes():
                self._ranges(batcher, cache, staging, base)
            self._quantize(source, staging, batcher, cache, exclude)
            extra = {"calibration": {**manifest.describe(), "method": self.options.calib_method, "cache_key": key},
                     "fp32_nodes": len(exclude), "fp32_groups": list(self.options.fp32_groups),
                     "sensitivity_fp32_groups": [r.group for r in rows if r.kept_fp32],
                     "weight_rounding": ROUNDING if rounding else "nearest",
                     **({"ranges": RANGES} if self.options.target == "onnxruntime" else {})}
            int8_info = finish_int8(staging, self.path("int8"), info, extra,
                                    onnxruntime=self.options.target == "onnxruntime")
        finally:
            rounded.unlink(missing_ok=True)
            staging.unlink(missing_ok=True)  # finish_int8 has moved it into place, or it failed
        self.artifacts["int8"] = self.path("int8")
        self._compare_to_fp32("int8", int8_info)

    def _onnxruntime_quantizes(self) -> bool:
        """Whether the final INT8 model is made by ONNX Runtime's quantizer (CPU targets, and TensorRT targets
        without Model Optimizer), which reads the cached ranges."""
        if self.options.target != "tensorrt":
            return True
        from cstf_edge.export.quantize_modelopt import modelopt_available

        return modelopt_available() is None

    def _ranges(self, batcher, cache: Path, staging: Path, base: list[str]) -> None:
        """Calibrate the FP32 model once with ONNX Runtime unless ``cache`` holds its ranges: the sweep and the
        CPU quantizer read them from there (the model they quantize has rounded weights; its ranges are the
        FP32 model's, so the cache stays a function of the FP32 model)."""
        if not cache.is_file():
            self._calibrate(self.path("fp32"), staging, batcher, cache, base, share_ranges=False)

    def _quantize(self, source: Path, out: Path, batcher, cache: Path, exclude: list[str]) -> None:
        if self.options.target == "tensorrt":
            from cstf_edge.export.quantize_modelopt import quantize_modelopt

            quantize_modelopt(source, out, batcher=batcher, method=self.options.calib_method, exclude=exclude,
                              cache_path=cache)
        else:
            self._calibrate(source, out, batcher, cache, exclude)

    def _calibrate(self, source: Path, out: Path, batcher, cache: Path, exclude: list[str],
                   share_ranges: bool = True) -> None:
        """Quantize ``source`` with ONNX Runtime, calibrating unless ``cache`` holds the ranges (Model Optimizer
        caches none): the CPU quantizer (with shared Concat ranges unless ``share_ranges`` is False), or for
        TensorRT targets its symmetric S8 twin (TensorRT merges Concat scales itself; ``share_ranges`` unused)."""
        if self.options.target == "tensorrt":
            from cstf_edge.export.quantize_modelopt import quantize_symmetric_ort

            quantize_symmetric_ort(source, out, batcher=batcher, method=self.options.calib_method,
                                   exclude=exclude, cache_path=cache)
        else:
            quantize(source, out, batcher=batcher, method=self.options.calib_method, cache_path=cache,
                     exclude=exclude, share_ranges=share_ranges)

    def _sensitivity(self, graph, batcher, base: list[str], cache: Path, staging: Path, rounding: bool):
        """Sweep (or reuse the cached sweep) over the groups of ``graph`` (the FP32 model); returns the table and
        the node lists of FP32 groups."""
        groups = sensitivity.quantizable_groups(graph, set(base))
        table_cache = cache.with_suffix(f".{ROUNDING if rounding else 'nearest'}.{RANGES}.sensitivity.json")
        rows = sensitivity.load_table(table_cache, groups) if self.options.sensitivity else []
        if self.options.sensitivity and rows is None:
            self._ranges(batcher, cache, staging, base)
            inputs = [batch for batch, _ in zip(batcher, range(PARITY_IMAGES))]
            rows = sensitivity.sweep(self.path("fp32"), groups, inputs, method=self.options.calib_method,
                                     cache_path=cache, round_weights=rounding, progress=self.progress, exclude=base)
            sensitivity.choose_float_groups(rows)
            sensitivity.save_table(rows, table_cache)
        rows = rows or []
        if rows:
            sensitivity.save_table(rows, self.out / f"{self.name}.int8.sensitivity.json")
            log.info("sensitivity sweep:\n%s", sensitivity.format_table(rows))
        return rows, [groups.get(r.group, []) for r in rows if r.kept_fp32]

    def _compare_to_fp32(self, precision: str, info: ArtifactInfo) -> None:
        parity = compare_outputs(self.fp32_outputs, run_onnx(self.path(precision), self.parity_inputs))
        self._report(precision, info, parity, "onnx fp32")

    def _report(self, precision: str, info: ArtifactInfo, parity, against: str) -> None:
        path = self.artifacts[precision]
        self.reports[precision] = {"artifact": str(path), "precision": precision, "bytes": path.stat().st_size,
                                   "parity": {"against": against, **parity.as_dict()}, "metadata": json.loads(
                                       info.to_json())}

    def evaluate(self) -> None:
        for precision, path in self.artifacts.items():
            found, latency = accuracy.evaluate_artifact(path, self.val_labels, self.progress)
            self.reports[precision].update(accuracy=found, latency_ms_batch1_cpu=latency)

    def gates(self) -> dict:
        gates = {}
        fp32 = self.reports["fp32"]["parity"]["detection_parity"]
        gates["fp32_detection_parity"] = {"value": fp32, "limit": accuracy.FP32_MIN_PARITY,
                                          "passed": fp32 >= accuracy.FP32_MIN_PARITY}
        maps = {p: r["accuracy"] for p, r in self.reports.items() if "accuracy" in r}
        return {**gates, **accuracy.accuracy_gates(maps)}

    def run(self) -> dict:
        start = time.perf_counter()
        if self.options.val:
            self.val_labels, self.val_description = accuracy.load_validation(self.options.val, self.progress)
        info = self.export_fp32()
        if self.options.precision in ("fp16", "int8"):
            self.export_fp16(info)
        if self.options.precision == "int8":
            self.export_int8(info)
        if self.val_labels:
            self.evaluate()
        engine_problem = self.build_tensorrt() if self.options.target == "tensorrt" else None
        summary = self._summary(time.perf_counter() - start)
        self._write(summary)
        if engine_problem is not None:
            raise engine_problem
        return summary

    def build_tensorrt(self) -> Exception | None:
        """Build the engine of the requested precision; returns (not raises) why it could not be built, so the
        ONNX artifacts and reports are still written."""
        from cstf_edge.export import tensorrt
        from cstf_edge.runtime.artifact import read_onnx_info
        from cstf_edge.runtime.errors import BackendUnavailableError

        precision = self.options.precision
        onnx_path = self.artifacts[precision]
        engine = onnx_path.with_suffix(".engine")
        info = read_onnx_info(onnx_path, {p.key: p.value for p in _load_model(onnx_path).metadata_props})
        low, high = self.options.dynamic_batch or (None, None)
        try:
            tensorrt.build_engine(onnx_path, engine, precision=precision, sidecar_info=info, min_batch=low,
                                  max_batch=high, workspace_gib=self.options.workspace_gib,
                                  timing_cache=self.out / "timing.cache", dla_core=self.options.dla_core)
        except BackendUnavailableError as exc:
            self.reports[precision]["tensorrt"] = {"built": False, "reason": str(exc)}
            return BackendUnavailableError(f"{exc}. The ONNX artifacts are in {self.out}; build the engine on the "
                                           f"target machine: python -m cstf_edge.export --profile ... there, or "
                                           f"trtexec --onnx={onnx_path} --saveEngine={engine.name} --stronglyTyped")
        self.reports[precision]["tensorrt"] = {"built": True, "engine": str(engine)}
        return None

    def _summary(self, seconds: float) -> dict:
        gates = self.gates()
        return {"cstf_edge": __version__, "weights": str(self.weights), "weights_sha256": self.source_sha,
                "options": {k: v for k, v in vars(self.options).items() if k != "extra"},
                "validation": self.val_description, "artifacts": self.reports, "gates": gates,
                "passed": all(g["passed"] for g in gates.values()), "seconds": round(seconds, 1),
                "host": {"machine": platform.machine(), "processor": platform.processor(),
                         "python": platform.python_version()}}

    def _write(self, summary: dict) -> None:
        for report in self.reports.values():
            atomic_write_text(Path(report["artifact"] + ".report.json"), json.dumps(report, indent=2) + "\n")
        atomic_write_text(self.out / "export_report.json", json.dumps(summary, indent=2, default=str) + "\n")


def _load_model(path: Path):
    import onnx

    return onnx.load(str(path), load_external_data=False)


def _load_graph(path: Path):
    return _load_model(path).graph


def run_export(options: ExportOptions, progress: bool = True) -> dict:
    """Export as ``options`` says; returns the summary (also written to ``<out>/export_report.json``)."""
    return ExportRun(options.check(), progress).run()
