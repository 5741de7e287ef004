"""Arranging objects on a background's sites: rows in parking lots, traffic along roads, boats moored
side by side at piers, ships under way with wakes, parked aircraft, tank farms."""
from __future__ import annotations

import numpy as np

from cstf_edge.data.synthrs.backgrounds import Site, Sites
from cstf_edge.data.synthrs.materials import Material
from cstf_edge.data.synthrs.objects import SIZES_M, make_object
from cstf_edge.data.synthrs.placement import WATER_SURFACES, Placer
from cstf_edge.data.synthrs.scene import Layer, SceneObject

ROAD_SURFACES = (Material.ROAD, Material.PAINT)
PAVED = (Material.ROAD, Material.PAINT, Material.TARMAC, Material.CONCRETE)


def _jitter(rng: np.random.Generator, scale: float) -> float:
    return float(rng.normal(0.0, scale))


def parking_lot(rng, placer: Placer, lot: Site, kind: str, gsd: float, layers: list[Layer]) -> None:
    """Two rows of stalls facing a central aisle, painted lines between stalls, vehicles in most stalls."""
    cls = "large-vehicle" if kind == "large" else "small-vehicle"
    stall_w = (4.0 if kind == "large" else 2.7) / gsd
    depth = (19.0 if kind == "large" else 5.5) / gsd
    fill = float(rng.uniform(0.4, 0.95))
    for side in (-1.0, 1.0):
        v_row = side * (lot.width / 2 - depth / 2)
        for u in np.arange(-lot.length / 2 + stall_w / 2, lot.length / 2 - stall_w / 2, stall_w):
            line = np.array([lot.point(u - stall_w / 2, v_row - depth / 2), lot.point(u - stall_w / 2, v_row + depth / 2)])
            layers.append(Layer(Material.PAINT, line, thickness=1.0))
            if rng.random() > fill:
                continue
            heading = lot.angle + np.pi / 2 * (side if rng.random() < 0.85 else -side)
            x, y = lot.point(u + _jitter(rng, 0.1 / gsd), v_row + _jitter(rng, 0.15 / gsd))
            length_m = None if kind == "large" else float(rng.uniform(3.8, 5.0))
            obj = make_object(rng, cls, x, y, heading + _jitter(rng, 0.03), gsd, length_m=length_m)
            placer.add(obj)


def road_traffic(rng, placer: Placer, road: Site, gsd: float, wanted: set[str], density: float) -> None:
    """Vehicles in both lanes of a road, in queues, heading along the road."""
    for lane in (-0.25, 0.25):
        u = -road.length / 2
        while u < road.length / 2:
            u += float(rng.exponential(1.0 / density)) / gsd
            queue = int(rng.integers(1, 6))
            for _ in range(queue):
                cls = "large-vehicle" if rng.random() < 0.15 else "small-vehicle"
                if cls not in wanted:
                    continue
                heading = road.angle + (0.0 if lane > 0 else np.pi) + _jitter(rng, 0.02)
                x, y = road.point(u, lane * road.width + _jitter(rng, 0.2 / gsd))
                obj = make_object(rng, cls, x, y, heading, gsd)
                placer.add(obj, ROAD_SURFACES, 0.8)
                u += obj.length * gsd + float(rng.uniform(1.5, 6.0))
            u += 1.0


def tank_farm(rng, placer: Placer, pad: Site, gsd: float) -> None:
    """A grid of storage tanks of similar diameter on a pad."""
    diameter = float(rng.uniform(*SIZES_M["storage-tank"][0]))
    pitch = diameter / gsd * float(rng.uniform(1.25, 1.7))
    for u in np.arange(-pad.length / 2 + pitch / 2, pad.length / 2 - pitch / 2 + 1, pitch):
        for v in np.arange(-pad.width / 2 + pitch / 2, pad.width / 2 - pitch / 2 + 1, pitch):
            if rng.random() < 0.15:
                continue
            x, y = pad.point(u, v)
            length_m = diameter * float(rng.uniform(0.85, 1.0))
            placer.add(make_object(rng, "storage-tank", x, y, 0.0, gsd, length_m=length_m))


def moored_boats(rng, placer: Placer, pier: Site, marina: bool, gsd: float) -> None:
    """Boats side by side along both sides of a pier: small boats bow-on in a marina, ships alongside
    a wide concrete pier."""
    occupancy = float(rng.uniform(0.55, 0.95))
    for side in (-1.0, 1.0):
        u = -pier.length / 2 + float(rng.uniform(2.0, 6.0)) / gsd
        while u < pier.length / 2:
            moored = rng.random() < occupancy
            length_m = float(rng.uniform(7.0, 18.0) if marina else rng.uniform(35.0, 110.0))
            if marina:
                heading = pier.angle + side * np.pi / 2 + (np.pi if rng.random() < 0.3 else 0.0)
                obj = make_object(rng, "ship", 0, 0, heading + _jitter(rng, 0.04), gsd, length_m=length_m)
                across, along = obj.length, obj.width
            else:
                heading = pier.angle + (np.pi if rng.random() < 0.5 else 0.0)
                obj = make_object(rng, "ship", 0, 0, heading, gsd, length_m=length_m)
                across, along = obj.width, obj.length
            gap = float(rng.uniform(0.6, 2.0)) / gsd
            obj.cx, obj.cy = pier.point(u + along / 2, side * (pier.width / 2 + gap + across / 2))
            if moored:
                placer.add(obj, WATER_SURFACES, 0.9)
            u += along + float(rng.uniform(0.8, 2.5)) / gsd


