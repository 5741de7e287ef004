"""``make_scene``: the scene description of scene ``index`` of a seeded data set (no pixels yet)."""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from numbers import Integral

import numpy as np

from cstf_edge.data.classes import SYNTH_CLASSES
from cstf_edge.data.synthrs.backgrounds import BACKGROUNDS, GSD_RANGE
from cstf_edge.data.synthrs.layouts import populate
from cstf_edge.data.synthrs.materials import Material
from cstf_edge.data.synthrs.placement import Placer, enforce_counts
from cstf_edge.data.synthrs.scene import SCENE_KINDS, Building, Conditions, Scene
from cstf_edge.errors import CstfError
from cstf_edge.geometry import rbox_to_poly

KIND_CLASSES = {
    "sea": {"ship"},
    "coast": {"ship", "small-vehicle", "large-vehicle", "storage-tank"},
    "land": {"small-vehicle", "large-vehicle", "storage-tank"},
    "airfield": {"plane", "small-vehicle", "large-vehicle", "storage-tank"},
}
KIND_WEIGHTS = {"sea": 0.2, "coast": 0.3, "land": 0.3, "airfield": 0.2}
SIZE_RANGE = (64, 8192)  # scene side in pixels (DOTA patches are 1024)
BUILDING_GROUND = (Material.GRASS, Material.SOIL, Material.FIELD_DRY, Material.FIELD_BROWN, Material.SAND)
TREE_GROUND = BUILDING_GROUND + (Material.FIELD_GREEN, Material.ROAD, Material.PAINT, Material.CONCRETE)
ClassRequest = None | str | Iterable[str] | Mapping[str, int]


def parse_class_request(classes: ClassRequest) -> tuple[set[str], dict[str, int] | None]:
    """Read ``classes``: None (all), ``"ship,plane"`` or a list (only these), ``"ship=3,plane=2"`` or a
    mapping (exactly these counts per scene). Returns the wanted classes and the counts (or None)."""
    if classes is None:
        return set(SYNTH_CLASSES), None
    if isinstance(classes, str):
        items = [c.strip() for c in classes.split(",") if c.strip()]
        if any("=" in c for c in items):
            classes = {}
            for item in items:
                name, _, count = item.partition("=")
                if not count.strip().isdigit():
                    raise CstfError(f"class request {item!r}: write NAME=COUNT with a whole number, e.g. ship=3")
                classes[name.strip()] = int(count)
        else:
            classes = items
    counts = {str(k): int(v) for k, v in classes.items()} if isinstance(classes, Mapping) else None
    wanted = set(counts) if counts is not None else set(classes)
    unknown = sorted(wanted - set(SYNTH_CLASSES))
    if unknown or not wanted:
        raise CstfError(f"SynthRS cannot draw class(es) {unknown or '(none given)'}; it draws {', '.join(SYNTH_CLASSES)}")
    if counts is not None and min(counts.values()) < 0:
        raise CstfError(f"class counts must be >= 0, got {counts}")
    return wanted, counts


def check_seed_and_size(seed: int, size: int) -> None:
    """Raise :class:`CstfError` unless ``seed`` is an integer >= 0 and ``size`` lies in ``SIZE_RANGE``."""
    if isinstance(seed, bool) or not isinstance(seed, Integral) or seed < 0:
        raise CstfError(f"seed {seed!r} is not usable; give a whole number >= 0")
    low, high = SIZE_RANGE
    if isinstance(size, bool) or not isinstance(size, Integral) or not low <= size <= high:
        raise CstfError(f"scene size {size!r} px is out of range; use a whole number from {low} to {high} "
                        "(DOTA patches are 1024)")


def _choose_kind(rng: np.random.Generator, wanted: set[str]) -> str:
    weights = np.array([KIND_WEIGHTS[k] * bool(KIND_CLASSES[k] & wanted) for k in SCENE_KINDS])
    return SCENE_KINDS[int(rng.choice(len(SCENE_KINDS), p=weights / weights.sum()))]


def _on(materials: np.ndarray, points: np.ndarray, allowed) -> bool:
    size = materials.shape[0]
    idx = np.clip(np.floor(points).astype(int), 0, size - 1)  # the pixel holding each continuous point
    return bool(np.isin(materials[idx[:, 1], idx[:, 0]], np.asarray(allowed, np.uint8)).all())


def _add_buildings(rng: np.random.Generator, placer: Placer, scene: Scene, count: int) -> None:
    for _ in range(count * 4):
        if len(scene.buildings) >= count:
            return
        cx, cy = rng.uniform(0, scene.size, 2)
        length, width = rng.uniform(10.0, 45.0, 2) / scene.gsd
        poly = rbox_to_poly([cx, cy, length, width, float(rng.uniform(-np.pi / 2, np.pi / 2))])
        if _on(placer.materials, np.vstack([poly, [[cx, cy]]]), BUILDING_GROUND) and placer.is_free(poly):
            placer.block(poly)
            material = (Material.ROOF, Material.ROOF_DARK, Material.ROOF_RED)[int(rng.integers(3))]
            scene.buildings.append(Building(poly, float(rng.uniform(4.0, 18.0)) / scene.gsd, material))


def _add_trees(rng: np.random.Generator, placer: Placer, scene: Scene, clusters: int) -> None:
    for _ in range(clusters):
        centre = rng.uniform(0, scene.size, 2)
        spread = float(rng.uniform(8.0, 40.0)) / scene.gsd
        for _ in range(int(rng.integers(4, 30))):
            x, y = centre + rng.normal(0, spread, 2)
            radius = float(rng.uniform(1.5, 4.5)) / scene.gsd
            if _on(placer.materials, np.array([[x, y]]), TREE_GROUND):
                placer.add_tree(float(x), float(y), radius)


def make_scene(seed: int, index: int, size: int = 1024, classes: ClassRequest = None) -> Scene:
    """The scene description of scene ``index`` of the data set ``seed``; it depends only on its arguments.

    ``classes`` restricts the classes drawn (see :func:`parse_class_request`); with counts, each scene
    holds exactly that many objects of each named class and none of the others.
    """
    check_seed_and_size(seed, size)
    wanted, counts = parse_class_request(classes)
    rng = np.random.default_rng([int(seed), int(index), 0])
    kind = _choose_kind(rng, wanted)
    gsd = float(rng.uniform(*GSD_RANGE[kind]))
    base, layers, sites = BACKGROUNDS[kind](rng, size, gsd)
    scene = Scene(int(seed), int(index), size, kind, gsd, base, layers)
    placer = Placer(size, scene.material_map())
    populate(rng, placer, kind, sites, gsd, wanted, layers)
    if counts is not None:
        enforce_counts(rng, placer, counts, gsd)
    if kind != "sea":
        _add_buildings(rng, placer, scene, int(rng.integers(2, 14)))
        _add_trees(rng, placer, scene, int(rng.integers(0, 7)))
    scene.objects = placer.objects
    scene.trees = np.array(placer.trees, np.float64).reshape(-1, 3)
    azimuth, zenith = float(rng.uniform(-np.pi, np.pi)), float(rng.uniform(0.35, 1.0))
    scene.shadow_vector = (float(np.cos(azimuth) * np.tan(zenith)), float(np.sin(azimuth) * np.tan(zenith)))
    scene.conditions = Conditions.draw(rng)
    return scene
