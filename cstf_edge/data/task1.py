"""DOTA Task1 result files: ``Task1_<class>.txt``, one detection a line: ``image_id score x1 y1 ... x4 y4``.

Reading keeps the file order of the lines: the official evaluator ranks detections with
``np.argsort(-scores)``, whose order among tied scores depends on it. Writing goes through
``cstf_edge._io`` (atomic), one file per class.
"""
from __future__ import annotations

import logging
import os
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cstf_edge._io import atomic_write_text
from cstf_edge.errors import DataError, LabelFormatError
from cstf_edge.geometry import as_polygons

log = logging.getLogger(__name__)

TASK1_PREFIX = "Task1_"
TASK1_SUFFIX = ".txt"
_TOKENS_PER_LINE = 10
_FIRST_TOKEN = re.compile(r"^[ \t]*(\S+)", re.MULTILINE)
_WELL_FORMED_LINE = re.compile(r"^[ \t]*\S+(?:[ \t]+\S+){9}[ \t]*\r?$", re.MULTILINE)


@dataclass
class Task1Detections:
    """The detections of one class, in file order: ``image_ids`` (list of N str), ``scores`` ``[N]``
    float64, ``polygons`` ``[N, 4, 2]`` float64."""

    image_ids: list[str]
    scores: np.ndarray
    polygons: np.ndarray

    def __post_init__(self) -> None:
        self.image_ids = list(self.image_ids)
        self.scores = np.asarray(self.scores, dtype=np.float64).reshape(-1)
        self.polygons = as_polygons(self.polygons).reshape(-1, 4, 2)
        if not len(self.image_ids) == len(self.scores) == len(self.polygons):
            raise ValueError(
                f"{len(self.image_ids)} image ids, {len(self.scores)} scores and "
                f"{len(self.polygons)} polygons; they must agree"
            )

    def __len__(self) -> int:
        return len(self.scores)

    @classmethod
    def empty(cls) -> "Task1Detections":
        return cls([], np.zeros(0), np.zeros((0, 4, 2)))


def task1_path(results_dir: str | os.PathLike, class_name: str) -> Path:
    """The Task1 file of ``class_name`` in ``results_dir``."""
    return Path(results_dir) / f"{TASK1_PREFIX}{class_name}{TASK1_SUFFIX}"


def _find_bad_line(path: Path, text: str) -> LabelFormatError:
    """The error for the first malformed line (the slow path, only taken when something is wrong)."""
    for number, line in enumerate(text.splitlines(), start=1):
        tokens = line.split()
        if not tokens:
            continue
        if len(tokens) != _TOKENS_PER_LINE:
            return LabelFormatError(
                f"expected 10 fields 'image_id score x1 y1 x2 y2 x3 y3 x4 y4', got {len(tokens)}",
                str(path), number,
            )
        try:
            [float(token) for token in tokens[1:]]
        except ValueError:
            return LabelFormatError(
                f"score and coordinates must be numbers, got {' '.join(tokens[1:])!r}", str(path), number
            )
    return LabelFormatError("unreadable Task1 file", str(path))


def parse_task1_text(text: str, path: str | os.PathLike = "<text>") -> Task1Detections:
    """Parse the content of one Task1 file (blank lines are skipped; any other malformed line raises
    ``LabelFormatError`` naming ``path`` and the line number)."""
    path = Path(path)
    image_ids = _FIRST_TOKEN.findall(text)
    if len(_WELL_FORMED_LINE.findall(text)) != len(image_ids):
        raise _find_bad_line(path, text)
    numbers_text = _FIRST_TOKEN.sub("", text)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            numbers = np.fromstring(numbers_text, sep=" ") if numbers_text.strip() else np.zeros(0)
    except (ValueError, DeprecationWarning):
        raise _find_bad_line(path, text) from None
    if numbers.size != 9 * len(image_ids):
        raise _find_bad_line(path, text)
    numbers = numbers.reshape(-1, 9)
    return Task1Detections(image_ids, numbers[:, 0], numbers[:, 1:].reshape(-1, 4, 2))


def read_task1_file(path: str | os.PathLike) -> Task1Detections:
    """Read one ``Task1_<class>.txt`` file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read this Task1 result file ({exc})") from exc
    return parse_task1_text(text, path)


def read_task1_dir(results_dir: str | os.PathLike, classes=None) -> dict[str, Task1Detections]:
    """Read every ``Task1_<class>.txt`` of ``results_dir`` into ``{class: Task1Detections}``.

    With ``classes``, only those are read, and a class without a file gets empty detections.
    """
    results_dir = Path(results_dir)
    if not results_dir.is_dir():
        raise DataError(f"{results_dir}: no such results directory (expected Task1_<class>.txt files)")
    found = {
        path.name[len(TASK1_PREFIX): -len(TASK1_SUFFIX)]: path
        for path in sorted(results_dir.glob(f"{TASK1_PREFIX}*{TASK1_SUFFIX}"))
    }
    if not found:
        log.warning("%s holds no Task1_<class>.txt file", results_dir)
    wanted = sorted(found) if classes is None else list(classes)
    return {
        name: read_task1_file(found[name]) if name in found else Task1Detections.empty()
        for name in wanted
    }


def format_task1_lines(detections: Task1Detections, decimals: int = 2) -> str:
    """The text of one Task1 file (``decimals`` digits for coordinates, 6 for scores)."""
    coords = detections.polygons.reshape(-1, 8)
    lines = [
        f"{image_id} {score:.6f} " + " ".join(f"{value:.{decimals}f}" for value in row)
        for image_id, score, row in zip(detections.image_ids, detections.scores, coords)
    ]
    return "".join(line + "\n" for line in lines)


def write_task1_dir(
    results_dir: str | os.PathLike, detections: dict[str, Task1Detections], decimals: int = 2
) -> list[Path]:
    """Write one ``Task1_<class>.txt`` per class (atomically); returns the paths written."""
    written = []
    for class_name, class_detections in detections.items():
        if not class_name or any(ch.isspace() or ch in "/\\" for ch in class_name):
            raise DataError(f"class name {class_name!r} cannot be part of a Task1 file name")
        path = task1_path(results_dir, class_name)
        written.append(atomic_write_text(path, format_task1_lines(class_detections, decimals)))
    return written
