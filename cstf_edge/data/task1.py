"""DOTA Task1 result files: ``Task1_<class>.txt``, one detection a line: ``image_id score x1 y1 ... x4 y4``.

Reading keeps the file order of the lines: the official evaluator ranks detections with
``np.argsort(-scores)``, whose order among tied scores depends on it. Writing goes through
``cstf_edge._io`` (atomic), one file per class.
"""
from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cstf_edge._io import atomic_write_text
from cstf_edge.data.dota import parse_number
from cstf_edge.errors import DataError, LabelFormatError
from cstf_edge.geometry import as_polygons

log = logging.getLogger(__name__)

TASK1_PREFIX = "Task1_"
TASK1_SUFFIX = ".txt"
_TOKENS_PER_LINE = 10
# Whitespace other than separators (space, tab) and line ends (LF, a CR before it): fine on blank lines only.
_STRAY_WHITESPACE = re.compile(r"[^\S \t\r\n]")
_ASCII_STRAY_WHITESPACE = np.array([11, 12, 28, 29, 30, 31], dtype=np.uint8)
_WHITESPACE_LINE = re.compile(r"^[^\S\n]+$", re.MULTILINE)
# The fast number path reads the last 8 bytes of a token as one little-endian 64-bit word.
_WORD = 8
_FULL = 2**64 - 1
# By token length n: the mask keeping its n bytes of the word, and the word of a flag on its first byte.
_KEEP_LAST = np.array([_FULL ^ (2 ** (8 * (_WORD - n)) - 1) for n in range(_WORD + 1)], dtype=np.uint64)
_FIRST_OF = np.array([2 ** (8 * (_WORD - n)) if n else 0 for n in range(_WORD + 1)], dtype=np.uint64)
_POW10 = 10 ** np.arange(_WORD + 1, dtype=np.int64)
_SWAR_STEPS = ((8, 10, 0x00FF00FF00FF00FF), (16, 100, 0x0000FFFF0000FFFF), (32, 10000, 0xFFFFFFFF))


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
            [parse_number(token, "score or coordinate") for token in tokens[1:]]
        except ValueError as exc:
            return LabelFormatError(
                f"{exc}; 'image_id score x1 y1 ... x4 y4' wants finite plain numbers", str(path), number
            )
    return LabelFormatError("unreadable Task1 file", str(path))


