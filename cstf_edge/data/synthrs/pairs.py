"""Reference/query pairs for matching: two acquisitions (possibly two modalities) of one scene, the
query warped by a known random similarity transform.

Direction: ``transform`` is a 3x3 matrix ``H`` mapping reference pixel coordinates to query pixel
coordinates, ``[xq, yq, 1]^T ~ H @ [xr, yr, 1]^T``, in the project's continuous convention
(``cstf_edge.geometry.boxes``: x = column, y = row, pixel (i, j) covers ``[j, j+1) x [i, i+1)`` and its
centre is ``(j + 0.5, i + 0.5)``), the convention of the labels. OpenCV's warps put pixel centres at
integers: with ``T(d)`` the translation by ``(d, d)``, a continuous point is an OpenCV point plus 0.5, so
the OpenCV matrix is ``T(-0.5) @ H @ T(+0.5)``: ``cv2.warpPerspective(reference, T(-0.5) @ H @ T(0.5),
size)`` gives the query's geometry. ``H`` is a similarity here, so :func:`warp_image` applies it with
``cv2.warpAffine`` through :func:`cstf_edge.data.augment.pixel_index_matrix`, which is that product.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from cstf_edge.data.annotations import ImageLabels
from cstf_edge.data.augment import pixel_index_matrix
from cstf_edge.data.synthrs.compose import ClassRequest, make_scene
from cstf_edge.data.synthrs.render import render
from cstf_edge.data.synthrs.scene import Scene
from cstf_edge.geometry import poly_to_rbox, rbox_to_poly

# Pair scenes use indices from here on, so they never repeat a scene of the main data set.
PAIR_INDEX_BASE = 10_000_000
ROTATION_RANGE = (-np.pi, np.pi)
SCALE_RANGE = (0.75, 1.33)
SHIFT_FRACTION = 0.1


@dataclass
class Pair:
    pair_id: str
    reference: np.ndarray
    query: np.ndarray
    transform: np.ndarray  # 3x3, reference pixel -> query pixel (continuous coordinates)
    reference_labels: ImageLabels
    query_labels: ImageLabels
    modalities: tuple[str, str]


def random_similarity(rng: np.random.Generator, size: int) -> np.ndarray:
    """A 3x3 similarity (rotation, scale, translation) about the image centre, ref -> query, in
    continuous pixel coordinates (the centre of a ``size`` image is ``size / 2``)."""
    angle = float(rng.uniform(*ROTATION_RANGE))
    scale = float(np.exp(rng.uniform(np.log(SCALE_RANGE[0]), np.log(SCALE_RANGE[1]))))
    shift = rng.uniform(-SHIFT_FRACTION, SHIFT_FRACTION, 2) * size
    centre = size / 2.0
    cos, sin = scale * np.cos(angle), scale * np.sin(angle)
    linear = np.array([[cos, -sin], [sin, cos]])
    offset = np.array([centre, centre]) + shift - linear @ [centre, centre]
    return np.vstack([np.hstack([linear, offset[:, None]]), [0.0, 0.0, 1.0]])


def warp_image(image: np.ndarray, transform: np.ndarray, size: int) -> np.ndarray:
    """``image`` resampled onto a ``size`` x ``size`` image through the affine ``transform`` (3x3,
    continuous coordinates, source -> destination); uncovered pixels are 0."""
    return cv2.warpAffine(image, pixel_index_matrix(transform), (size, size), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=0)


def warp_labels(labels: ImageLabels, transform: np.ndarray, size: int, image_id: str) -> ImageLabels:
    """Labels moved by ``transform``; objects not wholly inside the ``size`` image are dropped."""
    if len(labels) == 0:
        return ImageLabels.empty(image_id)
    points = cv2.perspectiveTransform(labels.polygons.reshape(1, -1, 2), transform).reshape(-1, 4, 2)
    polygons = rbox_to_poly(poly_to_rbox(points))  # back to the project's corner order
    inside = ((polygons >= 0) & (polygons <= size)).all(axis=(1, 2))
    classes = [c for c, keep in zip(labels.classes, inside) if keep]
    return ImageLabels(image_id, polygons[inside], classes, labels.difficult[inside], meta=dict(labels.meta))


def pair_from_scene(scene: Scene, modalities: tuple[str, str]) -> Pair:
    """The pair of ``scene``: reference = ``modalities[0]`` as rendered, query = another acquisition in
    ``modalities[1]`` warped by a random similarity (seeded by the scene)."""
    rng = np.random.default_rng([scene.seed, scene.index, 99])
    transform = random_similarity(rng, scene.size)
    reference = render(scene, modalities[0], variant=0)
    query = warp_image(render(scene, modalities[1], variant=1), transform, scene.size)
    labels = scene.labels()
    return Pair(scene.image_id, reference, query, transform, labels,
                warp_labels(labels, transform, scene.size, scene.image_id), tuple(modalities))


def make_pair(seed: int, index: int, size: int = 1024, classes: ClassRequest = None,
              modalities: tuple[str, str] = ("optical", "sar")) -> Pair:
    """Pair ``index`` of the data set ``seed`` (its scene is ``PAIR_INDEX_BASE + index``)."""
    return pair_from_scene(make_scene(seed, PAIR_INDEX_BASE + index, size, classes), modalities)


def format_transform(transform: np.ndarray) -> str:
    """The 3x3 matrix as three lines of full-precision numbers."""
    return "".join(" ".join(repr(float(v)) for v in row) + "\n" for row in np.asarray(transform))
