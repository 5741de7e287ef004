"""Object models: real-world sizes of each class and the parts (polygons in the object's unit frame,
u along the heading and v across, both spanning exactly [-0.5, 0.5] so labels are tight)."""
from __future__ import annotations

from functools import lru_cache

import numpy as np

from cstf_edge.data.synthrs.materials import (
    AIRCRAFT_COLOURS,
    DECK_COLOURS,
    HULL_COLOURS,
    LARGE_VEHICLE_COLOURS,
    TANK_COLOURS,
    VEHICLE_COLOURS,
    Role,
)
from cstf_edge.data.synthrs.scene import SceneObject

Part = tuple[Role, np.ndarray]

# (length range m, width/length range, height m) per class; storage tanks: diameter range.
SIZES_M = {
    "small-vehicle": ((3.8, 5.2), (0.38, 0.46), 1.5),
    "large-vehicle": ((8.0, 18.0), (0.14, 0.30), 3.5),
    "ship": ((12.0, 110.0), (0.14, 0.24), 6.0),
    "plane": ((14.0, 60.0), (0.9, 1.15), 4.0),
    "storage-tank": ((10.0, 36.0), (1.0, 1.0), 12.0),
}
SHIP_BOAT, SHIP_CARGO, SHIP_TANKER, SHIP_GREY = range(4)


def _rect(u0: float, u1: float, v0: float, v1: float) -> np.ndarray:
    return np.array([[u0, v0], [u1, v0], [u1, v1], [u0, v1]], np.float64)


@lru_cache(maxsize=4)
def _circle(radius: float, points: int = 36) -> np.ndarray:
    t = np.linspace(0, 2 * np.pi, points, endpoint=False)
    return np.stack([radius * np.cos(t), radius * np.sin(t)], axis=1)


_CAR_BODY = np.array([[-0.5, -0.36], [-0.45, -0.5], [0.42, -0.5], [0.5, -0.32],
                      [0.5, 0.32], [0.42, 0.5], [-0.45, 0.5], [-0.5, 0.36]])
_HULL = np.array([[-0.5, -0.42], [-0.46, -0.5], [0.22, -0.5], [0.36, -0.44], [0.45, -0.28],
                  [0.5, 0.0], [0.45, 0.28], [0.36, 0.44], [0.22, 0.5], [-0.46, 0.5], [-0.5, 0.42]])


def _car_parts(obj: SceneObject) -> list[Part]:
    return [
        (Role.PAINT, _CAR_BODY),
        (Role.GLASS, np.array([[0.08, -0.4], [0.3, -0.44], [0.3, 0.44], [0.08, 0.4]])),
        (Role.PAINT_DARK, _rect(-0.26, 0.08, -0.36, 0.36)),
        (Role.GLASS, _rect(-0.38, -0.27, -0.38, 0.38)),
    ]


def _large_vehicle_parts(obj: SceneObject) -> list[Part]:
    if obj.variant == 0:  # bus
        return [(Role.PAINT, _CAR_BODY), (Role.PAINT_DARK, _rect(-0.1, 0.1, -0.3, 0.3)),
                (Role.GLASS, _rect(0.44, 0.49, -0.42, 0.42))]
    cab_start = 0.5 - min(0.3, 0.9 * obj.width / obj.length)  # a cab about as long as the truck is wide
    return [(Role.PAINT, _rect(cab_start, 0.5, -0.46, 0.46)), (Role.GLASS, _rect(cab_start + 0.02, cab_start + 0.07, -0.4, 0.4)),
            (Role.ACCENT, _rect(-0.5, cab_start - 0.03, -0.5, 0.5))]


def _ship_parts(obj: SceneObject) -> list[Part]:
    parts: list[Part] = [(Role.PAINT, _HULL), (Role.DECK, _HULL * [0.9, 0.78] - [0.02, 0.0])]
    if obj.variant == SHIP_BOAT:
        parts += [(Role.SUPERSTRUCTURE, _rect(-0.22, 0.12, -0.32, 0.32)), (Role.GLASS, _rect(0.08, 0.14, -0.28, 0.28))]
    elif obj.variant == SHIP_CARGO:
        parts.append((Role.SUPERSTRUCTURE, _rect(-0.44, -0.3, -0.4, 0.4)))
        for k, u0 in enumerate(np.arange(-0.26, 0.26, 0.07)):
            parts.append((Role.ACCENT if k % 2 else Role.PAINT_DARK, _rect(u0, u0 + 0.06, -0.34, 0.34)))
    elif obj.variant == SHIP_TANKER:
        parts += [(Role.SUPERSTRUCTURE, _rect(-0.45, -0.33, -0.38, 0.38)), (Role.ENGINE, _rect(-0.3, 0.3, -0.03, 0.03)),
                  (Role.HOT, _rect(-0.43, -0.38, -0.08, 0.08))]
    else:
        parts += [(Role.SUPERSTRUCTURE, _rect(-0.2, 0.14, -0.28, 0.28)), (Role.ENGINE, _rect(0.2, 0.3, -0.12, 0.12)),
                  (Role.HOT, _rect(-0.12, -0.04, -0.1, 0.1))]
    return parts


