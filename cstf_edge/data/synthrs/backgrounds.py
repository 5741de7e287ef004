"""Background layouts: the layers (water, land, fields, roads, lots, runways, piers) of each scene kind,
and the sites (rotated rectangles) where objects are then arranged."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from cstf_edge.data.synthrs.materials import Material
from cstf_edge.data.synthrs.noise import smooth_field
from cstf_edge.data.synthrs.scene import Layer
from cstf_edge.geometry import rbox_to_poly
from cstf_edge.geometry.boxes import box_frame_to_image

FIELD_MATERIALS = (Material.FIELD_GREEN, Material.FIELD_DRY, Material.FIELD_BROWN, Material.SOIL, Material.GRASS)


@dataclass
class Site:
    """A rotated rectangle: centre, extent ``length`` along ``angle`` (u) and ``width`` across it (v)."""

    cx: float
    cy: float
    length: float
    width: float
    angle: float

    def point(self, u: float, v: float) -> tuple[float, float]:
        """The image point at offsets (u, v) pixels from the centre, in the site's frame (the unit frame of
        a 1 x 1 box with the site's centre and angle)."""
        x, y = box_frame_to_image([self.cx, self.cy, 1.0, 1.0, self.angle], [u, v]).reshape(2)
        return float(x), float(y)

    def polygon(self) -> np.ndarray:
        return rbox_to_poly([self.cx, self.cy, self.length, self.width, self.angle])

    def layer(self, material: Material) -> Layer:
        return Layer(material, self.polygon())

    def sub(self, u: float, v: float, length: float, width: float) -> "Site":
        """A site inside this one, centred at (u, v) of this frame, with the same orientation."""
        cx, cy = self.point(u, v)
        return Site(cx, cy, length, width, self.angle)


@dataclass
class Sites:
    roads: list[Site] = field(default_factory=list)
    lots: list[tuple[Site, str]] = field(default_factory=list)  # (lot, "small" or "large")
    piers: list[tuple[Site, bool]] = field(default_factory=list)  # (pier pointing into water, is_marina)
    pads: list[Site] = field(default_factory=list)  # tank farm pads
    aprons: list[Site] = field(default_factory=list)
    runways: list[Site] = field(default_factory=list)
    open_water: Site | None = None


def _road(rng: np.random.Generator, size: int, gsd: float, layers: list[Layer], sites: Sites,
          angle: float | None = None, through: tuple[float, float] | None = None) -> Site:
    angle = float(rng.uniform(-np.pi / 2, np.pi / 2)) if angle is None else angle
    cx, cy = through if through is not None else tuple(rng.uniform(0.15, 0.85, 2) * size)
    road = Site(cx, cy, 3.0 * size, float(rng.uniform(7.0, 14.0)) / gsd, angle)
    layers.append(road.layer(Material.ROAD))
    for v in (-0.42, 0.42):
        ends = np.array([road.point(-road.length / 2, v * road.width), road.point(road.length / 2, v * road.width)])
        layers.append(Layer(Material.PAINT, ends, thickness=1.0))
    sites.roads.append(road)
    return road


def _lot_beside(rng: np.random.Generator, road: Site, gsd: float, large: bool, layers: list[Layer],
                sites: Sites, size: int) -> None:
    depth = (19.0 if large else 5.5) / gsd
    width = 2 * depth + 7.0 / gsd
    length = float(rng.uniform(0.25, 0.6)) * size
    side = 1 if rng.integers(2) else -1
    u = float(rng.uniform(-0.3, 0.3)) * size + ((size / 2 - road.cx) * np.cos(road.angle) + (size / 2 - road.cy) * np.sin(road.angle))
    lot = road.sub(u, side * (road.width / 2 + 2.0 / gsd + width / 2), length, width)
    layers.append(lot.layer(Material.CONCRETE if rng.random() < 0.5 else Material.TARMAC))
    sites.lots.append((lot, "large" if large else "small"))


