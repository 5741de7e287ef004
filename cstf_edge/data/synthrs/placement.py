"""Placing objects without overlaps, on the right surfaces, and measuring how much trees cover them."""
from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from cstf_edge.data.synthrs.materials import Material
from cstf_edge.data.synthrs.objects import make_object
from cstf_edge.data.synthrs.raster import fill_circle, fill_polygons
from cstf_edge.data.synthrs.scene import SceneObject
from cstf_edge.errors import DataError

log = logging.getLogger(__name__)

WATER_SURFACES = (Material.WATER, Material.WAKE)
# Where a class may be dropped when it must be added to reach a requested count.
FREE_SURFACES = {
    "ship": WATER_SURFACES,
    "plane": (Material.TARMAC, Material.CONCRETE, Material.GRASS, Material.SOIL, Material.SAND),
    "small-vehicle": (Material.ROAD, Material.TARMAC, Material.CONCRETE, Material.SOIL, Material.GRASS),
    "large-vehicle": (Material.ROAD, Material.TARMAC, Material.CONCRETE, Material.SOIL, Material.GRASS),
    "storage-tank": (Material.CONCRETE, Material.SOIL, Material.GRASS, Material.SAND, Material.FIELD_DRY),
}
MAX_TREE_OCCLUSION = 0.45


def surface_table(surfaces) -> np.ndarray:
    """A 256-entry boolean table, True for the materials in ``surfaces``."""
    table = np.zeros(256, bool)
    table[np.asarray(surfaces, np.int64)] = True
    return table


@dataclass
class _Footprint:
    x0: int
    y0: int
    mask: np.ndarray  # uint8 0/1
    area: int


def _footprint(poly: np.ndarray) -> _Footprint:
    x0, y0 = np.floor(poly.min(axis=0)).astype(int)
    x1, y1 = np.ceil(poly.max(axis=0)).astype(int) + 1
    mask = np.zeros((y1 - y0, x1 - x0), np.uint8)
    fill_polygons(mask, [poly - [x0, y0]], 1)
    return _Footprint(int(x0), int(y0), mask, int(np.count_nonzero(mask)))


class Placer:
    """Accepts objects that lie inside the image, overlap nothing placed before and stand on allowed
    surfaces; keeps the accepted ones in ``objects`` and their footprints for occlusion checks."""

    def __init__(self, size: int, materials: np.ndarray, margin: float = 1.0):
        self.size = size
        self.materials = materials
        self.margin = margin
        self.occupied = np.zeros((size, size), np.uint8)
        self.objects: list[SceneObject] = []
        self._footprints: list[_Footprint] = []
        self.trees: list[tuple[float, float, float]] = []

    def _window(self, grid: np.ndarray, fp: _Footprint) -> np.ndarray:
        h, w = fp.mask.shape
        return grid[fp.y0 : fp.y0 + h, fp.x0 : fp.x0 + w]

    def fits(self, obj: SceneObject, surfaces=None, min_surface: float = 0.85) -> _Footprint | None:
        poly = obj.polygon()
        if poly.min() < self.margin or poly.max() > self.size - 1 - self.margin:
            return None
        fp = _footprint(poly)
        if fp.area == 0 or np.count_nonzero(self._window(self.occupied, fp) & fp.mask):
            return None
        if surfaces is not None:
            on = surface_table(surfaces)[self._window(self.materials, fp)] & (fp.mask > 0)
            if np.count_nonzero(on) < min_surface * fp.area:
                return None
        return fp

    def add(self, obj: SceneObject, surfaces=None, min_surface: float = 0.85) -> bool:
        """Place ``obj`` if it fits; returns whether it was placed."""
        fp = self.fits(obj, surfaces, min_surface)
        if fp is None:
            return False
        self._window(self.occupied, fp)[...] |= fp.mask
        self.objects.append(obj)
        self._footprints.append(fp)
        return True

    def block(self, polygon: np.ndarray) -> None:
        """Mark a region (a building) as taken so no object is placed there."""
        fp = _footprint(np.clip(polygon, 0, self.size - 1))
        self._window(self.occupied, fp)[...] |= fp.mask

    def is_free(self, polygon: np.ndarray) -> bool:
        if polygon.min() < 0 or polygon.max() > self.size - 1:
            return False
        fp = _footprint(polygon)
        return not np.count_nonzero(self._window(self.occupied, fp) & fp.mask)

    def add_tree(self, x: float, y: float, radius: float) -> bool:
        """Add a tree crown unless it stands on a building or object, or would hide more than
        ``MAX_TREE_OCCLUSION`` of an object."""
        col, row = int(np.clip(x, 0, self.size - 1)), int(np.clip(y, 0, self.size - 1))
        if self.occupied[row, col]:
            return False
        updates = []
        for k, fp in enumerate(self._footprints):
            h, w = fp.mask.shape
            if x + radius < fp.x0 or x - radius > fp.x0 + w or y + radius < fp.y0 or y - radius > fp.y0 + h:
                continue
            crown = np.zeros_like(fp.mask)
            fill_circle(crown, x - fp.x0, y - fp.y0, radius, 1)
            covered = self.objects[k].occlusion + np.count_nonzero(crown & fp.mask) / fp.area
            if covered > MAX_TREE_OCCLUSION:
                return False
            updates.append((k, covered))
        for k, covered in updates:
            self.objects[k].occlusion = covered
        self.trees.append((x, y, radius))
        return True


