"""The DOTA image splitter (DOTA_devkit ImgSplit rules) and its inverse mapping."""
from __future__ import annotations

import argparse
import logging

import numpy as np
import pytest

from cstf_edge._io import read_image, write_image
from cstf_edge.cli import split as split_cli
from cstf_edge.data import ImageLabels
from cstf_edge.data.dota import read_dota_labels, write_dota_labels
from cstf_edge.data.split import (
    format_patch_name,
    patch_origin,
    patch_to_image,
    split_dataset,
    split_image,
    window_origins,
)
from cstf_edge.errors import CstfError, DataError

PATCH = "P1478__1__853___962"


def _rect(x0, y0, x1, y1):
    return [[x0, y0], [x1, y0], [x1, y1], [x0, y1]]


@pytest.mark.parametrize(
    "width, height, expected_lefts, expected_ups",
    [(1111, 1182, [0, 87], [0, 158]),  # P0706: 4 windows at gap 200
     (2000, 1024, [0, 824, 976], [0]),  # last window snapped to the edge
     (300, 200, [0], [0]),  # small image: one (padded) window
     (1024, 1025, [0], [0, 1])],
)
def test_window_origins_follow_the_devkit(width, height, expected_lefts, expected_ups):
    origins = window_origins(width, height, 1024, 200)
    assert origins == [(x, y) for x in expected_lefts for y in expected_ups]


def test_window_origins_reject_gap_not_below_subsize():
    with pytest.raises(ValueError, match="gap < subsize"):
        window_origins(100, 100, 64, 64)


def test_patch_names_and_origins():
    assert format_patch_name("P1478", 1.0, 853, 962) == PATCH
    assert format_patch_name("P0003", 0.5, 0, 10) == "P0003__0.5__0___10"
    assert patch_origin(PATCH) == ("P1478", 1.0, 853, 962)
    assert patch_origin("dir/P0003__0.5__0___10.png") == ("P0003", 0.5, 0, 10)
    assert patch_origin("a__b__1__2___3.txt") == ("a__b", 1.0, 2, 3)
    for bad in ("P0003", "P0003__x__1___2", "P0003__0__1___2", "P0003__1__1__2"):
        with pytest.raises(DataError, match="is not '<image>__<rate>__<left>___<up>'"):
            patch_origin(bad)


def test_patch_to_image_shapes_and_values():
    flat = np.array([[0.0, 0, 10, 0, 10, 5, 0, 5]])
    np.testing.assert_array_equal(patch_to_image(flat, "I__0.5__100___40"),
                                  [[200, 80, 220, 80, 220, 90, 200, 90]])
    assert patch_to_image(np.zeros((3, 4, 2)), PATCH).shape == (3, 4, 2)
    np.testing.assert_array_equal(patch_to_image([1.0, 2.0], PATCH), [854, 964])
    with pytest.raises(ValueError, match="shape"):
        patch_to_image(np.zeros((2, 5)), PATCH)


def test_real_patch_is_a_fixed_point(shared_data):
    """The devkit's output patch P1478__1__853___962 (its full image is not available), split again as a
    1024x1024 "full image", must come back unchanged: every non-degenerate object is already inside the
    window, so it keeps its polygon and difficult flag (including the five 2s the devkit wrote). The two
    zero-area slivers the devkit wrote (e.g. ``1 187 1 187 1 219 1 219``, clamped cut-offs) are dropped,
    as the devkit drops zero-area objects."""
    labels = read_dota_labels(shared_data / f"dota/split_patch/labelTxt/{PATCH}.txt")
    image = read_image(shared_data / f"dota/split_patch/images/{PATCH}.png")
    (name, patch, out), = list(split_image(image, labels))
    assert name == f"{PATCH}__1__0___0" and patch.shape == (1024, 1024, 3)
    np.testing.assert_array_equal(patch, image)
    x, y = labels.polygons[..., 0], labels.polygons[..., 1]
    nonzero = 0.5 * np.abs((x * np.roll(y, -1, 1) - np.roll(x, -1, 1) * y).sum(1)) > 0
    assert len(labels) == 295 and nonzero.sum() == 293
    np.testing.assert_array_equal(out.polygons, labels.polygons[nonzero])
    np.testing.assert_array_equal(out.difficult, labels.difficult[nonzero])
    assert out.classes == [c for c, keep in zip(labels.classes, nonzero) if keep]
    assert (out.difficult == 2).sum() == 3  # the other two 2s were the zero-area slivers


