"""The variants of a bench run (backend x precision x batch), why some cannot run here, and the artifacts each
needs: missing ONNX files and TensorRT engines are made by :func:`cstf_edge.export.run_export` (the
calibration cache makes a repeated INT8 export cheap); up-to-date ones are reused.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import cached_property, lru_cache
from pathlib import Path

from cstf_edge.bench import peers
from cstf_edge.bench.options import BenchOptions
from cstf_edge.errors import CstfError

log = logging.getLogger(__name__)

SHORT = {"torch": "torch", "onnxruntime": "ort", "tensorrt": "trt"}


@dataclass(frozen=True)
class Variant:
    backend: str
    precision: str
    batch: int
    peer: str = ""  # a --peers entry (cstf_edge.bench.peers); "" for the model under test

    @property
    def id(self) -> str:
        prefix = f"{peers.peer_name(self.peer)}-" if self.peer else ""
        return f"{prefix}{self.backend}-{self.precision}-b{self.batch}"

    @property
    def label(self) -> str:
        prefix = f"{peers.peer_name(self.peer)} " if self.peer else ""
        return f"{prefix}{SHORT[self.backend]}-{self.precision} b{self.batch}"


def all_variants(options: BenchOptions) -> list[Variant]:
    """Every requested combination; the PyTorch FP32 reference first, then in the order asked, then the peers
    (ONNX Runtime, FP32 and INT8 as asked, batch 1: they are exported with a static batch)."""
    variants = [Variant(b, p, n) for b in options.backends for p in options.precisions for n in options.batches]
    variants += [Variant("onnxruntime", p, 1, spec) for spec in options.peers for p in options.precisions]
    return sorted(variants, key=lambda v: (v.backend != "torch" or v.precision != "fp32",))


# ---- why a variant cannot run here ---------------------------------------------------------------------

@lru_cache(maxsize=None)
def _import_problem(module: str) -> str | None:
    try:
        __import__(module)
    except Exception as exc:  # noqa: BLE001 - any import failure means the backend is absent
        return f"{type(exc).__name__}: {exc}"
    return None


def _cuda_problem(device: str) -> str | None:
    """Why ``device`` is no usable CUDA device here (asked through PyTorch), or None."""
    if _import_problem("torch"):
        return "PyTorch is not installed to query CUDA"
    import torch

    if not torch.cuda.is_available():
        return "no CUDA device on this machine (torch.cuda.is_available() is False)"
    index = int(device.split(":")[1]) if ":" in device else 0
    if index >= torch.cuda.device_count():
        return f"{device}: this machine has {torch.cuda.device_count()} CUDA device(s)"
    return None


def _torch_reason(precision: str, device: str) -> str | None:
    if _import_problem("torch"):
        return f"PyTorch is not installed ({_import_problem('torch')}): pip install 'cstf-edge[train]'"
    if precision == "int8":
        return ("the PyTorch reference has no INT8 path; INT8 runs as a Q/DQ ONNX (onnxruntime) or a TensorRT "
                "engine (tensorrt)")
    if device == "cpu":
        return ("PyTorch FP16 is a CUDA path (autocast); on the CPU it is not a deployment option — run with "
                "--device cuda, or see onnxruntime-fp16") if precision == "fp16" else None
    return _cuda_problem(device)


def _onnxruntime_reason(device: str) -> str | None:
    if _import_problem("onnxruntime"):
        return f"ONNX Runtime is not installed ({_import_problem('onnxruntime')}): pip install onnxruntime"
    if device == "cpu":
        return None
    import onnxruntime

    providers = onnxruntime.get_available_providers()
    if "CUDAExecutionProvider" not in providers:
        return f"device {device} needs the CUDA build of ONNX Runtime (onnxruntime-gpu); this one has {providers}"
    return None


def _tensorrt_reason(device: str) -> str | None:
    if _import_problem("tensorrt"):
        return (f"TensorRT is not installed ({_import_problem('tensorrt')}); it needs an NVIDIA GPU and "
                "pip install 'cstf-edge[trt]'")
    if device == "cpu":
        return "TensorRT engines run on an NVIDIA GPU: use --device cuda"
    return _cuda_problem(device)


def unavailable_reason(variant: Variant, options: BenchOptions) -> str | None:
    """Why ``variant`` cannot run on this machine with these options, or None when it can."""
    if variant.peer:
        if variant.precision not in peers.PEER_PRECISIONS:
            return f"peers are run at {' and '.join(peers.PEER_PRECISIONS)} (their own FP32 export, INT8 made here)"
        if variant.precision == "int8" and options.calibration() is None:
            return "a peer's INT8 is calibrated on cstf-n's calibration set and none was found: pass --calib"
        return _onnxruntime_reason(options.device) or peers.unavailable(variant.peer)
    if variant.backend == "torch":
        return _torch_reason(variant.precision, options.device)
    if variant.precision == "int8" and options.calibration() is None:
        return "INT8 needs a calibration set and none was found: pass --calib calibration/synthrs-calib.toml"
    if variant.backend != "torch" and _import_problem("torch"):
        return "exporting the ONNX needs PyTorch (pip install 'cstf-edge[train]'), or put the artifacts in --artifacts"
    if variant.backend == "onnxruntime":
        return _onnxruntime_reason(options.device)
    return _tensorrt_reason(options.device)


# ---- artifacts -------------------------------------------------------------------------------------------

class Artifacts:
    """Where each variant's model file is, exporting what is missing or stale (other weights, input size or
    batch range)."""

    def __init__(self, options: BenchOptions, weights: Path):
        from cstf_edge.export.onnx_export import sha256_file

        self.options = options
        self.weights = weights
        self.weights_sha = sha256_file(weights)
        self.folder = options.artifacts_dir
        self.max_batch = max(options.batches)
        self.dynamic = (1, self.max_batch) if self.max_batch > 1 else None
        self.exports: list[dict] = []
        self.failed: dict[tuple[str, str], CstfError] = {}
        self.peers = peers.PeerArtifacts(self.folder, options.imgsz, self._class_names(), options.calibration(),
                                         options.calib_method, options.progress)

    def _class_names(self) -> list[str]:
        return list(self._meta.get("class_names", []))

    @cached_property
    def _meta(self) -> dict:
        from cstf_edge.runtime.backends.torch.runner import weights_meta

        return weights_meta(self.weights)

    def name(self, target: str) -> str:
        stem = f"{self._model()}-{self.options.imgsz}"
        stem += f"-dyn{self.max_batch}" if self.dynamic else ""
        return stem + ("-trt" if target == "tensorrt" else "")

    def _model(self) -> str:
        return self._meta.get("model", "model")

    def path(self, variant: Variant) -> Path:
        if variant.peer:
            return self.peers.path(variant.peer, variant.precision)
        if variant.backend == "torch":
            return self.weights
        suffix = "engine" if variant.backend == "tensorrt" else "onnx"
        return self.folder / f"{self.name(variant.backend)}.{variant.precision}.{suffix}"

    def fresh(self, path: Path) -> bool:
        """Whether ``path`` exists and was made from these weights at this input size and batch range, by this
        version of the exporter (``EXPORT_REVISION``)."""
        from cstf_edge.export.onnx_export import EXPORT_REVISION

        if not path.is_file():
            return False
        try:
            info = read_artifact_info(path)
        except CstfError as exc:
            log.info("%s: remaking it (%s)", path, exc)
            return False
        batch_ok = info.batch is None and (info.max_batch or 0) >= self.max_batch if self.dynamic \
            else info.batch == 1
        if info.extra.get("export_revision") != EXPORT_REVISION:
            log.info("%s: remaking it (made by an older exporter, revision %s; now %s)", path,
                     info.extra.get("export_revision"), EXPORT_REVISION)
            return False
        return (info.source_sha256 == self.weights_sha and info.imgsz == (self.options.imgsz,) * 2 and batch_ok
                and self._same_calibration(info))

    def _same_calibration(self, info) -> bool:
        """An INT8 artifact counts only when calibrated on this run's manifest with this method, with the same
        FP32 groups and the export's weight rounding (one made before it, with nearest rounding, is remade)."""
        from cstf_edge.export.weight_rounding import SCHEME as WEIGHT_ROUNDING

        if info.precision != "int8":
            return True
        made = info.extra.get("calibration")
        same_groups = tuple(info.extra.get("fp32_groups", ())) == tuple(self.options.fp32_groups)
        same_rounding = info.extra.get("weight_rounding") == WEIGHT_ROUNDING
        return same_groups and same_rounding and (
            not made or calibrated_with(made, self.options.calibration(), self.options.calib_method))

    def ensure(self, variant: Variant) -> Path:
        """The artifact of ``variant``, exported now when missing or stale (raises the export's error)."""
        if variant.peer:
            return self.peers.ensure(variant.peer, variant.precision)
        path = self.path(variant)
        if variant.backend == "torch" or self.fresh(path):
            return path
        self._export(variant.backend, self._precision_to_export(variant))
        if not path.is_file():
            raise CstfError(f"the export did not write {path}")
        return path

    def _precision_to_export(self, variant: Variant) -> str:
        """TensorRT builds one engine per export; for ONNX Runtime one export writes every precision asked for
        (an INT8 export also writes the FP16 and FP32 ONNX)."""
        if variant.backend == "tensorrt":
            return variant.precision
        for precision in ("int8", "fp16"):
            if precision in self.options.precisions and (precision != "int8" or self.options.calibration()):
                return precision
        return "fp32"

    def _export(self, target: str, precision: str) -> None:
        """One export (a failed one is remembered and its error raised again, not retried per variant)."""
        key = (target, precision)
        if key in self.failed:
            raise self.failed[key]
        try:
            self._run_export(target, precision)
        except CstfError as exc:
            self.failed[key] = exc
            raise

    def _run_export(self, target: str, precision: str) -> None:
        from cstf_edge.export import ExportOptions, run_export

        calib = self.options.calibration()
        export_options = ExportOptions(
            weights=str(self.weights), precision=precision, target=target, imgsz=self.options.imgsz,
            dynamic_batch=self.dynamic, calib=str(calib) if calib and precision == "int8" else None,
            calib_method=self.options.calib_method, val=None, out=str(self.folder), name=self.name(target),
            sensitivity=self.options.sensitivity, fp32_groups=self.options.fp32_groups)
        log.info("exporting %s %s to %s", target, precision, self.folder)
        summary = run_export(export_options, progress=self.options.progress)
        self.exports.append({"target": target, "precision": precision, "name": self.name(target),
                             "seconds": summary.get("seconds"), "passed_gates": summary.get("passed")})