def _fields(rng: np.random.Generator, size: int, layers: list[Layer]) -> None:
    angle = float(rng.uniform(-np.pi / 2, np.pi / 2))
    frame = Site(size / 2, size / 2, size, size, angle)
    u = -0.75 * size
    while u < 0.75 * size:
        du = float(rng.uniform(0.12, 0.35)) * size
        v = -0.75 * size
        while v < 0.75 * size:
            dv = float(rng.uniform(0.1, 0.3)) * size
            if rng.random() < 0.8:
                gap = float(rng.uniform(1.5, 5.0))
                cell = frame.sub(u + du / 2, v + dv / 2, du - gap, dv - gap)
                layers.append(cell.layer(FIELD_MATERIALS[int(rng.integers(len(FIELD_MATERIALS)))]))
            v += dv
        u += du


def _pad(rng: np.random.Generator, cx: float, cy: float, size: int, gsd: float, layers: list[Layer], sites: Sites):
    side = float(rng.uniform(60.0, 140.0)) / gsd
    pad = Site(cx, cy, min(side, 0.6 * size), min(side * rng.uniform(0.6, 1.0), 0.6 * size),
               float(rng.uniform(-np.pi / 2, np.pi / 2)))
    layers.append(pad.layer(Material.CONCRETE if rng.random() < 0.5 else Material.SOIL))
    sites.pads.append(pad)


def sea_background(rng: np.random.Generator, size: int, gsd: float) -> tuple[Material, list[Layer], Sites]:
    sites = Sites(open_water=Site(size / 2, size / 2, size, size, 0.0))
    return Material.WATER, [], sites


def land_background(rng: np.random.Generator, size: int, gsd: float) -> tuple[Material, list[Layer], Sites]:
    base = Material.GRASS if rng.random() < 0.6 else Material.SOIL
    layers: list[Layer] = []
    sites = Sites()
    if rng.random() < 0.8:
        _fields(rng, size, layers)
    main = _road(rng, size, gsd, layers, sites)
    if rng.random() < 0.6:
        _road(rng, size, gsd, layers, sites, angle=main.angle + np.pi / 2 + float(rng.normal(0, 0.1)))
    for _ in range(int(rng.integers(1, 3))):
        _lot_beside(rng, sites.roads[int(rng.integers(len(sites.roads)))], gsd, rng.random() < 0.35, layers, sites, size)
    if rng.random() < 0.5:
        _pad(rng, *(rng.uniform(0.2, 0.8, 2) * size), size, gsd, layers, sites)
    return base, layers, sites


def coast_background(rng: np.random.Generator, size: int, gsd: float) -> tuple[Material, list[Layer], Sites]:
    """Water on the +v side of a shoreline, land with a road, lots and tanks on the -v side, piers."""
    angle = float(rng.uniform(-np.pi, np.pi))
    shore = Site(size / 2, size / 2, 3.0 * size, 3.0 * size, angle)
    shore_v = float(rng.uniform(-0.3, 0.05)) * size
    u = np.linspace(-1.5 * size, 1.5 * size, 64)
    wiggle = smooth_field(rng, 1, 64, cells=8)[0] * float(rng.uniform(0.0, 4.0)) / gsd
    edge = [shore.point(a, shore_v + b) for a, b in zip(u, wiggle)]
    land = np.array(edge + [shore.point(1.5 * size, -3 * size), shore.point(-1.5 * size, -3 * size)])
    layers = [Layer(Material.SOIL if rng.random() < 0.5 else Material.GRASS, land)]
    sites = Sites(open_water=shore.sub(0, shore_v + 0.75 * size, 3 * size, 1.5 * size))
    quay_w = float(rng.uniform(20.0, 60.0)) / gsd
    layers.append(shore.sub(0, shore_v - quay_w / 2, 3 * size, quay_w + 2).layer(Material.CONCRETE))
    road_centre = shore.point(0, shore_v - quay_w - float(rng.uniform(5.0, 20.0)) / gsd)
    road = _road(rng, size, gsd, layers, sites, angle=angle, through=road_centre)
    if rng.random() < 0.7:
        _lot_beside(rng, road, gsd, rng.random() < 0.4, layers, sites, size)
    marina = rng.random() < 0.6
    pier_w = float(rng.uniform(2.5, 4.0) if marina else rng.uniform(12.0, 25.0)) / gsd
    spacing = (float(rng.uniform(26.0, 40.0)) if marina else float(rng.uniform(60.0, 120.0))) / gsd + pier_w
    pier_len = min(float(rng.uniform(60.0, 200.0) if marina else rng.uniform(120.0, 300.0)) / gsd, 0.9 * size)
    centre_u = (size / 2 - shore.cx) * np.cos(angle) + (size / 2 - shore.cy) * np.sin(angle)
    for u0 in np.arange(centre_u - 0.7 * size, centre_u + 0.7 * size, spacing) + float(rng.uniform(0, spacing)):
        pier = shore.sub(u0, shore_v + pier_len / 2 - 1.0 / gsd, pier_w, pier_len)
        pier.angle, pier.length, pier.width = angle + np.pi / 2, pier_len, pier_w
        layers.append(pier.layer(Material.PIER if marina else Material.CONCRETE))
        sites.piers.append((pier, marina))
    if rng.random() < 0.5:
        _pad(rng, *shore.point(float(rng.uniform(-0.3, 0.3)) * size, shore_v - quay_w - 0.25 * size), size, gsd,
             layers, sites)
    return Material.WATER, layers, sites


