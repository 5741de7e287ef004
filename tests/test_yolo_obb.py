"""YOLO-OBB reading: normalised corners to pixels, class ids to DOTA names, on Ultralytics DOTA8."""
from __future__ import annotations

import numpy as np
import pytest

from cstf_edge.data.classes import DOTA_V1_0_CLASSES
from cstf_edge.data.dota import read_dota_labels
from cstf_edge.data.yolo_obb import DOTA8_CLASSES, load_yolo_obb_dir, read_yolo_obb_labels
from cstf_edge.errors import DataError, LabelFormatError


def test_dota8_classes_are_dota_names_in_yaml_order():
    assert set(DOTA8_CLASSES) == set(DOTA_V1_0_CLASSES)
    assert DOTA8_CLASSES[:3] == ("plane", "ship", "storage-tank")
    assert DOTA8_CLASSES[9:11] == ("large-vehicle", "small-vehicle")


def test_scales_x_by_width_and_y_by_height(tmp_path):
    path = tmp_path / "a.txt"
    path.write_text("10 0.5 0.25 1 0.25 1 1 0.5 1\n\n")
    labels = read_yolo_obb_labels(path, (200, 100), DOTA8_CLASSES)
    np.testing.assert_allclose(labels.polygons[0], [[100, 25], [200, 25], [200, 100], [100, 100]])
    assert labels.classes == ["small-vehicle"] and labels.difficult.tolist() == [0]
    assert labels.image_id == "a"


@pytest.mark.parametrize("line, reason", [("15 0 0 1 0 1 1 0 1", "class id"), ("-1 0 0 1 0 1 1 0 1", "class id"),
                                          ("1 0 0 1 0 1 1 0", "9 fields"), ("1 0 0 1 0 1 1 0 nan", "not finite")])
def test_bad_lines_raise_or_warn(tmp_path, line, reason):
    path = tmp_path / "b.txt"
    path.write_text(f"0 0 0 1 0 1 1 0 1\n{line}\n")
    with pytest.raises(LabelFormatError, match=reason) as info:
        read_yolo_obb_labels(path, (10, 10), DOTA8_CLASSES)
    assert info.value.line == 2
    assert len(read_yolo_obb_labels(path, (10, 10), DOTA8_CLASSES, on_error="warn")) == 1


def test_dota8_loads_all_133_objects_in_pixels(shared_data):
    root = shared_data / "dota/dota8_yolo_obb"
    entries = []
    for split in ("train", "val"):
        entries += load_yolo_obb_dir(root / "images" / split, root / "labels" / split, DOTA8_CLASSES)
    assert len(entries) == 8 and sum(len(e) for e in entries) == 133
    first = next(e for e in entries if e.image_id == "P0861__1024__0___1648")
    # first line: "1 0.813477 0.523437 ..." on a 1024x1024 image
    assert first.classes[0] == "ship" and first.image_path.suffix == ".jpg"
    np.testing.assert_allclose(first.polygons[0, 0], [0.813477 * 1024, 0.523437 * 1024])
    # DOTA8 corners of objects cut by the patch border run a little past [0, 1]; they are kept as written.
    corners = np.concatenate([e.polygons.reshape(-1, 2) for e in entries])
    assert corners.min() >= -0.1 * 1024 and corners.max() <= 1.1 * 1024
    assert corners.max() > 1024


def test_dota8_agrees_with_dota_names_of_devkit_labels(shared_data):
    """The DOTA8 vehicles map to the same hyphenated names the DOTA label files use."""
    demo = read_dota_labels(shared_data / "dota/devkit_yolo_demo/labelTxt/P0003.txt", classes=DOTA8_CLASSES)
    assert set(demo.classes) == {"large-vehicle", "small-vehicle"}


def test_missing_folder_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="no such directory"):
        load_yolo_obb_dir(tmp_path / "images", tmp_path / "labels", DOTA8_CLASSES)


@pytest.mark.parametrize("line", ["0 512 100 600 100 600 140 512 140", "0 0.1 0.1 0.2 0.1 0.2 1.6 0.1 0.2",
                                  "0 -0.6 0.1 0.2 0.1 0.2 0.2 0.1 0.2"])
def test_pixel_coordinates_are_reported(tmp_path, caplog, line):
    path = tmp_path / "c.txt"
    path.write_text(f"0 0.1 0.1 0.2 0.1 0.2 0.2 0.1 0.2\n{line}\n")
    with pytest.raises(LabelFormatError, match="look like pixels.*normalised") as info:
        read_yolo_obb_labels(path, (1024, 1024), DOTA8_CLASSES)
    assert info.value.line == 2 and info.value.path == str(path)
    assert len(read_yolo_obb_labels(path, (1024, 1024), DOTA8_CLASSES, on_error="warn")) == 1
    assert f"{path}:2" in caplog.text


def test_corners_just_past_the_border_are_kept(tmp_path):
    path = tmp_path / "d.txt"
    path.write_text("0 -0.072 0.1 1.057 0.1 1.057 0.2 -0.072 0.2\n")
    assert len(read_yolo_obb_labels(path, (100, 100), DOTA8_CLASSES)) == 1