def calibrated_with(made: dict, calibration: Path | None, method: str) -> bool:
    """Whether an artifact's calibration record (``extra["calibration"]``) names this manifest and method."""
    return (calibration is not None and made.get("method") == method
            and Path(str(made.get("manifest"))).resolve() == Path(calibration).resolve())


def read_artifact_info(path: Path):
    from cstf_edge.runtime.artifact import read_onnx_info, read_sidecar

    if path.suffix == ".onnx":
        import onnx

        model = onnx.load(str(path), load_external_data=False)
        return read_onnx_info(path, {p.key: p.value for p in model.metadata_props})
    return read_sidecar(path)


def open_runner(variant: Variant, path: Path, options: BenchOptions):
    """The runtime runner of ``variant`` (not yet activated)."""
    if variant.peer:
        return peers.UltralyticsObbRunner(path, options.device)
    if variant.backend == "torch":
        from cstf_edge.runtime.backends.torch import TorchRunner

        return TorchRunner(path, options.device, half=variant.precision == "fp16", imgsz=options.imgsz)
    if variant.backend == "onnxruntime":
        from cstf_edge.runtime.backends.onnxruntime import OnnxRuntimeRunner

        return OnnxRuntimeRunner(path, options.device)
    from cstf_edge.runtime.backends.tensorrt import TensorRTRunner

    return TensorRTRunner(path, options.device)
