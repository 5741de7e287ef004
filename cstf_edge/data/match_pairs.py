"""Self-supervised matching pairs with exact ground truth, made on the fly from single scenes.

A *source* is one place seen in one or more modalities (SynthRS renders a scene as optical, SAR and
infrared; an arbitrary image is a source with one modality). :func:`sample_pair` draws two modalities
(possibly the same), crops the reference, warps the query by a random affine transform (rotation of any
angle, scale ratio 0.5-2 (half of the pairs within 0.8-1.25), shear, translation), applies a random modality change to each
(``cstf_edge.data.modality``), and returns the 3x3 reference -> query transform in continuous pixel
coordinates plus the query's mask of pixels that saw the source. :func:`canonical_pair` then turns the
query by the quarter turns the matcher's rotation search would find (``cstf_edge.match.rot90``).
"""
from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from cstf_edge._io import read_image
from cstf_edge.data.augment import pixel_index_matrix
from cstf_edge.data.modality import random_change, to_bgr
from cstf_edge.errors import DataError
from cstf_edge.match.rot90 import quarter_turns, rot90_matrix, rotate90

log = logging.getLogger(__name__)

SCALE_RATIO = (0.5, 2.0)
NEAR_SCALE_RATIO = (0.8, 1.25)  # half the pairs: the matcher letterboxes both images, so most real pairs
WIDE_SCALE_SHARE = 0.5  # are near one scale; the other half spans the whole SCALE_RATIO
SHEAR = 0.15
CROP_FRACTION = (0.5, 1.0)  # reference crop side / source side
SYNTHRS_MODALITIES = ("optical", "sar", "infrared")


@dataclass
class TrainingPair:
    reference: np.ndarray  # uint8 S x S x 3 BGR
    query: np.ndarray  # uint8 S x S x 3 BGR
    transform: np.ndarray  # 3x3 reference -> query, continuous pixel coordinates
    query_mask: np.ndarray  # uint8 S x S, 1 where the query saw the source


def _similarity(scale: float, angle: float, shear: float, centre_from, centre_to) -> np.ndarray:
    cos, sin = np.cos(angle), np.sin(angle)
    linear = scale * np.array([[cos, -sin], [sin, cos]]) @ np.array([[1.0, shear], [0.0, 1.0]])
    offset = np.asarray(centre_to, np.float64) - linear @ np.asarray(centre_from, np.float64)
    return np.vstack([np.hstack([linear, offset[:, None]]), [0.0, 0.0, 1.0]])


def _warp(image: np.ndarray, matrix: np.ndarray, size: int, nearest: bool = False) -> np.ndarray:
    flags = cv2.INTER_NEAREST if nearest else cv2.INTER_LINEAR
    return cv2.warpAffine(image, pixel_index_matrix(matrix), (size, size), flags=flags,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=0)


