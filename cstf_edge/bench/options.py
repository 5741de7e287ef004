"""Options of ``cstf-edge bench``: one dataclass, parsed from the comma lists the command line takes, checked
before any work (a bad value is a :class:`BenchError`, exit code 2 at the command line)."""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from cstf_edge.errors import CstfError

BACKENDS = ("torch", "onnxruntime", "tensorrt")
BACKEND_ALIASES = {"pytorch": "torch", "ort": "onnxruntime", "trt": "tensorrt"}
PRECISIONS = ("fp32", "fp16", "int8")
DEFAULT_CALIB = "calibration/synthrs-calib.toml"


class BenchError(CstfError):
    """``cstf-edge bench`` cannot run as asked (bad option, missing data or weights); the message says why."""


@dataclass
class BenchOptions:
    """Everything one bench run needs; ``None`` means the default (shipped weights, ``<out>/artifacts``...)."""

    data: str
    weights: str | None = None
    backends: tuple[str, ...] = BACKENDS
    precisions: tuple[str, ...] = PRECISIONS
    imgsz: int = 1024
    batches: tuple[int, ...] = (1,)
    device: str = "cpu"
    warmup: int = 10
    iters: int = 100
    out: str = "runs/bench"
    artifacts: str | None = None
    calib: str | None = None
    calib_method: str = "minmax"
    sensitivity: bool = True
    fp32_groups: tuple[str, ...] = ()  # INT8 export: node scopes kept FP32 (e.g. /backbone/stem for cstf-n-relu)
    max_images: int | None = None
    peers: tuple[str, ...] = ()  # Ultralytics OBB models to run beside ours (cstf_edge.bench.peers)
    interleave: bool = True  # time the variants in turns (False: one after the other)
    # Idle seconds before each interleaved iteration: ONNX Runtime's worker threads (and OpenMP's under PyTorch)
    # spin for tens of milliseconds after a run; without a pause they took the cores from the next variant and
    # made every variant 25-50 % slower than alone (INT8 the most).
    settle: float = 0.1
    progress: bool = True

    @property
    def artifacts_dir(self) -> Path:
        return Path(self.artifacts) if self.artifacts else Path(self.out) / "artifacts"

    def check(self) -> "BenchOptions":
        """Raise :class:`BenchError` on a value no bench can take."""
        _check_members("--backends", self.backends, BACKENDS)
        _check_members("--precisions", self.precisions, PRECISIONS)
        if not self.batches or min(self.batches) < 1:
            raise BenchError(f"--batch {','.join(map(str, self.batches))}: every batch size must be at least 1, "
                             "e.g. --batch 1,4")
        if self.imgsz <= 0 or self.imgsz % 64:
            raise BenchError(f"--imgsz {self.imgsz} is not a positive multiple of 64; use e.g. 512, 640 or 1024")
        if self.warmup < 0:
            raise BenchError(f"--warmup {self.warmup} must be 0 or more")
        if self.iters < 1:
            raise BenchError(f"--iters {self.iters} must be at least 1")
        if not math.isfinite(self.settle) or self.settle < 0:
            raise BenchError(f"--settle {self.settle} must be 0 or more seconds")
        if self.max_images is not None and self.max_images < 1:
            raise BenchError(f"--max-images {self.max_images} must be at least 1")
        if not (self.device == "cpu" or self.device == "cuda" or _is_cuda_index(self.device)):
            raise BenchError(f"--device {self.device!r}: use cpu, cuda or cuda:N")
        if not Path(self.data).exists():
            raise BenchError(f"--data {self.data}: no such folder or manifest (a DOTA/HRSC2016 labelled folder or "
                             "a SynthRS manifest such as calibration/synthrs-val.toml)")
        if self.weights is not None and not Path(self.weights).is_file():
            raise BenchError(f"--weights {self.weights}: no such weights file (.safetensors)")
        if self.calib is not None and not Path(self.calib).is_file():
            raise BenchError(f"--calib {self.calib}: no such calibration manifest (see calibration/README.md)")
        return self

    def calibration(self) -> Path | None:
        """The calibration manifest INT8 exports use: ``--calib``, else the shipped one when it is found (from
        the working directory or the repository holding this package); None when there is none."""
        if self.calib:
            return Path(self.calib)
        if Path(DEFAULT_CALIB).is_file():
            return Path(DEFAULT_CALIB)
        shipped = Path(__file__).resolve().parents[2] / DEFAULT_CALIB
        return shipped if shipped.is_file() else None


def _is_cuda_index(device: str) -> bool:
    return device.startswith("cuda:") and device[5:].isdigit()


def _check_members(flag: str, values, allowed) -> None:
    if not values:
        raise BenchError(f"{flag} is empty; choose from {', '.join(allowed)}")
    unknown = [v for v in values if v not in allowed]
    if unknown:
        raise BenchError(f"{flag}: unknown {', '.join(map(repr, unknown))}; choose from {', '.join(allowed)}")


def parse_names(text: str, flag: str, aliases: dict | None = None) -> tuple[str, ...]:
    """``"torch, ort"`` -> ``("torch", "onnxruntime")`` (lower-cased, aliases resolved, order kept, no repeats)."""
    names = []
    for part in text.split(","):
        name = part.strip().lower()
        name = (aliases or {}).get(name, name)
        if name and name not in names:
            names.append(name)
    if not names:
        raise BenchError(f"{flag} {text!r} names nothing")
    return tuple(names)


def parse_batches(text: str) -> tuple[int, ...]:
    """``"1,4"`` -> ``(1, 4)``; sorted, no repeats; anything but positive integers is a :class:`BenchError`."""
    try:
        sizes = sorted({int(part) for part in text.split(",") if part.strip()})
    except ValueError:
        raise BenchError(f"--batch {text!r} is not a comma list of integers, e.g. 1,4") from None
    if not sizes or sizes[0] < 1:
        raise BenchError(f"--batch {text!r}: batch sizes must be at least 1, e.g. 1,4")
    return tuple(sizes)