def _synthetic_cuts() -> ImageLabels:
    polys = [
        _rect(1000, 100, 1100, 140),  # 24% inside window 0 -> difficult 2
        _rect(1010, 200, 1030, 240),  # exactly 70% inside -> difficult 2 (<= thresh)
        _rect(1000, 300, 1030, 340),  # 80% inside -> keeps its flag (1)
        [[1004, 600], [1024, 580], [1044, 600], [1024, 620]],  # cut to a triangle -> dropped
        [[994, 500], [1014, 478], [1034, 500], [1014, 520]],  # cut to a pentagon -> 4 points
        [[5, 5], [5, 5], [5, 9], [5, 9]],  # zero area -> dropped everywhere
    ]
    return ImageLabels("S", np.array(polys, float), ["plane"] * 6, [0, 1, 1, 0, 0, 0])


def test_clipping_rules_on_synthetic_cuts():
    patches = {name: labels for name, _, labels in split_image(np.zeros((1024, 2000), np.uint8), _synthetic_cuts())}
    assert list(patches) == ["S__1__0___0", "S__1__824___0", "S__1__976___0"]
    first = patches["S__1__0___0"]
    np.testing.assert_array_equal(first.polygons, [
        _rect(1000, 100, 1024, 140),
        _rect(1010, 200, 1024, 240),
        _rect(1000, 300, 1024, 340),
        # shortest edge (1024,510)-(1014,520) of the pentagon merged into its midpoint (1019, 515)
        [[994, 500], [1014, 478], [1024, 489], [1019, 515]],
    ])
    assert first.difficult.tolist() == [2, 2, 1, 0]
    middle = patches["S__1__824___0"]  # every object but the sliver is fully inside: original polygons
    np.testing.assert_array_equal(middle.polygons, _synthetic_cuts().polygons[:5] - [824, 0])
    assert middle.difficult.tolist() == [0, 1, 1, 0, 0]


def test_cut_coordinates_are_clamped_to_one_and_subsize():
    labels = ImageLabels("C", np.array([_rect(-10.5, 20, 30, 60)]), ["ship"], [0])
    (_, _, out), = list(split_image(np.zeros((100, 100, 3), np.uint8), labels, subsize=64, gap=8))[:1]
    np.testing.assert_array_equal(out.polygons, [_rect(1, 20, 30, 60)])
    assert out.difficult.tolist() == [0]  # 30/40.5 = 0.74 inside


def test_split_then_map_back_restores_every_object():
    rng = np.random.default_rng(7)
    x0, y0 = rng.integers(0, 1900, 200), rng.integers(0, 1400, 200)
    w, h = rng.integers(2, 90, 200), rng.integers(2, 90, 200)
    labels = ImageLabels("R", np.array([_rect(*v) for v in zip(x0, y0, x0 + w, y0 + h)], float),
                         ["small-vehicle"] * 200, rng.integers(0, 2, 200))
    for rate, integer_coords in ((1.0, True), (0.5, False), (1.5, False)):
        found = set()
        for name, _, patch_labels in split_image(np.zeros((1500, 2000), np.uint8), labels, rate=rate,
                                                 integer_coords=integer_coords):
            back = patch_to_image(patch_labels.polygons, name)
            for poly in back:
                match = np.flatnonzero(np.abs(labels.polygons - poly).max(axis=(1, 2)) < 1e-9)
                found.update(match.tolist())
        assert found == set(range(200)), f"rate {rate}: objects {set(range(200)) - found} not restored"


