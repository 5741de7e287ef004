"""``render``: one modality's image of a scene. Background from the material map and cached textures,
shadows, then buildings, objects and tree crowns drawn anti-aliased, then the sensor (see ``sensor``)."""
from __future__ import annotations

import cv2
import numpy as np

from cstf_edge.data.synthrs.materials import (
    FRACTAL_AMPLITUDE,
    GRAIN_AMPLITUDE,
    INFRARED_LUT,
    MODALITIES,
    OPTICAL_LUT,
    ROLE_TABLE,
    SAR_LUT,
    Material,
    Role,
)
from cstf_edge.data.synthrs.noise import crop_texture, fractal_texture, grain_texture, smooth_field
from cstf_edge.data.synthrs.objects import object_parts
from cstf_edge.data.synthrs.raster import draw_polyline, fill_circle, fill_polygons
from cstf_edge.data.synthrs.scene import Scene, SceneObject
from cstf_edge.data.synthrs.sensor import apply_sensor
from cstf_edge.errors import CstfError

_SCALAR_LUT = {"sar": SAR_LUT * 255.0, "infrared": INFRARED_LUT * 255.0}
# How much a shadow darkens each modality (SAR: radar shadow; infrared: cooler ground).
SHADOW_STRENGTH = {"optical": 0.55, "sar": 0.75, "infrared": 0.25}
_TREE_LIGHT = {"optical": (60, 96, 70), "sar": 150.0, "infrared": 95.0}
_AA = cv2.LINE_AA


def _check_modality(modality: str) -> None:
    if modality not in MODALITIES:
        raise CstfError(f"unknown modality {modality!r}; SynthRS renders {', '.join(MODALITIES)}")


def _background(scene: Scene, modality: str, rng: np.random.Generator) -> np.ndarray:
    materials = scene.material_map()
    size = scene.size
    texture = _lookup(materials, FRACTAL_AMPLITUDE) * crop_texture(fractal_texture(), rng, size, size)
    texture += _lookup(materials, GRAIN_AMPLITUDE) * crop_texture(grain_texture(), rng, size, size)
    texture += 1.0
    if modality == "optical":
        lut = OPTICAL_LUT * np.asarray(scene.conditions.colour_jitter, np.float32)
        image = _lookup(cv2.merge([materials] * 3), lut)
        image *= texture[..., None]
        return image
    image = _lookup(materials, _SCALAR_LUT[modality])
    image *= texture
    return image


def _lookup(materials: np.ndarray, table: np.ndarray) -> np.ndarray:
    """``table[materials]`` as float32 through cv2.LUT (several times faster than numpy indexing)."""
    channels = table.shape[1] if table.ndim == 2 else 1
    lut = np.zeros((256, 1, channels), np.float32)
    lut[: len(table), 0] = table.reshape(len(table), channels)
    out = cv2.LUT(materials, lut if channels > 1 else lut[:, :, 0])
    return out


def _extrusion(points: np.ndarray, offset: np.ndarray) -> np.ndarray:
    """The convex hull of a convex footprint and its copy shifted by ``offset``: a block's shadow."""
    return cv2.convexHull(np.vstack([points, points + offset]).astype(np.float32)).reshape(-1, 2)


def _shadow_mask(scene: Scene) -> np.ndarray:
    mask = np.zeros((scene.size, scene.size), np.uint8)
    direction = np.asarray(scene.shadow_vector, np.float64)
    shapes = [_extrusion(b.polygon, direction * b.height_px) for b in scene.buildings]
    for obj in scene.objects:
        offset = direction * obj.height_px
        if obj.cls == "plane":
            shapes += [poly + offset for _, poly in object_parts(obj)]
        else:
            shapes.append(_extrusion(obj.to_image(_footprint_uv(obj)), offset))
    for x, y, radius in scene.trees:
        centre = np.array([x, y]) + direction * radius * 1.5
        fill_circle(mask, centre[0], centre[1], radius, 255, _AA)
    if shapes:
        fill_polygons(mask, shapes, 255, _AA)
    return mask