def _plane_parts(obj: SceneObject) -> list[Part]:
    fuselage = 0.09 * obj.length / obj.width / 2  # half width in v units
    nose, tail = fuselage * 0.5, fuselage * 0.35
    body = np.array([[-0.5, -tail], [-0.32, -fuselage], [0.36, -fuselage], [0.46, -nose], [0.5, 0.0],
                     [0.46, nose], [0.36, fuselage], [-0.32, fuselage], [-0.5, tail]])
    lead, sweep, chord = 0.14, 0.22, 0.07
    wing = np.array([[lead, fuselage], [lead - sweep, 0.5], [lead - sweep - chord, 0.5], [lead - 0.24, fuselage]])
    stab = np.array([[-0.36, fuselage * 0.8], [-0.45, 0.17], [-0.49, 0.17], [-0.47, fuselage * 0.8]])
    flip = np.array([1.0, -1.0])
    parts: list[Part] = [(Role.PAINT, wing), (Role.PAINT, wing * flip), (Role.PAINT, stab),
                         (Role.PAINT, stab * flip)]
    engine_v = (0.18, 0.32) if obj.variant == 1 else (0.2,)
    for v in engine_v:
        u = lead - sweep * (v / 0.5) + 0.05
        for sign in (1.0, -1.0):
            parts.append((Role.ENGINE, _rect(u - 0.08, u, sign * v - 0.025, sign * v + 0.025)))
    parts.append((Role.PAINT, body))
    parts.append((Role.PAINT_DARK, _rect(0.38, 0.42, -fuselage * 0.6, fuselage * 0.6)))
    return parts


def _tank_parts(obj: SceneObject) -> list[Part]:
    if obj.variant == 0:  # fixed cone roof with a vent
        return [(Role.TANK_ROOF, _circle(0.5)), (Role.TANK_INNER, _circle(0.06))]
    return [(Role.TANK_ROOF, _circle(0.5)), (Role.TANK_INNER, _circle(0.44)), (Role.PAINT_DARK, _circle(0.08) + [0.1, 0])]


_PARTS = {
    "small-vehicle": _car_parts,
    "large-vehicle": _large_vehicle_parts,
    "ship": _ship_parts,
    "plane": _plane_parts,
    "storage-tank": _tank_parts,
}


def object_parts(obj: SceneObject) -> list[tuple[Role, np.ndarray]]:
    """The parts of ``obj`` as (role, polygon in image pixels), drawn in order (one mapping for all)."""
    parts = _PARTS[obj.cls](obj)
    image = obj.to_image(np.concatenate([uv for _, uv in parts]))
    ends = np.cumsum([len(uv) for _, uv in parts])
    return [(role, image[end - len(uv) : end]) for (role, uv), end in zip(parts, ends)]


def _pick(rng: np.random.Generator, palette: np.ndarray) -> tuple[float, float, float]:
    which, shade = rng.random(2)
    colour = palette[int(which * len(palette))] * (0.9 + 0.18 * shade)
    return tuple(min(float(c), 255.0) for c in colour)


def make_object(rng: np.random.Generator, cls: str, cx: float, cy: float, heading: float, gsd: float,
                length_m: float | None = None, variant: int | None = None) -> SceneObject:
    """A new object of class ``cls`` with a random size for a ground sample distance ``gsd`` (m/px)."""
    (lo, hi), (r0, r1), height = SIZES_M[cls]
    length_m = float(rng.uniform(lo, hi)) if length_m is None else length_m
    width_m = length_m * float(rng.uniform(r0, r1))
    if cls == "small-vehicle":
        colour, accent, n_var = _pick(rng, VEHICLE_COLOURS), _pick(rng, VEHICLE_COLOURS), 1
    elif cls == "large-vehicle":
        colour, accent, n_var = _pick(rng, LARGE_VEHICLE_COLOURS), _pick(rng, LARGE_VEHICLE_COLOURS), 2
        width_m = float(rng.uniform(2.4, 2.7))
    elif cls == "ship":
        colour, accent, n_var = _pick(rng, HULL_COLOURS), _pick(rng, DECK_COLOURS), 4
    elif cls == "plane":
        colour, accent, n_var = _pick(rng, AIRCRAFT_COLOURS), _pick(rng, AIRCRAFT_COLOURS), 2
    else:
        colour, accent, n_var = _pick(rng, TANK_COLOURS), _pick(rng, TANK_COLOURS), 2
        width_m, heading = length_m, 0.0
    if variant is None:
        variant = int(rng.integers(n_var))
        if cls == "ship":
            variant = SHIP_BOAT if length_m < 35 else int(rng.integers(1, 4))
    return SceneObject(cls, cx, cy, length_m / gsd, width_m / gsd, heading, colour, accent, variant,
                       height_px=height / gsd * (length_m / hi if cls in ("ship", "storage-tank") else 1.0))
