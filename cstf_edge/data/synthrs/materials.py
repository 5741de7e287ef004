"""What every surface and object part looks like in each modality: the one table renderers read.

Background materials are integer ids drawn into a material map; object parts carry a role. Each has an
optical colour (BGR, 0-255), a SAR backscatter amplitude (0-1, before speckle) and an infrared
brightness (0-1, warm is bright). Texture amplitudes scale the shared fractal and grain fields.
"""
from __future__ import annotations

from enum import IntEnum

import numpy as np

MODALITIES: tuple[str, ...] = ("optical", "sar", "infrared")


class Material(IntEnum):
    WATER = 0
    GRASS = 1
    SOIL = 2
    FIELD_GREEN = 3
    FIELD_DRY = 4
    FIELD_BROWN = 5
    SAND = 6
    ROAD = 7
    TARMAC = 8
    CONCRETE = 9
    PIER = 10
    ROOF = 11
    ROOF_DARK = 12
    ROOF_RED = 13
    PAINT = 14
    WAKE = 15
    TREE = 16


# material: (optical BGR, sar, infrared, fractal amplitude, grain amplitude)
_MATERIAL_TABLE = {
    Material.WATER: ((62, 58, 34), 0.05, 0.30, 0.05, 0.02),
    Material.GRASS: ((62, 104, 88), 0.32, 0.40, 0.16, 0.08),
    Material.SOIL: ((98, 122, 138), 0.26, 0.62, 0.12, 0.05),
    Material.FIELD_GREEN: ((58, 118, 96), 0.36, 0.38, 0.08, 0.05),
    Material.FIELD_DRY: ((118, 158, 170), 0.22, 0.64, 0.07, 0.05),
    Material.FIELD_BROWN: ((72, 96, 122), 0.28, 0.58, 0.08, 0.05),
    Material.SAND: ((148, 178, 190), 0.18, 0.66, 0.06, 0.03),
    Material.ROAD: ((84, 86, 88), 0.09, 0.74, 0.05, 0.03),
    Material.TARMAC: ((108, 112, 114), 0.10, 0.70, 0.05, 0.03),
    Material.CONCRETE: ((146, 150, 152), 0.16, 0.62, 0.05, 0.03),
    Material.PIER: ((84, 104, 132), 0.60, 0.56, 0.05, 0.04),
    Material.ROOF: ((158, 160, 162), 0.55, 0.70, 0.03, 0.02),
    Material.ROOF_DARK: ((82, 80, 86), 0.50, 0.80, 0.03, 0.02),
    Material.ROOF_RED: ((70, 88, 150), 0.52, 0.74, 0.03, 0.02),
    Material.PAINT: ((212, 216, 218), 0.12, 0.58, 0.02, 0.02),
    Material.WAKE: ((118, 122, 112), 0.10, 0.28, 0.12, 0.12),
    Material.TREE: ((42, 72, 50), 0.46, 0.32, 0.25, 0.22),
}
_N = len(Material)
OPTICAL_LUT = np.array([_MATERIAL_TABLE[Material(i)][0] for i in range(_N)], np.float32)
SAR_LUT = np.array([_MATERIAL_TABLE[Material(i)][1] for i in range(_N)], np.float32)
INFRARED_LUT = np.array([_MATERIAL_TABLE[Material(i)][2] for i in range(_N)], np.float32)
FRACTAL_AMPLITUDE = np.array([_MATERIAL_TABLE[Material(i)][3] for i in range(_N)], np.float32)
GRAIN_AMPLITUDE = np.array([_MATERIAL_TABLE[Material(i)][4] for i in range(_N)], np.float32)


class Role(IntEnum):
    """Object parts. Roles ending in PAINT take the object's own colour in optical imagery."""

    PAINT = 0
    PAINT_DARK = 1
    ACCENT = 2
    GLASS = 3
    DECK = 4
    SUPERSTRUCTURE = 5
    ENGINE = 6
    TANK_ROOF = 7
    TANK_INNER = 8
    HOT = 9


# role: (optical: colour factor on the object colour, or a fixed BGR), sar, infrared
ROLE_TABLE = {
    Role.PAINT: (1.0, 0.85, 0.36),  # painted metal mirrors the cold sky in LWIR
    Role.PAINT_DARK: (0.78, 0.80, 0.34),
    Role.ACCENT: ("accent", 0.75, 0.56),
    Role.GLASS: ((46, 44, 42), 0.55, 0.30),
    Role.DECK: ("accent", 0.70, 0.62),
    Role.SUPERSTRUCTURE: ((214, 216, 218), 1.00, 0.80),
    Role.ENGINE: ((112, 112, 116), 0.95, 0.66),
    Role.TANK_ROOF: (1.0, 0.62, 0.46),
    Role.TANK_INNER: (0.72, 0.70, 0.50),
    Role.HOT: (0.9, 0.80, 0.98),
}

# Paint palettes (BGR): vehicles, ship hulls, aircraft, tank roofs.
VEHICLE_COLOURS = np.array(
    [(225, 226, 228), (200, 202, 204), (30, 30, 32), (60, 60, 64), (140, 142, 146), (40, 40, 150),
     (120, 60, 30), (40, 140, 200), (180, 182, 186), (90, 110, 120)], np.float32)
LARGE_VEHICLE_COLOURS = np.array(
    [(60, 190, 230), (220, 222, 224), (180, 184, 188), (60, 70, 160), (140, 110, 60), (90, 95, 100)],
    np.float32)
HULL_COLOURS = np.array(
    [(228, 230, 232), (215, 218, 220), (150, 150, 150), (40, 42, 44), (40, 50, 120), (120, 90, 50)], np.float32)
DECK_COLOURS = np.array(
    [(180, 190, 196), (60, 90, 60), (50, 60, 110), (120, 124, 128), (90, 120, 150)], np.float32)
AIRCRAFT_COLOURS = np.array([(222, 224, 226), (200, 204, 206), (170, 172, 176), (110, 118, 120)], np.float32)
TANK_COLOURS = np.array([(220, 222, 224), (196, 200, 202), (172, 176, 178)], np.float32)
