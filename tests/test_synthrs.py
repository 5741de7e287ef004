"""SynthRS: determinism, tight visible labels drawn where they are, no overlaps, class counts, modalities,
pairs in the continuous pixel convention, writer (resume rules, argument checks)."""
from __future__ import annotations

import argparse
import json

import cv2
import numpy as np
import pytest

from cstf_edge.data import classes
from cstf_edge.data.augment import AugmentState, flip
from cstf_edge.data.dota import read_dota_labels
from cstf_edge.data.synthrs import SYNTH_CLASSES, generate_dataset, make_pair, make_scene, render
from cstf_edge.data.synthrs.backgrounds import Site
from cstf_edge.data.synthrs.materials import Material
from cstf_edge.data.synthrs.objects import _PARTS, make_object
from cstf_edge.data.synthrs.pairs import random_similarity, warp_image
from cstf_edge.data.synthrs.raster import fill_polygons
from cstf_edge.data.synthrs.scene import Conditions, Scene
from cstf_edge.errors import CstfError
from cstf_edge.eval.dota_map import evaluate_detections
from cstf_edge.geometry import rbox_to_poly
from cstf_edge.geometry.boxes import box_frame_to_image
from cstf_edge.geometry.iou import polygon_iou_matrix

SIZE = 512
# Scenes of seed 7 with at least two objects each (6 and 7 hold one), so no test below has to skip.
SCENES = [make_scene(7, i, SIZE) for i in (0, 1, 2, 3, 4, 5, 8, 9, 10, 11)]


def _strip(scene):
    """A copy of ``scene`` without its objects (same background, light and noise)."""
    bare = make_scene(scene.seed, scene.index, scene.size)
    bare.objects = []
    return bare


def test_same_seed_gives_identical_bytes_and_other_indices_differ():
    a = render(make_scene(3, 5, 256), "optical")
    b = render(make_scene(3, 5, 256), "optical")
    c = render(make_scene(3, 6, 256), "optical")
    assert a.tobytes() == b.tobytes()
    assert a.shape == (256, 256, 3) and a.dtype == np.uint8
    assert a.tobytes() != c.tobytes()


def test_scenes_cover_every_kind_and_class():
    scenes = [make_scene(11, i, SIZE) for i in range(24)]
    assert {s.kind for s in scenes} == {"sea", "coast", "land", "airfield"}
    assert set().union(*(s.class_counts() for s in scenes)) == set(SYNTH_CLASSES)


@pytest.mark.parametrize("scene", SCENES, ids=lambda s: f"{s.kind}{s.index}")
def test_boxes_are_canonical_and_inside_the_image(scene):
    labels = scene.labels()
    rboxes = labels.rboxes()
    assert len(labels) == len(scene.objects)
    if len(labels):
        assert (rboxes[:, 2] >= rboxes[:, 3] - 1e-9).all()
        assert ((rboxes[:, 4] >= -np.pi / 2) & (rboxes[:, 4] < np.pi / 2)).all()
        assert labels.polygons.min() >= 0 and labels.polygons.max() <= SIZE - 1
        np.testing.assert_allclose(rboxes, np.stack([o.rbox() for o in scene.objects]), atol=1e-6)


@pytest.mark.parametrize("scene", SCENES, ids=lambda s: f"{s.kind}{s.index}")
def test_objects_do_not_overlap(scene):
    polygons = scene.labels().polygons
    assert len(polygons) >= 2
    iou = polygon_iou_matrix(polygons, polygons)
    np.fill_diagonal(iou, 0.0)
    assert iou.max() < 0.02


@pytest.mark.parametrize("cls", SYNTH_CLASSES)
def test_object_parts_fill_their_box_exactly(cls):
    scene = next(s for s in [make_scene(5, i, SIZE, [cls]) for i in range(6)] if s.objects)
    for obj in scene.objects[:20]:
        uv = np.vstack([poly for _, poly in _PARTS[cls](obj)])
        assert uv.min() >= -0.5 - 1e-9 and uv.max() <= 0.5 + 1e-9, "a part leaves the labelled box"
        np.testing.assert_allclose([uv[:, 0].min(), uv[:, 0].max(), uv[:, 1].min(), uv[:, 1].max()],
                                   [-0.5, 0.5, -0.5, 0.5], atol=0.01, err_msg="label not tight")