def _random_on(rng: np.random.Generator, materials: np.ndarray, surfaces) -> tuple[float, float] | None:
    ys, xs = np.nonzero(surface_table(surfaces)[materials[::8, ::8]])
    if len(xs) == 0:
        return None
    k = int(rng.integers(len(xs)))
    return float(xs[k] * 8 + rng.uniform(0, 8)), float(ys[k] * 8 + rng.uniform(0, 8))


def place_free(rng: np.random.Generator, placer: Placer, cls: str, gsd: float, attempts: int = 400) -> None:
    """Add one ``cls`` object anywhere it fits, on its usual surfaces first, then anywhere."""
    for attempt in range(attempts):
        surfaces = FREE_SURFACES[cls] if attempt < attempts // 2 else None
        spot = _random_on(rng, placer.materials, surfaces) if surfaces else None
        if spot is None:
            spot = tuple(rng.uniform(0, placer.size, 2))
        obj = make_object(rng, cls, spot[0], spot[1], float(rng.uniform(-np.pi, np.pi)), gsd)
        if placer.add(obj, surfaces, min_surface=0.7):
            return
    raise DataError(
        f"SynthRS could not place another {cls!r} in a {placer.size} px scene after {attempts} tries "
        f"({len(placer.objects)} objects already there); ask for fewer objects or a larger --size"
    )


def enforce_counts(rng: np.random.Generator, placer: Placer, counts: dict[str, int], gsd: float) -> None:
    """Drop or add objects so that each class in ``counts`` appears exactly that many times."""
    keep = np.ones(len(placer.objects), bool)
    for cls, wanted in counts.items():
        idx = [k for k, o in enumerate(placer.objects) if o.cls == cls]
        if len(idx) > wanted:
            keep[rng.choice(idx, len(idx) - wanted, replace=False)] = False
    if not keep.all():
        placer.objects = [o for o, k in zip(placer.objects, keep) if k]
        placer._footprints = [f for f, k in zip(placer._footprints, keep) if k]
        placer.occupied[:] = 0
        for fp in placer._footprints:
            placer._window(placer.occupied, fp)[...] |= fp.mask
    for cls, wanted in counts.items():
        have = sum(o.cls == cls for o in placer.objects)
        for _ in range(wanted - have):
            place_free(rng, placer, cls, gsd)