def _token_bounds(buf: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Start and end byte offsets of every token (a run of bytes other than space, tab, CR and LF)."""
    separator = (buf == 32) | (buf == 9) | (buf == 13) | (buf == 10)
    edges = np.diff(np.concatenate(([True], separator, [True])).view(np.int8))
    return np.flatnonzero(edges == -1), np.flatnonzero(edges == 1)


def _stray_whitespace(text: str, buf: np.ndarray) -> bool:
    """Whitespace other than space, tab and line ends, or a CR that does not end its line."""
    if text.isascii():
        stray = np.isin(buf, _ASCII_STRAY_WHITESPACE).any()
    else:
        stray = _STRAY_WHITESPACE.search(text) is not None
    carriage = np.flatnonzero(buf[:-1] == 13)
    return bool(stray) or not np.all(buf[carriage + 1] == 10)


def _as_bytes(text: str) -> tuple[bytes, np.ndarray]:
    data = text.encode("utf-8", "surrogatepass")
    return data, np.frombuffer(data, np.uint8)


def _checked_bytes(text: str, path: Path) -> tuple[bytes, np.ndarray]:
    """The bytes of ``text``, blank lines holding stray whitespace emptied; stray whitespace on any
    other line is a ``LabelFormatError``."""
    data, buf = _as_bytes(text)
    if _stray_whitespace(text, buf):
        cleaned = _WHITESPACE_LINE.sub("", text)
        data, buf = _as_bytes(cleaned)
        if _stray_whitespace(cleaned, buf):
            raise _find_bad_line(path, text)
    return data, buf


def _ten_tokens_a_line(buf: np.ndarray, starts: np.ndarray) -> bool:
    """Every line holds 0 or 10 tokens."""
    newlines = np.flatnonzero(buf == 10)
    per_line = np.diff(np.concatenate(([0], np.searchsorted(starts, newlines), [len(starts)])))
    return bool(np.all((per_line == 0) | (per_line == _TOKENS_PER_LINE)))


def _last_bytes(data: bytes, starts: np.ndarray, ends: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The last 8 bytes of each token ``[T, 8]``, zeros before a shorter one, and the token lengths
    (9 for any longer one)."""
    padded = np.frombuffer(bytes(_WORD) + data, np.uint8)
    words = np.ndarray((len(data) + 1,), "<u8", padded, strides=(1,))[ends]  # word i: bytes i-8 .. i-1
    length = np.minimum(ends - starts, _WORD + 1)
    words &= _KEEP_LAST[np.minimum(length, _WORD)]
    return words.view(np.uint8).reshape(-1, _WORD), length


def _byte_sums(flags: np.ndarray) -> np.ndarray:
    """Row sums of a ``[T, 8]`` array of 0/1 bytes, by one multiplication per row."""
    return (flags.view("<u8").ravel() * np.uint64(0x0101010101010101)) >> np.uint64(56)


def _digits_value(digits: np.ndarray) -> np.ndarray:
    """The integers spelled by rows of 8 digit values ``[T, 8]``, first column most significant (SWAR:
    pairs of digits, then pairs of pairs, then of quadruples)."""
    word = np.ascontiguousarray(digits).view("<u8").ravel()
    for shift, scale, mask in _SWAR_STEPS:
        word = (word * np.uint64(scale) + (word >> np.uint64(shift))) & np.uint64(mask)
    return word.astype(np.int64)


def _plain_decimals(data: bytes, starts: np.ndarray, ends: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Values of the tokens that are plain decimals ``[-]digits[.digits]`` of at most 8 bytes, and
    the mask of those tokens (the others are left to ``float``).

    The digits make an integer below 10**8, exact, and ``integer / 10**fraction_digits`` is exactly
    ``float(token)``: IEEE division of exact operands rounds correctly (Clinger's fast path).
    """
    chars, length = _last_bytes(data, starts, ends)
    digits = chars - np.uint8(48)
    is_digit, is_dot = digits < 10, chars == 46
    num_digits, num_dots = _byte_sums(is_digit), _byte_sums(is_dot)
    negative = (chars == 45).view("<u8").ravel() == _FIRST_OF[np.minimum(length, _WORD)]  # first byte only
    plain = (length <= _WORD) & (num_digits > 0) & (num_dots <= 1)
    plain &= num_digits + num_dots + negative == length
    dotted = _digits_value(np.where(is_digit, digits, np.uint8(0)))  # the dot counted as a 0 digit
    fraction = np.where(num_dots > 0, _WORD - 1 - is_dot.argmax(axis=1), 0)
    scale = _POW10[fraction]
    integer = np.where(num_dots > 0, dotted // (10 * scale) * scale + dotted % scale, dotted)
    values = integer / scale.astype(np.float64)
    return np.where(negative, -values, values), plain


def _parse_numbers(data: bytes, starts: np.ndarray, ends: np.ndarray) -> np.ndarray | None:
    """``float`` of every token, or None if one is not a finite plain number (``parse_number``)."""
    values, plain = _plain_decimals(data, starts, ends)
    others = np.flatnonzero(~plain)
    try:
        values[others] = [
            parse_number(data[a:b].decode("utf-8", "surrogatepass"))
            for a, b in zip(starts[others].tolist(), ends[others].tolist())
        ]
    except ValueError:
        return None
    return values


def parse_task1_text(text: str, path: str | os.PathLike = "<text>") -> Task1Detections:
    """Parse the content of one Task1 file (blank lines are skipped; any other malformed line raises
    ``LabelFormatError`` naming ``path`` and the line number).

    Vectorised over the bytes of the whole text: tokens from the separators, 10 tokens a line checked
    at once, numbers through an exact fast path for plain decimals (``parse_number`` for any other
    token, which refuses ``nan``, ``inf`` and ``1_0`` as the label readers do).
    """
    path = Path(path)
    data, buf = _checked_bytes(text, path)
    starts, ends = _token_bounds(buf)
    if not _ten_tokens_a_line(buf, starts):
        raise _find_bad_line(path, text)
    starts, ends = starts.reshape(-1, _TOKENS_PER_LINE), ends.reshape(-1, _TOKENS_PER_LINE)
    numbers = _parse_numbers(data, starts[:, 1:].ravel(), ends[:, 1:].ravel())
    if numbers is None:
        raise _find_bad_line(path, text)
    ids = zip(starts[:, 0].tolist(), ends[:, 0].tolist())
    image_ids = [data[a:b].decode("utf-8", "surrogatepass") for a, b in ids]
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


def labels_as_detections(labels, score: float = 1.0) -> dict[str, Task1Detections]:
    """Every object of ``labels`` (an iterable of ``ImageLabels``) as a detection with ``score``, per
    class, in label order: to score one annotation of a data set against another, or against itself
    (which must give mAP 1.0)."""
    found: dict[str, tuple[list, list]] = {}
    for item in labels:
        for name, polygon in zip(item.classes, item.polygons):
            ids, polygons = found.setdefault(name, ([], []))
            ids.append(item.image_id)
            polygons.append(polygon)
    return {
        name: Task1Detections(ids, np.full(len(ids), score), np.asarray(polygons))
        for name, (ids, polygons) in sorted(found.items())
    }