@pytest.mark.parametrize("modality", ["optical", "sar", "infrared"])
def test_each_object_changes_the_pixels_inside_its_box(modality):
    checked = 0
    for scene in SCENES[:6]:
        with_objects = render(scene, modality).astype(np.float32)
        without = render(_strip(scene), modality).astype(np.float32)
        diff = np.abs(with_objects - without)
        diff = diff.mean(axis=2) if diff.ndim == 3 else diff
        for obj, poly in zip(scene.objects, scene.labels().polygons):
            mask = np.zeros((SIZE, SIZE), np.uint8)
            fill_polygons(mask, [poly], 1)
            assert diff[mask > 0].mean() > 8.0, f"{obj.cls} at ({obj.cx:.0f}, {obj.cy:.0f}) invisible"
            checked += 1
    assert checked > 50


def test_class_counts_are_honoured():
    for i in range(4):
        scene = make_scene(2, i, SIZE, "ship=3,storage-tank=2")
        assert scene.class_counts() == {"ship": 3, "storage-tank": 2}
    only = [make_scene(2, i, SIZE, ["small-vehicle"]) for i in range(4)]
    assert all(set(s.class_counts()) <= {"small-vehicle"} for s in only)
    assert sum(len(s.objects) for s in only) > 0


def test_bad_requests_raise_typed_errors():
    with pytest.raises(CstfError, match="helicopter"):
        make_scene(0, 0, SIZE, "helicopter")
    with pytest.raises(CstfError, match="NAME=COUNT"):
        make_scene(0, 0, SIZE, "ship=many")
    with pytest.raises(CstfError, match="modality"):
        render(SCENES[0], "lidar")


def test_sar_is_single_channel_with_speckle():
    scene = next(s for s in (make_scene(4, i, SIZE, ["ship"]) for i in range(10)) if s.kind == "sea")
    sar, optical = render(scene, "sar"), render(scene, "optical")
    assert sar.ndim == 2 and sar.dtype == np.uint8
    water = scene.material_map() == Material.WATER
    water &= cv2.erode(_strip(scene).material_map(), np.ones((9, 9), np.uint8)) == Material.WATER
    for obj in scene.objects:  # keep away from ships and their shadows
        cv2.circle(water.view(np.uint8), (int(obj.cx), int(obj.cy)), int(obj.length), 0, -1)
    sar_water, grey_water = sar[water].astype(float), optical.mean(axis=2)[water]
    sar_variation = sar_water.std() / sar_water.mean()
    assert sar_variation > 0.18  # amplitude speckle of 3-6 looks: about 0.2-0.3
    assert sar_variation > 2 * grey_water.std() / grey_water.mean()
    ship_mask = np.zeros_like(sar)
    fill_polygons(ship_mask, scene.labels().polygons, 1)
    assert sar[ship_mask > 0].mean() > 3 * sar_water.mean()  # metal is bright, water dark


def test_pair_transform_maps_reference_to_query():
    pair = make_pair(1, 0, SIZE, modalities=("optical", "optical"))
    ref = cv2.cvtColor(pair.reference, cv2.COLOR_BGR2GRAY).astype(np.float32)
    qry = cv2.cvtColor(pair.query, cv2.COLOR_BGR2GRAY).astype(np.float32)

    def agreement(h):
        warped = warp_image(ref, h, SIZE)
        valid = warp_image(np.ones_like(ref), h, SIZE) > 0.99
        return np.corrcoef(warped[valid], qry[valid])[0, 1]

    assert agreement(pair.transform) > 0.7  # another acquisition: new light, haze, noise, JPEG
    assert agreement(np.linalg.inv(pair.transform)) < 0.3
    for poly in pair.query_labels.polygons:  # every kept query label is a moved reference label
        back = cv2.perspectiveTransform(poly[None], np.linalg.inv(pair.transform))[0]
        dist = np.abs(pair.reference_labels.polygons.mean(axis=1) - back.mean(axis=0)).sum(axis=1)
        assert dist.min() < 1e-6