def _footprint_uv(obj: SceneObject) -> np.ndarray:
    if obj.cls == "storage-tank":
        t = np.linspace(0, 2 * np.pi, 24, endpoint=False)
        return 0.5 * np.stack([np.cos(t), np.sin(t)], axis=1)
    return np.array([[-0.5, -0.5], [0.5, -0.5], [0.5, 0.5], [-0.5, 0.5]]) * [1.0, 0.9 if obj.cls == "ship" else 1.0]


def _role_value(role: Role, obj: SceneObject, modality: str):
    optical, sar, infrared = ROLE_TABLE[role]
    if modality == "sar":
        return sar * 255.0
    if modality == "infrared":
        hot = 0.12 if obj.moving else 0.0  # engines running
        return min(infrared + hot, 1.0) * 255.0
    if optical == "accent":
        return obj.accent
    if isinstance(optical, tuple):
        return optical
    return tuple(optical * c for c in obj.colour)


def _draw_scene_items(canvas: np.ndarray, scene: Scene, modality: str) -> None:
    roof_lut = OPTICAL_LUT if modality == "optical" else _SCALAR_LUT[modality]
    for building in scene.buildings:
        value = roof_lut[int(building.material)]
        value = tuple(float(v) for v in value) if modality == "optical" else float(value)
        fill_polygons(canvas, [building.polygon], value, _AA)
        if modality == "sar":  # double bounce along the walls
            draw_polyline(canvas, building.polygon, 255.0, 1, closed=True, line_type=_AA)
    for obj in scene.objects:
        for role, poly in object_parts(obj):
            fill_polygons(canvas, [poly], _role_value(role, obj, modality), _AA)
    if modality == "sar":
        _draw_scatterers(canvas, scene)
    _draw_trees(canvas, scene, modality)


def _draw_scatterers(canvas: np.ndarray, scene: Scene) -> None:
    """Bright point scatterers (corners, masts, engines) of metal objects."""
    for obj in scene.objects:
        corners = obj.polygon() if obj.cls != "storage-tank" else obj.to_image(_footprint_uv(obj)[::6])
        for x, y in corners[:: 2 if obj.cls in ("small-vehicle",) else 1]:
            cx, cy = (x + obj.cx) / 2, (y + obj.cy) / 2
            fill_circle(canvas, cx, cy, 1.0, 255.0, _AA)


def _draw_trees(canvas: np.ndarray, scene: Scene, modality: str) -> None:
    dark = OPTICAL_LUT[Material.TREE] if modality == "optical" else _SCALAR_LUT[modality][Material.TREE]
    dark = tuple(float(v) for v in dark) if modality == "optical" else float(dark)
    light = _TREE_LIGHT[modality]
    sun = -np.asarray(scene.shadow_vector) / max(np.hypot(*scene.shadow_vector), 1e-6)
    for x, y, radius in scene.trees:
        fill_circle(canvas, x, y, radius, dark, _AA)
        hx, hy = np.array([x, y]) + sun * radius * 0.3
        fill_circle(canvas, hx, hy, radius * 0.55, light, _AA)


def render(scene: Scene, modality: str = "optical", variant: int = 0) -> np.ndarray:
    """The ``modality`` image of ``scene``: uint8 BGR ``[H, W, 3]`` for optical, ``[H, W]`` for SAR and
    infrared. ``variant`` > 0 gives another acquisition of the same scene (other texture crops, light and
    noise), as the query of a reference/query pair would be."""
    _check_modality(modality)
    rng = np.random.default_rng([scene.seed, scene.index, 1 + MODALITIES.index(modality), int(variant)])
    image = _background(scene, modality, rng)
    shade = 1.0 - SHADOW_STRENGTH[modality] / 255.0 * _shadow_mask(scene).astype(np.float32)
    shade *= 1.0 + 0.06 * smooth_field(rng, scene.size, scene.size, cells=4)
    image *= shade[..., None] if image.ndim == 3 else shade
    canvas = np.clip(image, 0, 255).astype(np.uint8) if modality != "sar" else image
    _draw_scene_items(canvas, scene, modality)
    return apply_sensor(canvas, scene.conditions, modality, rng, variant)
