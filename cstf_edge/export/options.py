"""Export options: one dataclass, filled from a profile (``export/<name>.toml``) and then from flags.

A profile is a flat TOML table whose keys are the field names of :class:`ExportOptions`, e.g.::

    # export/cpu-int8.toml
    precision = "int8"
    target = "onnxruntime"
    imgsz = 1024
    calib = "calibration/synthrs-val.toml"

Paths inside a profile are relative to the repository/working directory the command runs from, or to the
profile's own folder when they exist there.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

from cstf_edge.export.errors import ExportError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

PRECISIONS = ("fp32", "fp16", "int8")
TARGETS = ("onnxruntime", "tensorrt")
CALIB_METHODS = ("entropy", "minmax", "percentile")
WEIGHT_ROUNDINGS = ("sum-preserving", "nearest")  # INT8 weights: see export/weight_rounding.py


@dataclass
class ExportOptions:
    """Everything an export needs; ``None`` means "the default for the target/precision"."""

    weights: str | None = None  # default: the shipped weights
    precision: str = "fp32"
    target: str = "onnxruntime"
    imgsz: int = 1024
    batch: int = 1
    dynamic_batch: tuple[int, int] | None = None  # (min, max)
    with_reference: bool = False
    calib: str | None = None  # a manifest in calibration/
    calib_method: str = "minmax"
    val: str | None = None  # a SynthRS manifest or labelled folder for the accuracy gates
    out: str = "artifacts"
    opset: int = 17
    workspace_gib: float = 4.0
    dla_core: int | None = None
    sensitivity: bool = True
    fp32_groups: tuple[str, ...] = ()  # INT8: node-name scopes kept FP32 besides the sweep's, e.g. /backbone/stem
    weight_rounding: str = "sum-preserving"  # INT8: or "nearest" (the quantizer's own rounding alone)
    profile: str | None = None
    name: str | None = None
    extra: dict = field(default_factory=dict)

    def check(self) -> "ExportOptions":
        """Raise :class:`ExportError` on a value no export can take."""
        _one_of("precision", self.precision, PRECISIONS)
        _one_of("target", self.target, TARGETS)
        _one_of("calib-method", self.calib_method, CALIB_METHODS)
        _one_of("weight-rounding", self.weight_rounding, WEIGHT_ROUNDINGS)
        if self.imgsz <= 0 or self.imgsz % 64:
            raise ExportError(f"--imgsz {self.imgsz} is not a positive multiple of 64 (the coarsest stride, 32, "
                              "pooled once more by the correspondence); use e.g. 512, 640 or 1024")
        if self.batch < 1:
            raise ExportError(f"--batch {self.batch} must be at least 1")
        if self.dynamic_batch is not None:
            low, high = self.dynamic_batch
            if not 1 <= low <= high:
                raise ExportError(f"--dynamic-batch {low}:{high} must satisfy 1 <= min <= max, e.g. 1:8")
        if self.precision == "int8" and not self.calib:
            raise ExportError("INT8 needs a calibration set: --calib calibration/synthrs-calib.toml (or a profile "
                              "that names one, e.g. --profile export/cpu-int8.toml)")
        if self.dla_core is not None and self.target != "tensorrt":
            raise ExportError("--dla-core applies to TensorRT engines on Jetson only; add --target tensorrt")
        return self


def _one_of(name: str, value, allowed) -> None:
    if value not in allowed:
        raise ExportError(f"--{name} {value!r} is not one of {', '.join(allowed)}")


def parse_scopes(text: str | None) -> tuple[str, ...] | None:
    """``"/backbone/stem, /neck/"`` -> ``("/backbone/stem", "/neck/")`` (the ``--fp32-groups`` flag of the
    export and the bench); None for no flag."""
    return tuple(s.strip() for s in text.split(",") if s.strip()) if text else None


def parse_batch_range(text: str) -> tuple[int, int]:
    """``"1:8"`` -> ``(1, 8)``."""
    try:
        low, high = (int(part) for part in text.split(":"))
    except ValueError:
        raise ExportError(f"--dynamic-batch {text!r} is not MIN:MAX, e.g. 1:8") from None
    return low, high


def load_profile(path: str | Path) -> dict:
    """The option values of a profile file (unknown keys are an error naming them)."""
    path = Path(path)
    if not path.is_file():
        shipped = sorted(p.stem for p in Path("export").glob("*.toml")) if Path("export").is_dir() else []
        hint = f" (profiles here: {', '.join(shipped)})" if shipped else ""
        raise ExportError(f"{path}: no such export profile{hint}")
    try:
        values = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ExportError(f"{path}: not valid TOML ({exc})") from None
    known = {f.name for f in fields(ExportOptions)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ExportError(f"{path}: unknown keys {unknown}; a profile may set {sorted(known - {'profile', 'extra'})}")
    if "dynamic_batch" in values and values["dynamic_batch"] is not None:
        values["dynamic_batch"] = tuple(values["dynamic_batch"])
    if "fp32_groups" in values:
        values["fp32_groups"] = tuple(values["fp32_groups"])
    for key in ("calib", "val", "weights"):
        if isinstance(values.get(key), str):
            values[key] = _resolve_beside(values[key], path)
    return values


def _resolve_beside(value: str, profile: Path) -> str:
    """A path as given when it exists from here, else relative to the profile's repository root."""
    if Path(value).exists():
        return value
    beside = profile.resolve().parent.parent / value
    return str(beside) if beside.exists() else value


def build_options(profile: str | None, overrides: dict) -> ExportOptions:
    """Profile values, then every override that is not None; checked."""
    options = ExportOptions()
    if profile:
        options = replace(options, **load_profile(profile), profile=str(profile))
    options = replace(options, **{k: v for k, v in overrides.items() if v is not None})
    return options.check()
