"""Peers in the bench (``cstf-edge bench --peers``): Ultralytics OBB models (YOLOv8n-obb by default) timed, and
scored where they can be, through the same runtime path as cstf-n, so their rows compare with ours.

How a peer is run, exactly (also written into each row's ``how``):

- **FP32 ONNX** made by Ultralytics' own exporter, ``YOLO(model).export(format="onnx", imgsz, opset=17,
  batch=1, simplify=True)``: here when ``ultralytics`` imports, or given as a ``.onnx`` file exported elsewhere
  with the same call (``yolo export model=M format=onnx imgsz=1024 opset=17``). A model name (``yolov8n-obb``)
  is built from its yaml with the classes of the weights under test (the data's): untrained, so it is timed,
  not scored.
  A ``.pt`` is copied to a temporary folder first (the exporter writes beside its input).
- **INT8**: the same ONNX Runtime static quantizer, calibration manifest, batcher (the runtime's preprocessing),
  method and sum-preserving weight rounding as cstf-n's INT8 (:func:`cstf_edge.export.quantize_ort.quantize`). As for cstf-n, the head's
  output convolutions and the decode after them (DFL, distances -> box, angle) stay FP32
  (:func:`float_nodes`).
- **Run** by :class:`UltralyticsObbRunner` inside the project's :class:`~cstf_edge.runtime.Detector`: the same
  letterbox, RGB, /255 (Ultralytics' own preprocessing is the same centred letterbox with 114 padding), the
  same thresholds and rotated NMS. The runner lays the output ``[B, 4 + C + 1, N]`` (cx, cy, w, h, class
  scores, angle) out as the project's ``[B, N, 5 + C]`` in DESIGN.md's convention, inside the infer stage.
- **Accuracy** only when the peer's class names are those of the weights under test, in order, and it was
  trained (a ``.pt``; a given ``.onnx`` is taken as trained, since its metadata cannot say).
"""
from __future__ import annotations

import ast
import logging
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from cstf_edge._io import atomic_write_bytes
from cstf_edge.errors import CstfError
from cstf_edge.runtime.artifact import ArtifactInfo
from cstf_edge.runtime.backends.onnxruntime import OnnxRuntimeRunner
from cstf_edge.runtime.preprocess import PreprocessSpec

log = logging.getLogger(__name__)

LAYOUT = "ultralytics-obb: [B, 4 + C + 1, N] = cx, cy, w, h, class scores, angle"
PEER_PRECISIONS = ("fp32", "int8")
INSTALL_HINT = ("pip install 'cstf-edge[peers]' (Ultralytics needs a torchvision built for your torch), or export "
                "the peer elsewhere with `yolo export model=yolov8n-obb.pt format=onnx imgsz=1024 opset=17` and "
                "pass the .onnx to --peers")
_HIDDEN_HEAD_CONV = re.compile(r"/cv[234]\.\d+/cv[234]\.\d+\.[01]/")


class PeerError(CstfError):
    """A peer cannot be exported, quantized or read; the message says which and what would work."""


def peer_name(spec: str) -> str:
    """The short name a peer's rows carry: the file stem for a file, else the model name."""
    return Path(spec).stem if spec.endswith((".onnx", ".pt")) else spec.removesuffix(".yaml")


def unavailable(spec: str) -> str | None:
    """Why the peer ``spec`` cannot run, known before any work (a missing file), or None. Whether Ultralytics
    imports is found out when an export is needed: a peer exported before (in the artifacts folder) runs
    without it."""
    if spec.endswith((".onnx", ".pt")) and not Path(spec).is_file():
        return f"--peers {spec}: no such file"
    return None


# ---- the FP32 ONNX ---------------------------------------------------------------------------------------

_EXPORT_SCRIPT = """
import sys
from ultralytics import YOLO
source, imgsz, names = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
model = YOLO(source, task="obb")
if names:
    model.model.names = dict(enumerate(names))
print(model.export(format="onnx", imgsz=imgsz, opset=17, batch=1, simplify=True, dynamic=False))
"""


def source_record(spec: str, classes: int) -> dict:
    """What a peer's FP32 ONNX was made from, exactly (its freshness test): the file's sha256 for a given
    ``.onnx`` or ``.pt``, the class count for a model built from its yaml."""
    from cstf_edge.export.onnx_export import sha256_file

    if spec.endswith((".onnx", ".pt")):
        return {"spec": spec, "sha256": sha256_file(spec)}
    return {"spec": spec, "classes": classes}