def test_padding_rate_and_pixels():
    image = np.arange(200 * 300 * 3, dtype=np.uint32).reshape(200, 300, 3).astype(np.uint8)
    labels = ImageLabels.empty("small")
    (name, patch, out), = list(split_image(image, labels))
    assert name == "small__1__0___0" and patch.shape == (1024, 1024, 3) and len(out) == 0
    np.testing.assert_array_equal(patch[:200, :300], image)
    assert not patch[200:].any() and not patch[:, 300:].any()
    (_, unpadded, _), = list(split_image(image, labels, pad=False))
    assert unpadded.shape == (200, 300, 3)
    (name, half, _), = list(split_image(image, labels, rate=0.5, pad=False))
    assert name == "small__0.5__0___0" and half.shape == (100, 150, 3)


def test_split_dataset_and_cli(tmp_path, capsys):
    src = tmp_path / "src"
    write_image(src / "images" / "S.png", np.full((1024, 2000), 7, np.uint8))
    write_dota_labels(src / "labelTxt" / "S.txt", _synthetic_cuts())
    write_dota_labels(src / "labelTxt" / "orphan.txt", ImageLabels.empty("orphan"))
    summary = split_dataset(src, tmp_path / "dst", rates=(1.0, 0.5), progress=False)
    assert (summary.images, summary.skipped_labels) == (1, 1)
    assert summary.patches == 3 + 1 and summary.objects_in == 12
    first = read_dota_labels(tmp_path / "dst" / "labelTxt" / "S__1__0___0.txt")
    assert first.meta == {} and first.difficult.tolist() == [2, 2, 1, 0]
    assert read_image(tmp_path / "dst" / "images" / "S__0.5__0___0.png").shape == (1024, 1024, 3)

    parser = argparse.ArgumentParser(prog="cstf-edge")
    split_cli.register(parser.add_subparsers())
    args = parser.parse_args(["split", str(src), str(tmp_path / "cli"), "--subsize", "512", "--gap", "100"])
    assert args.run(args) == 0
    assert "split 1 images" in capsys.readouterr().out
    assert len(list((tmp_path / "cli" / "labelTxt").glob("S__1__*.txt"))) == 15  # lefts 0..1236 + 1488, ups 0, 412, 512
    with pytest.raises(CstfError, match="--subsize > --gap >= 0"):
        bad = parser.parse_args(["split", str(src), str(tmp_path / "x"), "--gap", "1024"])
        bad.run(bad)


@pytest.mark.parametrize("options, reason", [(["--thresh", "0"], "thresh"), (["--thresh", "1.5"], "thresh"),
                                             (["--gap", "-1"], "gap"), (["--subsize", "100", "--gap", "100"], "gap"),
                                             (["--rates", "0"], "rates")])
def test_cli_rejects_bad_options_in_one_line(tmp_path, caplog, options, reason):
    from cstf_edge.cli import main

    assert main(["split", str(tmp_path), str(tmp_path / "dst"), *options]) == 2
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and reason in errors[0] and "\n" not in errors[0]
    assert not (tmp_path / "dst").exists()


def test_cli_help_shows_one_percent_sign(capsys):
    from cstf_edge.cli import main

    with pytest.raises(SystemExit):
        main(["split", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "70% or less" in out and "%%" not in out


def test_cli_warns_when_dst_already_holds_patches(tmp_path, caplog):
    src = tmp_path / "src"
    write_image(src / "images" / "S.png", np.zeros((64, 64), np.uint8))
    write_dota_labels(src / "labelTxt" / "S.txt", ImageLabels.empty("S"))
    parser = argparse.ArgumentParser(prog="cstf-edge")
    split_cli.register(parser.add_subparsers())
    args = parser.parse_args(["split", str(src), str(tmp_path / "dst"), "--subsize", "64", "--gap", "0"])
    with caplog.at_level(logging.WARNING):
        assert args.run(args) == 0
        assert "already holds patches" not in caplog.text
        assert args.run(args) == 0
    assert "already holds patches" in caplog.text and str(tmp_path / "dst") in caplog.text
