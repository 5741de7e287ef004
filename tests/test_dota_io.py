"""DOTA labelTxt reading/writing and DOTA-layout directories, on real label files and crafted bad lines."""
from __future__ import annotations

import logging

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cstf_edge.data import ImageLabels
from cstf_edge.data.dota import (
    DOTA_V1_0_CLASSES,
    DOTA_V1_5_CLASSES,
    DOTA_V2_0_CLASSES,
    find_images,
    load_dota_dir,
    read_dota_labels,
    write_dota_labels,
)
from cstf_edge.errors import DataError, LabelFormatError


def _write(tmp_path, text: str, name: str = "P0001.txt"):
    path = tmp_path / name
    path.write_bytes(text.encode("utf-8"))
    return path


def test_class_lists_are_the_official_ones():
    assert len(DOTA_V1_0_CLASSES) == 15 and len(set(DOTA_V1_0_CLASSES)) == 15
    assert set(DOTA_V1_5_CLASSES) - set(DOTA_V1_0_CLASSES) == {"container-crane"}
    assert set(DOTA_V2_0_CLASSES) - set(DOTA_V1_5_CLASSES) == {"airport", "helipad"}
    assert {"small-vehicle", "ground-track-field", "soccer-ball-field"} <= set(DOTA_V1_0_CLASSES)


def test_reads_header_crlf_integers_and_optional_difficult(tmp_path):
    path = _write(tmp_path, "'imagesource':GF\r\ngsd:1\r\n1 2 3 4 5 6 7 8 small-vehicle 1\r\n"
                            "1.5 2 3 4 5 6 7 8.25 plane\r\n\r\n")
    labels = read_dota_labels(path, classes=DOTA_V1_0_CLASSES)
    assert labels.image_id == "P0001"
    assert labels.meta == {"imagesource": "GF", "gsd": "1"}
    assert labels.classes == ["small-vehicle", "plane"]
    assert labels.difficult.tolist() == [1, 0]
    np.testing.assert_array_equal(labels.polygons[1].reshape(8), [1.5, 2, 3, 4, 5, 6, 7, 8.25])


@pytest.mark.parametrize(
    "line, reason",
    [
        ("1 2 3 4 5 6 7 plane 0", "'plane' is not a number"),
        ("1 2 3 4 5 6 7 8", "fields"),
        ("1 2 3 4 5 6 7 x plane 0", "not a number"),
        ("1 2 3 4 5 6 7 nan plane 0", "not finite"),
        ("1 2 3 4 5 6 7 inf plane 0", "not finite"),
        ("1 2 3 4 5 6 7 1_0 plane 0", "not a plain number"),
        ("1 2 3 4 5 6 7 \uff18 plane 0", "not a plain number"),
        ("1 2 3 4 5 6 7 8 plane 3", "difficult"),
        ("1 2 3 4 5 6 7 8 small_vehicle 0", "not one of"),
        ("1 2 3 4 5 6 7 8 plane 0 extra", "fields"),
    ],
)
def test_malformed_line_raises_with_file_and_line(tmp_path, line, reason):
    path = _write(tmp_path, f"imagesource:GoogleEarth\ngsd:0.1\n1 2 3 4 5 6 7 8 plane 0\n{line}\n")
    with pytest.raises(LabelFormatError, match=reason) as info:
        read_dota_labels(path, classes=DOTA_V1_0_CLASSES)
    assert info.value.line == 4 and info.value.path == str(path)
    assert f"{path}:4:" in str(info.value)


def test_warn_mode_skips_bad_line_and_names_it(tmp_path, caplog):
    path = _write(tmp_path, "1 2 3 4 5 6 7 8 plane 0\n1 2 3 4 oops 6 7 8 ship 0\n9 9 9 9 9 9 9 9 ship 2\n")
    with caplog.at_level(logging.WARNING):
        labels = read_dota_labels(path, on_error="warn")
    assert labels.classes == ["plane", "ship"] and labels.difficult.tolist() == [0, 2]
    assert f"{path}:2" in caplog.text