def ships_under_way(rng, placer: Placer, water: Site, gsd: float, count: int, layers: list[Layer]) -> None:
    """Ships at sea (some in a loose cluster), with a foam wake behind the moving ones."""
    centre = (float(rng.uniform(-0.3, 0.3)) * water.length, float(rng.uniform(-0.3, 0.3)) * water.width)
    for k in range(count):
        clustered = k < count // 2
        u = centre[0] + _jitter(rng, 60.0 / gsd) if clustered else float(rng.uniform(-0.5, 0.5)) * water.length
        v = centre[1] + _jitter(rng, 60.0 / gsd) if clustered else float(rng.uniform(-0.5, 0.5)) * water.width
        x, y = water.point(u, v)
        obj = make_object(rng, "ship", x, y, float(rng.uniform(-np.pi, np.pi)), gsd)
        obj.moving = not clustered and rng.random() < 0.7
        if placer.add(obj, WATER_SURFACES, 0.95) and obj.moving:
            layers.extend(_wakes(rng, obj))


def _wakes(rng, ship: SceneObject) -> list[Layer]:
    """A turbulent trail behind the stern and the two thin arms of a Kelvin wake."""
    trail = float(rng.uniform(1.0, 3.0))
    spread = trail * float(rng.uniform(0.15, 0.3)) * ship.length / ship.width
    centre = ship.to_image(np.array([[-0.48, 0.0], [-0.5 - trail, 0.0]]))
    layers = [Layer(Material.WAKE, centre, thickness=0.5 * ship.width)]
    for side in (-1.0, 1.0):
        arm = ship.to_image(np.array([[-0.3, side * 0.5], [-0.5 - trail * 0.7, side * (0.5 + spread)]]))
        layers.append(Layer(Material.WAKE, arm, thickness=max(1.0, 0.12 * ship.width)))
    return layers


def parked_aircraft(rng, placer: Placer, apron: Site, gsd: float, wanted: set[str]) -> None:
    """A row of aircraft nose-in to the terminal side of the apron, service vehicles beside them."""
    u = -apron.length / 2 + float(rng.uniform(5.0, 20.0)) / gsd
    row_length_m = float(rng.uniform(25.0, 60.0))
    while u < apron.length / 2:
        length_m = float(np.clip(row_length_m * rng.uniform(0.8, 1.2), *SIZES_M["plane"][0]))
        obj = make_object(rng, "plane", 0, 0, apron.angle + np.pi / 2 + _jitter(rng, 0.05), gsd, length_m=length_m)
        obj.cx, obj.cy = apron.point(u + obj.width / 2, apron.width / 2 - obj.length / 2 - 4.0 / gsd)
        if "plane" in wanted and rng.random() < 0.85:
            placer.add(obj)
        if rng.random() < 0.5:
            cls = "small-vehicle" if rng.random() < 0.5 else "large-vehicle"
            if cls in wanted:
                x, y = apron.point(u + obj.width / 2 + _jitter(rng, 5.0 / gsd), apron.width / 2 - obj.length - 8.0 / gsd)
                placer.add(make_object(rng, cls, x, y, apron.angle + _jitter(rng, 0.3), gsd))
        u += obj.width + float(rng.uniform(6.0, 20.0)) / gsd


def taxiing_aircraft(rng, placer: Placer, runway: Site, gsd: float) -> None:
    x, y = runway.point(float(rng.uniform(-0.15, 0.15)) * runway.length, 0.0)
    heading = runway.angle + (np.pi if rng.random() < 0.5 else 0.0)
    placer.add(make_object(rng, "plane", x, y, heading, gsd), (Material.TARMAC, Material.PAINT, Material.GRASS), 0.5)


def populate(rng, placer: Placer, kind: str, sites: Sites, gsd: float, wanted: set[str], layers: list[Layer]) -> None:
    """Arrange objects of the ``wanted`` classes on the sites of a ``kind`` scene."""
    if "plane" in wanted or "small-vehicle" in wanted or "large-vehicle" in wanted:
        for apron in sites.aprons:
            parked_aircraft(rng, placer, apron, gsd, wanted)
    if "plane" in wanted:
        for runway in sites.runways:
            if rng.random() < 0.5:
                taxiing_aircraft(rng, placer, runway, gsd)
    if "ship" in wanted:
        for pier, marina in sites.piers:
            moored_boats(rng, placer, pier, marina, gsd)
        if sites.open_water is not None:
            count = int(rng.integers(3, 20)) if kind == "sea" else int(rng.integers(0, 5))
            ships_under_way(rng, placer, sites.open_water, gsd, count, layers)
    if "storage-tank" in wanted:
        for pad in sites.pads:
            tank_farm(rng, placer, pad, gsd)
    for lot, lot_kind in sites.lots:
        if ("large-vehicle" if lot_kind == "large" else "small-vehicle") in wanted:
            parking_lot(rng, placer, lot, lot_kind, gsd, layers)
    if wanted & {"small-vehicle", "large-vehicle"}:
        for road in sites.roads:
            road_traffic(rng, placer, road, gsd, wanted, density=float(rng.uniform(0.005, 0.03)))
