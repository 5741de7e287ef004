"""What every artifact carries about itself, and the check at load.

ONNX files hold it as JSON in the ``metadata_props`` entry ``cstf_edge``; TensorRT engines in the sidecar
``<engine>.json``; weights files in their safetensors metadata. :class:`ArtifactInfo` is the one reader
and writer of that JSON, so export and runtime cannot disagree about a key.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from cstf_edge.runtime.errors import ArtifactError
from cstf_edge.runtime.preprocess import PreprocessSpec

METADATA_KEY = "cstf_edge"
ARTIFACT_FORMAT = "cstf-edge-artifact/1"
ONNX_SUFFIXES = (".onnx",)
ENGINE_SUFFIXES = (".engine", ".plan")
WEIGHTS_SUFFIXES = (".safetensors",)
PRECISIONS = ("fp32", "fp16", "int8")


@dataclass
class ArtifactInfo:
    """Provenance and interface of one model artifact."""

    class_names: list[str]
    preprocess: PreprocessSpec
    strides: list[int] = field(default_factory=lambda: [8, 16, 32])
    precision: str = "fp32"
    with_reference: bool = False
    batch: int | None = 1  # None: dynamic batch
    max_batch: int | None = None
    model: str = ""
    source_sha256: str = ""
    extra: dict = field(default_factory=dict)  # calibration, TensorRT build environment, ...
    task: str = "detect"  # "detect" (images [, reference] -> detections) or "match" (reference, query -> matches)

    @property
    def imgsz(self) -> tuple[int, int]:
        return self.preprocess.height, self.preprocess.width

    @property
    def input_names(self) -> list[str]:
        if self.task == "match":
            return ["reference", "query"]
        return ["images", "reference"] if self.with_reference else ["images"]

    def to_json(self) -> str:
        data = asdict(self)
        data["preprocess"] = self.preprocess.to_metadata()
        return json.dumps({"format": ARTIFACT_FORMAT, **data}, sort_keys=True)

    @classmethod
    def from_json(cls, text: str, source: str | Path) -> "ArtifactInfo":
        try:
            data = json.loads(text)
            if data.pop("format", None) != ARTIFACT_FORMAT:
                raise ValueError(f"format is not {ARTIFACT_FORMAT}")
            data["preprocess"] = PreprocessSpec.from_metadata(data["preprocess"])
            return cls(**data)
        except (ValueError, TypeError, KeyError) as exc:
            raise ArtifactError(f"{source}: its cstf-edge metadata is unreadable ({exc}); re-export it with "
                                "python -m cstf_edge.export") from None

    @classmethod
    def from_weights_meta(cls, meta: dict) -> "ArtifactInfo":
        """From the metadata of a training weights file (``cstf_edge.model.checkpoint``)."""
        size = int(meta["imgsz"])
        spec = PreprocessSpec.from_metadata(meta.get("preprocess", {}), size, size)
        return cls(class_names=list(meta["class_names"]), preprocess=spec,
                   strides=list(meta.get("spec", {}).get("strides", [8, 16, 32])), model=meta.get("model", ""),
                   batch=None)

    def check_against(self, expected: PreprocessSpec | None, source: str | Path) -> None:
        """Raise when the runtime is about to feed this artifact differently from how it was built."""
        if expected is None:
            return
        problems = self.preprocess.mismatch(expected)
        if problems:
            raise ArtifactError(f"{source}: built for preprocessing {self.preprocess.to_metadata()}, the runtime "
                                f"is set to {expected.to_metadata()} ({'; '.join(problems)}); run with "
                                f"--imgsz {self.preprocess.height} or re-export at the size you want")


def read_onnx_info(path: str | Path, custom_metadata: dict[str, str]) -> ArtifactInfo:
    """The :class:`ArtifactInfo` stored in an ONNX model's metadata map."""
    if METADATA_KEY not in custom_metadata:
        raise ArtifactError(f"{path}: this ONNX file has no cstf-edge metadata (key {METADATA_KEY!r}); export it "
                            "with python -m cstf_edge.export so the runtime knows its classes and preprocessing")
    return ArtifactInfo.from_json(custom_metadata[METADATA_KEY], path)


def sidecar_path(engine: str | Path) -> Path:
    """``model.engine`` -> ``model.engine.json``."""
    engine = Path(engine)
    return engine.with_name(engine.name + ".json")


def read_sidecar(engine: str | Path) -> ArtifactInfo:
    """The :class:`ArtifactInfo` in an engine's sidecar JSON."""
    path = sidecar_path(engine)
    if not path.is_file():
        raise ArtifactError(f"{engine}: its sidecar {path.name} is missing; the engine cannot be used without it. "
                            "Rebuild with python -m cstf_edge.export --target tensorrt")
    try:
        text = path.read_text()
    except OSError as exc:
        raise ArtifactError(f"{path}: cannot read ({exc.strerror})") from None
    return ArtifactInfo.from_json(text, path)


def artifact_kind(path: str | Path) -> str:
    """``onnx``, ``tensorrt`` or ``torch`` from the file's suffix."""
    suffix = Path(path).suffix.lower()
    for kind, suffixes in (("onnx", ONNX_SUFFIXES), ("tensorrt", ENGINE_SUFFIXES), ("torch", WEIGHTS_SUFFIXES)):
        if suffix in suffixes:
            return kind
    raise ArtifactError(f"{path}: unknown model artifact type {suffix!r}; use .onnx (ONNX Runtime), "
                        ".engine/.plan (TensorRT) or .safetensors (PyTorch reference)")