def make_fp32(spec: str, imgsz: int, class_names: list[str], out: Path) -> None:
    """Write the peer's FP32 ONNX with cstf-edge metadata to ``out`` (atomically)."""
    record = source_record(spec, len(class_names))
    if spec.endswith(".onnx"):
        import_onnx(Path(spec), out, model=peer_name(spec), origin=f"given: {spec}", trained=True, record=record)
        return
    with tempfile.TemporaryDirectory(prefix="cstf-peer-") as tmp:
        exported, trained = _export_ultralytics(spec, imgsz, class_names, Path(tmp))
        import_onnx(exported, out, model=peer_name(spec), origin=f"exported here by Ultralytics from {spec}",
                    trained=trained, record=record)


def _export_ultralytics(spec: str, imgsz: int, class_names: list[str], folder: Path) -> tuple[Path, bool]:
    """Ultralytics' ONNX export of ``spec``, run in a child process whose working directory is ``folder`` (a
    model built from a yaml is exported into the working directory; the child also keeps Ultralytics' logging
    and settings out of this process)."""
    try:
        __import__("ultralytics")
    except Exception as exc:  # noqa: BLE001 - ImportError, or torchvision failing inside it
        raise PeerError(f"--peers {spec}: Ultralytics does not import ({exc}); {INSTALL_HINT}") from None
    if spec.endswith(".pt"):
        source, trained, names = folder / Path(spec).name, True, []
        shutil.copy2(spec, source)
    else:
        source, trained, names = _yaml_with_classes(spec, len(class_names), folder), False, list(class_names)
    done = subprocess.run([sys.executable, "-c", _EXPORT_SCRIPT, str(source), str(imgsz), *names], cwd=folder,
                          capture_output=True, text=True)
    lines = done.stdout.strip().splitlines()
    if done.returncode or not lines:
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise PeerError(f"--peers {spec}: Ultralytics could not export it ({tail})")
    return (folder / lines[-1]).resolve(), trained


def _yaml_with_classes(name: str, classes: int, folder: Path) -> Path:
    """A copy of Ultralytics' yaml for ``name`` (``yolov8n-obb``: scale from the name) with ``nc = classes``."""
    import yaml
    from ultralytics.nn.tasks import yaml_model_load

    try:
        cfg = yaml_model_load(f"{name.removesuffix('.yaml')}.yaml")
    except Exception as exc:  # noqa: BLE001
        raise PeerError(f"--peers {name}: Ultralytics has no such model yaml ({exc}); e.g. yolov8n-obb, "
                        "yolo11n-obb") from None
    cfg["nc"] = classes
    path = folder / f"{name.removesuffix('.yaml')}-c{classes}.yaml"  # keeps the scale letter after the version
    path.write_text(yaml.safe_dump(cfg))
    return path


def import_onnx(source: Path, out: Path, *, model: str, origin: str, trained: bool, record: dict) -> None:
    """Copy an Ultralytics OBB ONNX to ``out`` with the cstf-edge metadata the runtime reads (classes, input
    size, preprocessing) and ``record`` (:func:`source_record`), refusing one of another layout."""
    import onnx

    from cstf_edge.export.onnx_export import set_metadata, sha256_file

    try:
        proto = onnx.load(str(source))
    except Exception as exc:  # noqa: BLE001 - protobuf decode errors
        raise PeerError(f"{source}: not a readable ONNX file ({exc})") from None
    meta = {p.key: p.value for p in proto.metadata_props}
    if meta.get("task") != "obb" or "names" not in meta:
        raise PeerError(f"{source}: not an Ultralytics OBB export (metadata task={meta.get('task')!r}); export it "
                        "with `yolo export model=...-obb.pt format=onnx`")
    names = _class_names(source, meta["names"])
    shape = [d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim]
    if len(shape) != 4 or not all(shape):
        raise PeerError(f"{source}: input shape {shape} is not a static [1, 3, H, W]; export with dynamic=False")
    out_shape = [d.dim_value for d in proto.graph.output[0].type.tensor_type.shape.dim]
    if len(out_shape) != 3 or out_shape[1] != len(names) + 5:
        raise PeerError(f"{source}: output shape {out_shape} is not [B, 4 + {len(names)} classes + angle, N] "
                        f"({LAYOUT})")
    info = ArtifactInfo(class_names=names, preprocess=PreprocessSpec(*shape[2:]), batch=shape[0], model=model,
                        source_sha256=sha256_file(source),
                        extra={"peer": "ultralytics", "layout": LAYOUT, "trained": trained, "origin": origin,
                               "source": record, "ultralytics_version": meta.get("version", "")})
    set_metadata(proto, info)
    atomic_write_bytes(out, proto.SerializeToString())