def test_unknown_on_error_and_missing_file(tmp_path):
    with pytest.raises(ValueError, match="on_error"):
        read_dota_labels(_write(tmp_path, ""), on_error="ignore")
    with pytest.raises(DataError, match="no such label file"):
        read_dota_labels(tmp_path / "absent.txt")


@settings(max_examples=50, deadline=None)
@given(st.lists(st.floats(-1e5, 1e5, allow_nan=False), min_size=8, max_size=8),
       st.sampled_from(DOTA_V2_0_CLASSES), st.integers(0, 2))
def test_write_then_read_gives_the_same_floats(tmp_path_factory, coords, name, difficult):
    folder = tmp_path_factory.mktemp("rt")
    labels = ImageLabels("P9", np.array(coords), [name], [difficult], meta={"imagesource": "GF", "gsd": "0.5"})
    back = read_dota_labels(write_dota_labels(folder / "P9.txt", labels))
    np.testing.assert_array_equal(back.polygons, labels.polygons)
    assert back.classes == [name] and back.difficult.tolist() == [difficult] and back.meta == labels.meta


def test_written_lines_are_short_and_headerless_on_request(tmp_path):
    labels = ImageLabels("P1", np.arange(8.0).reshape(1, 4, 2), ["plane"], [1])
    text = write_dota_labels(tmp_path / "P1.txt", labels, header=False).read_text()
    assert text == "0.0 1.0 2.0 3.0 4.0 5.0 6.0 7.0 plane 1\n"
    with pytest.raises(DataError, match="non-finite"):
        write_dota_labels(tmp_path / "bad.txt", ImageLabels("P2", np.full((1, 8), np.nan), ["plane"], [0]))


def test_every_real_label_file_parses(shared_data):
    files = sorted((shared_data / "dota").rglob("labelTxt*/*.txt"))
    assert len(files) >= 10
    for path in files:
        lines = [line for line in path.read_text().splitlines() if line.strip()]
        n_header = sum(line.split(":")[0].strip("'") in ("imagesource", "gsd") for line in lines)
        labels = read_dota_labels(path, classes=DOTA_V1_5_CLASSES)
        assert len(labels) == len(lines) - n_header, path
        assert np.isfinite(labels.polygons).all()
    p1234 = read_dota_labels(shared_data / "dota/devkit_example/labelTxt_image_missing/P1234.txt")
    assert p1234.meta == {"imagesource": "GF", "gsd": "1"}
    patch = read_dota_labels(shared_data / "dota/split_patch/labelTxt/P1478__1__853___962.txt")
    assert len(patch) == 295 and int((patch.difficult == 2).sum()) == 5
    np.testing.assert_array_equal(patch.polygons[1].reshape(8), [1, 187, 1, 187, 1, 219, 1, 219])


def test_load_dota_dir_pairs_images_and_reports_orphans(tmp_path, shared_data, caplog):
    entries = load_dota_dir(shared_data / "dota/devkit_yolo_demo")
    assert [e.image_id for e in entries] == ["P0003", "P0004", "P0005"]
    assert [len(e) for e in entries] == [55, 107, 130]
    assert all(e.image_path is not None and e.image_path.is_file() for e in entries)
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "A.png").write_bytes(b"")
    _write(tmp_path / "images", "", "notes.md")
    (tmp_path / "labelTxt").mkdir()
    _write(tmp_path / "labelTxt", "1 2 3 4 5 6 7 8 plane 0\n", "B.txt")
    with caplog.at_level(logging.WARNING):
        entries = load_dota_dir(tmp_path)
    assert [(e.image_id, len(e), e.image_path is not None) for e in entries] == [("A", 0, True), ("B", 1, False)]
    assert "B" in caplog.text and "no image" in caplog.text
    with pytest.raises(DataError, match="DOTA-layout"):
        load_dota_dir(tmp_path / "nothing")


def test_file_system_errors_are_data_errors_naming_the_path(tmp_path):
    folder = tmp_path / "P0001.txt"
    folder.mkdir()
    with pytest.raises(DataError, match="P0001.txt: cannot read"):
        read_dota_labels(folder)
    not_a_folder = tmp_path / "images"
    not_a_folder.write_text("")
    with pytest.raises(DataError, match=f"{not_a_folder}: cannot list"):
        find_images(not_a_folder)
