"""The scene description: what is where, independent of how a sensor sees it.

A :class:`Scene` is plain data (background layers, trees, buildings, objects with their oriented boxes,
lighting and sensor conditions). :func:`cstf_edge.data.synthrs.render.render` turns it into an image of
one modality, so every modality shows the same objects at the same pixels.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from cstf_edge.data.annotations import ImageLabels
from cstf_edge.data.synthrs.materials import Material
from cstf_edge.data.synthrs.raster import draw_polyline, fill_polygons
from cstf_edge.geometry import canonicalize_rboxes, rbox_to_poly
from cstf_edge.geometry.boxes import box_frame_to_image

SCENE_KINDS: tuple[str, ...] = ("sea", "coast", "land", "airfield")
# An object whose footprint is covered more than this by trees is flagged difficult.
DIFFICULT_OCCLUSION = 0.25


@dataclass
class Layer:
    """A background region: a filled polygon (``thickness == 0``) or a polyline of that width, in pixels."""

    material: Material
    points: np.ndarray  # [K, 2] float pixel coordinates
    thickness: float = 0.0


@dataclass
class Building:
    """A flat-roofed building: its roof polygon and height in pixels (for its shadow)."""

    polygon: np.ndarray
    height_px: float
    material: Material = Material.ROOF


@dataclass
class SceneObject:
    """One labelled object. ``heading`` points from its back to its front (radians, image axes);
    ``length`` runs along the heading and ``width`` across it, both in pixels."""

    cls: str
    cx: float
    cy: float
    length: float
    width: float
    heading: float
    colour: tuple[float, float, float]
    accent: tuple[float, float, float]
    variant: int = 0
    height_px: float = 1.0
    moving: bool = False
    occlusion: float = 0.0

    def rbox(self) -> np.ndarray:
        """The canonical oriented box ``(cx, cy, w, h, angle)`` (a storage tank's is its circle's square)."""
        return canonicalize_rboxes([self.cx, self.cy, self.length, self.width, self.heading])

    def polygon(self) -> np.ndarray:
        """The box corners ``[4, 2]`` in the project's convention."""
        return rbox_to_poly(self.rbox())

    def to_image(self, uv: np.ndarray) -> np.ndarray:
        """Map points of the object's unit frame (u along the heading, v across, both in [-0.5, 0.5])."""
        return box_frame_to_image([self.cx, self.cy, self.length, self.width, self.heading], uv)


@dataclass
class Conditions:
    """Illumination and sensor conditions of one rendering."""

    gain: float = 1.0
    gradient: tuple[float, float] = (0.0, 0.0)
    haze: float = 0.0
    noise_sigma: float = 2.0
    blur_sigma: float = 0.6
    jpeg_quality: int | None = None
    colour_jitter: tuple[float, float, float] = (1.0, 1.0, 1.0)

    @classmethod
    def draw(cls, rng: np.random.Generator) -> "Conditions":
        """Random conditions of one acquisition: light, haze, noise, blur, JPEG, colour balance."""
        return cls(
            gain=float(rng.uniform(0.8, 1.15)),
            gradient=tuple(float(g) for g in rng.uniform(-0.08, 0.08, 2)),
            haze=float(rng.uniform(0.0, 0.3)) if rng.random() < 0.4 else 0.0,
            noise_sigma=float(rng.uniform(1.0, 4.0)),
            blur_sigma=float(rng.uniform(0.4, 0.9)),
            jpeg_quality=int(rng.integers(55, 95)) if rng.random() < 0.5 else None,
            colour_jitter=tuple(float(c) for c in rng.uniform(0.95, 1.05, 3)),
        )


@dataclass
class Scene:
    """Everything needed to render and label one synthetic scene."""

    seed: int
    index: int
    size: int
    kind: str
    gsd: float  # metres per pixel
    base: Material
    layers: list[Layer] = field(default_factory=list)
    trees: np.ndarray = field(default_factory=lambda: np.zeros((0, 3)))  # [N, 3] x, y, radius
    buildings: list[Building] = field(default_factory=list)
    objects: list[SceneObject] = field(default_factory=list)
    shadow_vector: tuple[float, float] = (1.0, 0.5)  # shadow offset in px per px of height
    conditions: Conditions = field(default_factory=Conditions)

    @property
    def image_id(self) -> str:
        return f"synthrs_{self.seed}_{self.index:06d}"

    def material_map(self) -> np.ndarray:
        """The ``[size, size]`` uint8 map of background materials (layers drawn in order)."""
        canvas = np.full((self.size, self.size), int(self.base), np.uint8)
        for layer in self.layers:
            draw_layer(canvas, layer, int(layer.material))
        return canvas

    def labels(self) -> ImageLabels:
        """The oriented-box labels; objects covered more than ``DIFFICULT_OCCLUSION`` are difficult."""
        if not self.objects:
            return ImageLabels.empty(self.image_id)
        polygons = np.stack([obj.polygon() for obj in self.objects])
        difficult = [int(obj.occlusion > DIFFICULT_OCCLUSION) for obj in self.objects]
        meta = {"imagesource": "SynthRS", "gsd": f"{self.gsd:.3f}"}
        return ImageLabels(self.image_id, polygons, [o.cls for o in self.objects], difficult, meta=meta)

    def class_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for obj in self.objects:
            counts[obj.cls] = counts.get(obj.cls, 0) + 1
        return counts


def draw_layer(canvas: np.ndarray, layer: Layer, value, line_type: int = cv2.LINE_8) -> None:
    """Draw a layer's polygon or polyline onto ``canvas`` with ``value``."""
    if layer.thickness > 0:
        draw_polyline(canvas, layer.points, value, layer.thickness, line_type=line_type)
    else:
        fill_polygons(canvas, [layer.points], value, line_type)