def _class_names(source: Path, text: str) -> list[str]:
    """Ultralytics writes ``names`` as a Python dict literal ``{0: 'plane', ...}``."""
    try:
        names = ast.literal_eval(text)
        return [str(names[i]) for i in sorted(names)]
    except (ValueError, SyntaxError, TypeError, AttributeError) as exc:
        raise PeerError(f"{source}: its class names metadata is unreadable ({exc})") from None


# ---- INT8 ----------------------------------------------------------------------------------------------

def float_nodes(graph) -> list[str]:
    """Nodes of an Ultralytics OBB graph kept FP32 in INT8: in the head (the last ``/model.N/``), everything but
    the two hidden convolution blocks of each branch, i.e. the output convolutions and the decode."""
    scopes = [int(m.group(1)) for n in graph.node if (m := re.match(r"/model\.(\d+)/", n.name))]
    if not scopes:
        raise PeerError("not an Ultralytics graph (no /model.N/ node names): cannot tell its head")
    head = f"/model.{max(scopes)}/"
    return [n.name for n in graph.node
            if not n.name.startswith("/model.") or (n.name.startswith(head) and not _HIDDEN_HEAD_CONV.search(n.name))]


def make_int8(fp32: Path, out: Path, batcher, calibration: Path, method: str) -> None:
    """The peer's INT8 Q/DQ ONNX, calibrated like cstf-n's (ranges cached under the same kind of key); its
    metadata records the calibration as cstf-n's does (``extra["calibration"]``)."""
    import onnx

    from cstf_edge.export.calibration import calibration_cache
    from cstf_edge.export.quantize_ort import finish_int8, quantize
    from cstf_edge.export.shared_ranges import SCHEME as RANGES
    from cstf_edge.export.weight_rounding import SCHEME, round_conv_weights

    info = _info(fp32)
    key, cache = calibration_cache(f"peer-{fp32.stem}", fp32, info.preprocess, batcher.paths, method, "onnxruntime")
    staging, rounded = out.with_name(f".{out.name}.staging"), out.with_name(f".{out.name}.rounded")
    try:
        graph = onnx.load(str(fp32), load_external_data=False).graph
        exclude = float_nodes(graph)
        if not cache.is_file():  # ranges of the FP32 model, as for cstf-n
            quantize(fp32, staging, batcher=batcher, method=method, exclude=exclude, cache_path=cache,
                     share_ranges=False)
        round_conv_weights(fp32, rounded, exclude)
        quantize(rounded, staging, batcher=batcher, method=method, exclude=exclude, cache_path=cache)
        finish_int8(staging, out, info, {"calibration": {"manifest": str(calibration), "method": method,
                                                         "cache_key": key}, "weight_rounding": SCHEME,
                                        "ranges": RANGES}, onnxruntime=True)
    except CstfError:
        raise
    except Exception as exc:  # noqa: BLE001 - ONNX Runtime's quantizer raises its own and plain types
        raise PeerError(f"{fp32}: INT8 quantization failed ({type(exc).__name__}: {exc})") from None
    finally:
        staging.unlink(missing_ok=True)
        rounded.unlink(missing_ok=True)


# ---- running ---------------------------------------------------------------------------------------------

def to_detections(raw: np.ndarray) -> np.ndarray:
    """Ultralytics OBB output ``[B, 4 + C + 1, N]`` -> the project's ``[B, N, 5 + C]`` (cx, cy, w, h, angle,
    scores) with boxes canonical (w >= h, angle in [-pi/2, pi/2))."""
    from cstf_edge.geometry import canonicalize_rboxes

    boxes = np.concatenate([raw[:, :4], raw[:, -1:]], axis=1).transpose(0, 2, 1)  # [B, N, 5]
    try:
        canonical = canonicalize_rboxes(boxes.reshape(-1, 5).astype(np.float64)).astype(np.float32)
    except ValueError as exc:  # a negative or non-finite side: the model's output is broken
        raise PeerError(f"the peer's output holds an impossible box ({exc})") from None
    scores = raw[:, 4:-1].transpose(0, 2, 1)
    return np.concatenate([canonical.reshape(boxes.shape), scores], axis=-1)


