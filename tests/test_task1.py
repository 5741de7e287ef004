"""DOTA Task1 result files: reading keeps file order, writing round-trips, malformed lines are named."""
from __future__ import annotations

import numpy as np
import pytest

from cstf_edge.data.task1 import (
    Task1Detections,
    parse_task1_text,
    read_task1_dir,
    read_task1_file,
    task1_path,
    write_task1_dir,
)
from cstf_edge.errors import DataError, LabelFormatError


def test_parse_keeps_file_order_and_values():
    text = "P2 0.5 1 2 3 4 5 6 7 8\n\nP1 0.9 1.5 2 3 4 5 6 7 8.25\r\nP2 0.5 0 0 1 0 1 1 0 1\n"
    dets = parse_task1_text(text)
    assert dets.image_ids == ["P2", "P1", "P2"]
    np.testing.assert_array_equal(dets.scores, [0.5, 0.9, 0.5])
    assert dets.polygons.shape == (3, 4, 2) and dets.polygons.dtype == np.float64
    np.testing.assert_array_equal(dets.polygons[1].reshape(-1), [1.5, 2, 3, 4, 5, 6, 7, 8.25])


@pytest.mark.parametrize(
    "bad_line, expected",
    [("P1 0.5 1 2 3 4 5 6 7", "10 fields"), ("P1 0.5 1 2 3 4 5 6 7 8 9", "10 fields"),
     ("P1 high 1 2 3 4 5 6 7 8", "number"), ("P1 0.5 1 2 3 4 5 6 7 x8", "number"),
     ("P1 nan 1 2 3 4 5 6 7 8", "not finite"), ("P1 0.5 1 2 3 4 5 6 7 inf", "not finite"),
     ("P1 0.5 1 2 3 4 5 6 7 -Infinity", "not finite"), ("P1 0.5 1 2 3 4 5 6 7 1e999", "not finite"),
     ("P1 0.5 1_0 2 3 4 5 6 7 8", "not a plain number"), ("P1 0.5 1 2 3 4 5 6 7 \uff18", "not a plain number")],
)
def test_malformed_line_names_file_and_line(tmp_path, bad_line, expected):
    path = tmp_path / "Task1_plane.txt"
    path.write_text("P0 0.1 1 2 3 4 5 6 7 8\n" + bad_line + "\nP0 0.2 1 2 3 4 5 6 7 8\n", encoding="utf-8")
    with pytest.raises(LabelFormatError, match=expected) as info:
        read_task1_file(path)
    assert info.value.path == str(path) and info.value.line == 2


def test_write_read_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    dets = {
        "plane": Task1Detections(["a", "b", "a"], [0.9, 0.25, 0.125], rng.uniform(0, 900, (3, 4, 2)).round(2)),
        "small-vehicle": Task1Detections.empty(),
    }
    written = write_task1_dir(tmp_path, dets)
    assert written == [task1_path(tmp_path, "plane"), task1_path(tmp_path, "small-vehicle")]
    back = read_task1_dir(tmp_path)
    assert sorted(back) == ["plane", "small-vehicle"]
    assert back["plane"].image_ids == ["a", "b", "a"]
    np.testing.assert_allclose(back["plane"].scores, dets["plane"].scores, atol=1e-6)
    np.testing.assert_allclose(back["plane"].polygons, dets["plane"].polygons, atol=1e-9)
    assert len(back["small-vehicle"]) == 0
    assert not list(tmp_path.glob(".*tmp"))  # atomic writes leave no temporaries
    # Requested classes without a file come back empty.
    assert len(read_task1_dir(tmp_path, classes=["ship"])["ship"]) == 0


def test_missing_dir_and_bad_class_name(tmp_path):
    with pytest.raises(DataError, match="no such results directory"):
        read_task1_dir(tmp_path / "absent")
    with pytest.raises(DataError, match="cannot be part"):
        write_task1_dir(tmp_path, {"bad name": Task1Detections.empty()})


def test_reads_the_real_result_files(shared_data):
    folder = shared_data / "dota" / "eval_example" / "result_classname"
    dets = read_task1_dir(folder)
    assert sorted(dets) == ["harbor", "large-vehicle", "ship", "small-vehicle"]
    assert sum(len(d) for d in dets.values()) == 470
    first = (folder / "Task1_ship.txt").read_text().splitlines()[0].split()
    assert dets["ship"].image_ids[0] == first[0]
    assert dets["ship"].scores[0] == float(first[1])
    np.testing.assert_array_equal(dets["ship"].polygons[0].reshape(-1), [float(v) for v in first[2:]])


def test_exponents_and_long_numbers_still_parse():
    dets = parse_task1_text("P_1 1e-05 1234.5678 +2 3. .5 5E2 6 7 8\n")
    assert dets.image_ids == ["P_1"] and dets.scores.tolist() == [1e-05]
    np.testing.assert_array_equal(dets.polygons.reshape(-1), [1234.5678, 2, 3, 0.5, 500, 6, 7, 8])