def test_dataset_on_disk_reads_back_and_scores_map_one(tmp_path):
    summary = generate_dataset(tmp_path, 3, size=256, seed=9, modalities=("optical", "sar"), pairs=1,
                               progress=False)
    assert summary.scenes_written == 3 and summary.pairs_written == 1
    again = generate_dataset(tmp_path, 3, size=256, seed=9, modalities=("optical", "sar"), progress=False)
    assert again.scenes_skipped == 3 and again.scenes_written == 0
    sar = cv2.imread(str(tmp_path / "sar" / "images" / "synthrs_9_000000.png"), cv2.IMREAD_UNCHANGED)
    assert sar.shape == (256, 256)
    gts = [read_dota_labels(tmp_path / "labelTxt" / f"synthrs_9_{i:06d}.txt") for i in range(3)]
    for i, gt in enumerate(gts):
        np.testing.assert_allclose(gt.polygons, make_scene(9, i, 256).labels().polygons, atol=1e-9)
    assert (tmp_path / "pairs" / "transforms" / "synthrs_9_10000000.txt").is_file()
    for cls in {c for gt in gts for c in gt.classes}:
        idx = [(k, p, d) for k, gt in enumerate(gts) for p, c, d in zip(gt.polygons, gt.classes, gt.difficult)
               if c == cls]
        images, polys, difficult = zip(*idx)
        result = evaluate_detections(images, np.ones(len(idx)), np.array(polys), images, np.array(polys), difficult)
        assert result.ap == pytest.approx(1.0) or all(difficult)


def test_cli_writes_a_dataset(tmp_path, capsys):
    from cstf_edge.cli import synth

    parser = argparse.ArgumentParser()
    synth.register(parser.add_subparsers())
    args = parser.parse_args(["synth", str(tmp_path), "--n", "2", "--size", "128", "--classes", "ship=2",
                              "--no-progress"])
    assert args.run(args) == 0
    assert "2 scenes written" in capsys.readouterr().out
    labels = read_dota_labels(tmp_path / "labelTxt" / "synthrs_0_000001.txt")
    assert labels.classes == ["ship", "ship"]