class UltralyticsObbRunner(OnnxRuntimeRunner):
    """ONNX Runtime on an Ultralytics OBB ONNX imported by :func:`import_onnx`; outputs ``detections`` in the
    project's layout (:func:`to_detections`)."""

    def _infer(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        outputs = super()._infer(feed)
        return {"detections": to_detections(next(iter(outputs.values())))}


def scorable(info: ArtifactInfo, class_names: list[str]) -> str | None:
    """Why a peer's detections cannot be scored against ``class_names`` (the weights under test's), or None."""
    if not info.extra.get("trained", False):
        return "not scored: built from its yaml, untrained (pass trained weights or their ONNX to --peers)"
    if list(info.class_names) != list(class_names):
        return (f"not scored: its classes {info.class_names[:6]}{'...' if len(info.class_names) > 6 else ''} are "
                f"not those of the model under test {class_names}")
    return None


# ---- artifacts of a bench run ----------------------------------------------------------------------------

class PeerArtifacts:
    """The peers' ONNX files in the bench's artifacts folder, made when missing or stale."""

    def __init__(self, folder: Path, imgsz: int, class_names: list[str], calibration: Path | None, method: str,
                 progress: bool = True):
        self.folder, self.imgsz, self.class_names = folder, imgsz, list(class_names)
        self.calibration, self.method, self.progress = calibration, method, progress
        self.made: list[dict] = []

    def path(self, spec: str, precision: str) -> Path:
        return self.folder / f"{peer_name(spec)}-{self.imgsz}.{precision}.onnx"

    def ensure(self, spec: str, precision: str) -> Path:
        fp32 = self.path(spec, "fp32")
        info = self._fresh_fp32(spec, fp32)
        if info is None:
            self.folder.mkdir(parents=True, exist_ok=True)
            make_fp32(spec, self.imgsz, self.class_names, fp32)
            self.made.append({"peer": spec, "precision": "fp32", "path": str(fp32)})
            info = _info(fp32)
        if info.imgsz != (self.imgsz, self.imgsz):
            raise PeerError(f"--peers {spec}: exported at {info.imgsz[0]} px, the bench runs at {self.imgsz}; "
                            f"export it again with imgsz={self.imgsz}")
        if precision == "fp32":
            return fp32
        if self.calibration is None:
            raise PeerError("a peer's INT8 needs the calibration set cstf-n uses: pass --calib")
        int8 = self.path(spec, "int8")
        if not self._fresh_int8(int8, info):
            make_int8(fp32, int8, self._batcher(info), self.calibration, self.method)
            self.made.append({"peer": spec, "precision": "int8", "path": str(int8)})
        return int8

    def _fresh_fp32(self, spec: str, path: Path) -> ArtifactInfo | None:
        """The metadata of ``path`` if it was made from exactly this spec (the same file, by sha256, for a given
        .onnx or .pt; the same class count for a model built from its yaml), else None."""
        if not path.is_file():
            return None
        info = _info(path)
        return info if info.extra.get("source") == source_record(spec, len(self.class_names)) else None

    def _fresh_int8(self, path: Path, fp32_info: ArtifactInfo) -> bool:
        """Quantized from the current FP32 file with this calibration manifest and method, and the export's
        weight rounding, shared Concat ranges and ONNX Runtime layout."""
        from cstf_edge.bench.variants import calibrated_with
        from cstf_edge.export.ort_layout import SCHEME as ORT_LAYOUT
        from cstf_edge.export.shared_ranges import SCHEME as RANGES
        from cstf_edge.export.weight_rounding import SCHEME

        if not path.is_file():
            return False
        info = _info(path)
        return (info.source_sha256 == fp32_info.source_sha256 and info.extra.get("weight_rounding") == SCHEME
                and info.extra.get("ranges") == RANGES and info.extra.get("ort_layout") == ORT_LAYOUT
                and calibrated_with(info.extra.get("calibration") or {}, self.calibration, self.method))

    def _batcher(self, info: ArtifactInfo):
        from cstf_edge.export.calibration import CalibrationBatcher, CalibrationManifest

        paths = CalibrationManifest.load(self.calibration).image_paths(self.progress)
        return CalibrationBatcher(paths, info.preprocess)


def _info(path: Path) -> ArtifactInfo:
    from cstf_edge.bench.variants import read_artifact_info

    return read_artifact_info(path)


def describe(spec: str, precision: str, info: ArtifactInfo, device: str) -> str:
    """How a peer variant was run, for the report."""
    import onnxruntime

    made = info.extra.get("origin", spec)
    calibration = info.extra.get("calibration") or {}
    quant = (f"; INT8 by the same ONNX Runtime static quantizer and calibration set as cstf-n "
             f"({calibration.get('manifest')}, {calibration.get('method')}), head output convolutions and decode "
             "FP32") if precision == "int8" else ""
    return (f"Ultralytics {info.extra.get('ultralytics_version', '')} OBB ONNX ({made}), ONNX Runtime "
            f"{onnxruntime.__version__} on {device}, UltralyticsObbRunner in the project's Detector (same letterbox, "
            f"thresholds, rotated NMS; output re-laid out inside infer){quant}")