def sample_pair(source: dict[str, np.ndarray], rng: np.random.Generator, size: int = 320,
                change_strength: float = 1.0, difficulty: float = 1.0) -> TrainingPair:
    """A random reference/query pair of ``size x size`` from one ``source`` ({modality: BGR image}).

    ``difficulty`` in [0, 1] (a training curriculum): the rotation is a random number of quarter turns
    plus up to +-45 degrees times ``max(1/3, difficulty)``; the share of wide scale ratios, the shear and
    the modality-change strength grow with it (0.3 + 0.7 x difficulty of ``change_strength``)."""
    names = sorted(source)
    ref_mod, qry_mod = rng.choice(names), rng.choice(names)
    src_h, src_w = source[ref_mod].shape[:2]
    side = min(src_h, src_w) * rng.uniform(*CROP_FRACTION)
    centre = np.array([rng.uniform(side / 2, src_w - side / 2), rng.uniform(side / 2, src_h - side / 2)])
    to_ref = _similarity(size / side, 0.0, 0.0, centre, (size / 2, size / 2))
    ratio_range = SCALE_RATIO if rng.random() < WIDE_SCALE_SHARE * difficulty else NEAR_SCALE_RATIO
    ratio = float(np.exp(rng.uniform(np.log(ratio_range[0]), np.log(ratio_range[1]))))
    q_centre = centre + rng.uniform(-0.15, 0.15, 2) * side
    angle = rng.integers(4) * np.pi / 2 + rng.uniform(-1.0, 1.0) * np.pi / 4 * max(1 / 3, difficulty)
    to_query = _similarity(size / side * ratio, angle, rng.uniform(-SHEAR, SHEAR) * difficulty,
                           q_centre, (size / 2, size / 2))
    strength = change_strength * (0.3 + 0.7 * difficulty)
    reference = random_change(_warp(to_bgr(source[ref_mod]), to_ref, size), rng, 0.5 * strength)
    query = random_change(_warp(to_bgr(source[qry_mod]), to_query, size), rng, strength)
    mask = _warp(np.ones((src_h, src_w), np.uint8), to_query, size, nearest=True)
    return TrainingPair(reference, query, to_query @ np.linalg.inv(to_ref), mask)


def canonical_pair(pair: TrainingPair) -> TrainingPair:
    """``pair`` with its query turned by the quarter turns that leave at most +-45 degrees of rotation."""
    k = quarter_turns(pair.transform)
    if k == 0:
        return pair
    h, w = pair.query.shape[:2]
    turn = rot90_matrix(k, w, h)
    return TrainingPair(pair.reference, rotate90(pair.query, k), turn @ pair.transform,
                        rotate90(pair.query_mask, k))


def _pool_path(cache: Path, seed: int, count: int, size: int) -> Path:
    return cache / f"match-pool-synthrs-seed{seed}-n{count}-{size}.npz"


def synthrs_sources(seed: int, count: int, size: int = 512, cache: Path | None = None,
                    progress: bool = True) -> list[dict[str, np.ndarray]]:
    """``count`` SynthRS scenes of data set ``seed``, each rendered in every modality (cached as .npz)."""
    from cstf_edge.data.synthrs.compose import make_scene
    from cstf_edge.data.synthrs.render import render

    path = None if cache is None else _pool_path(cache, seed, count, size)
    if path is not None and path.is_file():
        with np.load(path) as data:
            return [{m: data[f"{m}_{i}"] for m in SYNTHRS_MODALITIES} for i in range(count)]
    sources = []
    for index in tqdm(range(count), desc="rendering SynthRS scenes", disable=not progress):
        scene = make_scene(seed, index, size)
        sources.append({m: to_bgr(render(scene, m, variant=0)) for m in SYNTHRS_MODALITIES})
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp.npz")
        np.savez(tmp, **{f"{m}_{i}": s[m] for i, s in enumerate(sources) for m in SYNTHRS_MODALITIES})
        tmp.replace(path)
    return sources


def image_sources(folder: str | Path, size: int = 512) -> list[dict[str, np.ndarray]]:
    """Every readable image of ``folder`` (resized to fit ``size``) as a one-modality source."""
    folder = Path(folder)
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg", ".tif", ".bmp"))
    sources = []
    for path in files:
        try:
            image = read_image(path)
        except DataError as exc:
            log.warning("%s, skipped", exc)
            continue
        scale = size / max(image.shape[:2])
        sources.append({"image": cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)})
    if not sources:
        raise DataError(f"{folder}: no readable images (.png, .jpg, .tif, .bmp) to make pairs from")
    return sources


def sources_digest(sources: list[dict[str, np.ndarray]]) -> str:
    """A short hash of the training sources (recorded in the weights' metadata)."""
    digest = hashlib.sha256()
    for source in sources:
        for name in sorted(source):
            digest.update(name.encode())
            digest.update(np.ascontiguousarray(source[name][::7, ::7]).tobytes())
    return digest.hexdigest()[:16]