def _tank_grid(cell: int = 64, cells: int = 4) -> tuple[Scene, Scene]:
    """A plain grass scene with one storage tank (plain roof, no shadow) per cell at sub-pixel centres,
    and the same scene without them: their difference is the tanks' pixels."""
    rng = np.random.default_rng(42)

    def plain():
        return Scene(5, 0, cell * cells, "land", 1.0, Material.GRASS, conditions=Conditions(jpeg_quality=None))

    scene, bare = plain(), plain()
    for k in range(cells * cells):
        cx, cy = (np.array([k % cells, k // cells]) + 0.5) * cell + rng.uniform(-4, 4, 2)
        tank = make_object(rng, "storage-tank", cx, cy, 0.0, 1.0, length_m=float(rng.uniform(24, 36)), variant=0)
        tank.height_px = 0.0
        scene.objects.append(tank)
    return scene, bare


def _centroid_offsets(with_objects: np.ndarray, without: np.ndarray, polygons: np.ndarray) -> np.ndarray:
    """Per labelled polygon: centroid of the changed pixels near it (continuous coordinates, pixel centre
    at +0.5) minus the polygon's centre."""
    changed = np.abs(with_objects.astype(np.float32) - without).mean(axis=2) > 2.0
    ys, xs = np.nonzero(changed)
    points = np.stack([xs + 0.5, ys + 0.5], axis=1)
    centres = polygons.mean(axis=1)
    nearest = np.argmin(((points[:, None] - centres[None]) ** 2).sum(-1), axis=1)
    return np.stack([points[nearest == k].mean(axis=0) - centres[k] for k in range(len(centres))])


def test_objects_are_drawn_centred_on_their_labels_also_after_a_flip():
    scene, bare = _tank_grid()
    image, plain = render(scene), render(bare)
    polygons = scene.labels().polygons
    flipped = flip(AugmentState(image, polygons), "horizontal")
    flipped_plain = flip(AugmentState(plain, polygons[:0]), "horizontal")
    for offsets in (_centroid_offsets(image, plain, polygons),
                    _centroid_offsets(flipped.image, flipped_plain.image, flipped.polygons)):
        # No systematic offset (the old integer-centre drawing put every object +0.5 px off in x and y).
        assert np.abs(offsets.mean(axis=0)).max() < 0.1, offsets.mean(axis=0)
        # Each object: x within 0.25 px; cv2's anti-aliased fill rounds y to whole pixels, so y within 0.5.
        assert np.abs(offsets[:, 0]).max() < 0.25 and np.abs(offsets[:, 1]).max() < 0.5, offsets


def test_pair_transform_is_in_continuous_pixel_coordinates():
    size = 96
    transform = random_similarity(np.random.default_rng(3), size)
    image = np.zeros((size, size), np.float32)
    row, col = 40, 51  # one reference pixel: its centre is (51.5, 40.5) in the continuous convention
    image[row - 3 : row + 4, col - 3 : col + 4] = cv2.getGaussianKernel(7, 1.2) @ cv2.getGaussianKernel(7, 1.2).T
    warped = warp_image(image, transform, size)
    ys, xs = np.mgrid[:size, :size]
    landed = np.array([(warped * (xs + 0.5)).sum(), (warped * (ys + 0.5)).sum()]) / warped.sum()
    expected = (transform @ [col + 0.5, row + 0.5, 1.0])[:2]
    np.testing.assert_allclose(landed, expected, atol=0.1)


def test_box_frame_to_image_is_the_one_box_frame():
    rboxes = np.array([[10.0, 20.0, 8.0, 2.0, 0.3], [-4.0, 7.5, 3.0, 5.0, -1.2]])
    corners = np.array([[-0.5, -0.5], [0.5, -0.5], [0.5, 0.5], [-0.5, 0.5]])
    np.testing.assert_array_equal(box_frame_to_image(rboxes, corners), rbox_to_poly(rboxes))
    site = Site(10.0, 20.0, 8.0, 2.0, 0.3)
    np.testing.assert_allclose(site.point(4.0, -1.0), rbox_to_poly(rboxes[0])[1])
    ship = make_object(np.random.default_rng(0), "ship", 50.0, 60.0, 2.5, 0.5)
    np.testing.assert_allclose(ship.to_image(corners), rbox_to_poly([ship.cx, ship.cy, ship.length, ship.width,
                                                                     ship.heading]))


def test_synth_classes_live_with_the_other_class_lists():
    assert classes.SYNTH_CLASSES is SYNTH_CLASSES


def test_resume_with_other_parameters_is_refused(tmp_path):
    generate_dataset(tmp_path, 1, size=64, seed=2, progress=False)
    with pytest.raises(CstfError, match="size 64 on disk, 96 asked.*another folder"):
        generate_dataset(tmp_path, 2, size=96, seed=2, progress=False)
    with pytest.raises(CstfError, match="seed.*classes"):
        generate_dataset(tmp_path, 2, size=64, seed=3, classes="ship", progress=False)
    assert sorted(p.name for p in (tmp_path / "images").iterdir()) == ["synthrs_2_000000.png"]
    grown = generate_dataset(tmp_path, 2, size=64, seed=2, progress=False)  # more scenes: a resume
    assert grown.scenes_skipped == 1 and grown.scenes_written == 1
    generate_dataset(tmp_path, 1, size=64, seed=2, progress=False)
    assert json.loads((tmp_path / "synthrs.json").read_text())["n"] == 2  # the folder still holds 2


@pytest.mark.parametrize("kwargs, message", [
    ({"size": 0}, "size 0 px"), ({"size": 100_000}, "size 100000 px"), ({"seed": -1}, "seed -1"),
    ({"n": -1}, "--n"), ({"pairs": 2.5}, "--pairs"), ({"workers": 0}, "--workers"),
    ({"modalities": ["lidar"]}, "--modalities"), ({"classes": "tree"}, "tree"),
    ({"pair_modalities": ["sar"]}, "exactly two"),
])
def test_bad_arguments_are_refused_before_anything_is_written(tmp_path, kwargs, message):
    args = {"n": 1, "size": 64, **kwargs}
    with pytest.raises(CstfError, match=message):
        generate_dataset(tmp_path / "out", args.pop("n"), progress=False, **args)
    assert not (tmp_path / "out").exists()