def airfield_background(rng: np.random.Generator, size: int, gsd: float) -> tuple[Material, list[Layer], Sites]:
    angle = float(rng.uniform(-np.pi / 2, np.pi / 2))
    frame = Site(size / 2, size / 2, 3 * size, 3 * size, angle)
    layers: list[Layer] = []
    sites = Sites()
    runway_v = float(rng.uniform(-0.45, -0.1)) * size
    runway = frame.sub(0, runway_v, 3 * size, 45.0 / gsd)
    layers.append(runway.layer(Material.TARMAC))
    for v in (-0.45, 0.0, 0.45):
        ends = np.array([runway.point(-runway.length / 2, v * runway.width), runway.point(runway.length / 2, v * runway.width)])
        layers.append(Layer(Material.PAINT, ends, thickness=max(1.0, 0.8 / gsd)))
    taxi_v = runway_v + 45.0 / gsd / 2 + float(rng.uniform(40.0, 80.0)) / gsd
    taxiway = frame.sub(0, taxi_v, 3 * size, 23.0 / gsd)
    layers.append(taxiway.layer(Material.TARMAC))
    sites.runways += [runway, taxiway]
    apron_depth = float(rng.uniform(70.0, 140.0)) / gsd
    apron = frame.sub(float(rng.uniform(-0.2, 0.2)) * size, taxi_v + 23.0 / gsd / 2 + apron_depth / 2,
                      float(rng.uniform(0.6, 1.2)) * size, apron_depth)
    layers.append(apron.layer(Material.CONCRETE))
    sites.aprons.append(apron)
    road_v = taxi_v + 23.0 / gsd / 2 + apron_depth + float(rng.uniform(30.0, 60.0)) / gsd
    road = _road(rng, size, gsd, layers, sites, angle=angle, through=frame.point(0, road_v))
    _lot_beside(rng, road, gsd, rng.random() < 0.3, layers, sites, size)
    if rng.random() < 0.5:
        _pad(rng, *frame.point(float(rng.uniform(-0.3, 0.3)) * size, road_v + 0.2 * size), size, gsd, layers, sites)
    return Material.GRASS, layers, sites


BACKGROUNDS = {
    "sea": sea_background,
    "coast": coast_background,
    "land": land_background,
    "airfield": airfield_background,
}
# Ground sample distance range (m/px) of each kind, as in DOTA's Google Earth / GF-2 sources.
GSD_RANGE = {"sea": (0.2, 0.6), "coast": (0.15, 0.35), "land": (0.12, 0.3), "airfield": (0.3, 0.6)}
