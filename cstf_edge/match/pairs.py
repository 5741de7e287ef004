"""Readers of reference/query pair folders with ground-truth transforms, into one :class:`MatchPair`.

Every ``MatchPair.transform`` is a 3x3 matrix mapping a reference point to its query point,
``[xq, yq, 1]^T ~ H @ [xr, yr, 1]^T``, x = column, y = row, in OpenCV's convention: pixel centres at
integers, the top-left pixel's centre at (0, 0). The readers convert each source's convention to it:

* **SRIF** (``<Modality>/pairN_1.*``, ``pairN_2.*``, ``gt_N.txt``): ``gt_N.txt`` is a 2x3 affine mapping
  a point of ``pairN_1`` into ``pairN_2`` as the SRIF MATLAB demo (``demo_*.m``) applies it, on MATLAB's
  1-based pixel coordinates (top-left centre at (1, 1)). So ``pairN_1`` is the reference, ``pairN_2`` the
  query, and ``H_opencv = T(-1) @ H_srif @ T(+1)``. (The GT is only accurate to ~2 px, so the 1 px origin
  question is below its resolution; the 3 px tolerance of the authors absorbs it. Measured here on the
  scored modalities, pairs 1-8, SIFT + ORB ratio-test matches: 227 correct at origin 0, 209 at origin 1,
  so the files may well be 0-based; :func:`read_srif` takes ``origin`` to choose.) Pairs 9 and 10 of every
  modality are kept back from ``../shared/data``: the reader takes whatever pairs are present.
  Optical-SAR ground truth is known to be wrong (``../shared/data/SOURCES.md``): those pairs carry
  ``gt_known_wrong=True`` and are reported but not scored.
* **SynthRS** ``--pairs`` output (``synthrs.json``, ``pairs/{reference,query}/images``,
  ``pairs/transforms/<id>.txt``): H maps reference to query in continuous coordinates (pixel centre at
  (j + 0.5, i + 0.5)), so ``H_opencv = T(-0.5) @ H_synthrs @ T(+0.5)``. The modality is
  ``synthrs:<reference>-<query>`` from the manifest's ``pair_modalities``.
"""
from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cstf_edge.errors import DataError

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp")
SRIF_WRONG_GT = frozenset({"Optical-SAR"})
SRIF_ORIGIN = 1.0  # MATLAB's 1-based pixel centres, as the SRIF demo applies gt_N.txt
_SRIF_GT = re.compile(r"^gt_(\d+)\.txt$")


@dataclass(frozen=True)
class MatchPair:
    """One reference/query pair with its ground truth (3x3, reference -> query, OpenCV pixel centres)."""

    name: str
    modality: str
    reference: Path
    query: Path
    transform: np.ndarray
    gt_known_wrong: bool = False


def shift(d: float) -> np.ndarray:
    """The 3x3 translation by ``(d, d)``."""
    return np.array([[1.0, 0.0, d], [0.0, 1.0, d], [0.0, 0.0, 1.0]])


def change_origin(transform: np.ndarray, offset: float) -> np.ndarray:
    """``transform`` in a convention whose pixel-centre coordinates are ``offset`` more than OpenCV's,
    rewritten for OpenCV's: ``T(-offset) @ H @ T(+offset)``."""
    return shift(-offset) @ np.asarray(transform, dtype=np.float64) @ shift(offset)


def _read_matrix(path: Path, rows: int) -> np.ndarray:
    try:
        values = np.array(path.read_text(encoding="utf-8").split(), dtype=np.float64)
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: cannot read a {rows}x3 matrix ({exc})") from exc
    if values.size != rows * 3 or not np.isfinite(values).all():
        raise DataError(f"{path}: expected {rows * 3} finite numbers, found {values.size}")
    matrix = values.reshape(rows, 3)
    return matrix if rows == 3 else np.vstack([matrix, [0.0, 0.0, 1.0]])


def _find_image(folder: Path, stem: str) -> Path | None:
    for suffix in IMAGE_SUFFIXES:
        path = folder / f"{stem}{suffix}"
        if path.is_file():
            return path
    return None


def _srif_modality(folder: Path, origin: float) -> list[MatchPair]:
    pairs = []
    numbers = sorted(int(m.group(1)) for p in folder.iterdir() if (m := _SRIF_GT.match(p.name)))
    for n in numbers:
        reference, query = _find_image(folder, f"pair{n}_1"), _find_image(folder, f"pair{n}_2")
        if reference is None or query is None:
            log.warning("%s: gt_%d.txt without pair%d_1 and pair%d_2 images, skipped", folder, n, n, n)
            continue
        gt = change_origin(_read_matrix(folder / f"gt_{n}.txt", 2), origin)
        pairs.append(MatchPair(f"{folder.name}/pair{n}", folder.name, reference, query, gt,
                               folder.name in SRIF_WRONG_GT))
    return pairs


def read_srif(root: str | Path, origin: float = SRIF_ORIGIN) -> list[MatchPair]:
    """The SRIF pairs under ``root``: a modality folder itself or a folder of modality folders.
    ``origin``: the coordinate of the top-left pixel centre the gt files assume (1: MATLAB, 0: OpenCV)."""
    root = Path(root)
    if any(_SRIF_GT.match(p.name) for p in root.iterdir()):
        return _srif_modality(root, origin)
    pairs = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        if any(_SRIF_GT.match(p.name) for p in folder.iterdir()):
            pairs.extend(_srif_modality(folder, origin))
    return pairs


def read_synthrs(root: str | Path) -> list[MatchPair]:
    """The pairs of a SynthRS data set written with ``cstf-edge synth ... --pairs N``."""
    root = Path(root)
    try:
        manifest = json.loads((root / "synthrs.json").read_text(encoding="utf-8"))
        modality = "synthrs:" + "-".join(manifest["pair_modalities"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DataError(f"{root}: not a SynthRS pair set (synthrs.json: {exc})") from exc
    pairs = []
    for path in sorted((root / "pairs" / "transforms").glob("*.txt")):
        reference = _find_image(root / "pairs" / "reference" / "images", path.stem)
        query = _find_image(root / "pairs" / "query" / "images", path.stem)
        if reference is None or query is None:
            raise DataError(f"{path}: the reference or query image of pair {path.stem} is missing")
        pairs.append(MatchPair(path.stem, modality, reference, query, change_origin(_read_matrix(path, 3), 0.5)))
    return pairs


def read_pairs(root: str | Path) -> list[MatchPair]:
    """The pairs of ``root``, SynthRS (has ``synthrs.json``) or SRIF layout; :class:`DataError` naming the
    folder when it is neither or holds no pair."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: not a folder of image pairs")
    pairs = read_synthrs(root) if (root / "synthrs.json").is_file() else read_srif(root)
    if not pairs:
        raise DataError(f"{root}: no image pairs with ground truth found (expected the SRIF layout "
                        "<Modality>/pairN_1.jpg, pairN_2.jpg, gt_N.txt or a SynthRS set made with --pairs)")
    return pairs
