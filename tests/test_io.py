"""Atomic writes: complete files with ordinary permissions, old content kept when a write fails."""
import os
import stat

import numpy as np
import pytest

from cstf_edge._io import atomic_write_bytes, atomic_write_text, read_image, write_image
from cstf_edge.errors import DataError


def test_atomic_write_replaces_and_uses_umask_mode(tmp_path):
    target = tmp_path / "sub" / "a.txt"
    atomic_write_text(target, "one\n")
    atomic_write_text(target, "two\n")
    assert target.read_text() == "two\n"
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~umask
    assert [p.name for p in target.parent.iterdir()] == ["a.txt"]  # no temporary left behind


def test_failed_write_keeps_the_old_file(tmp_path):
    target = tmp_path / "a.bin"
    atomic_write_bytes(target, b"old")
    with pytest.raises(TypeError):
        atomic_write_bytes(target, "not bytes")  # type: ignore[arg-type]
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["a.bin"]


def test_png_round_trip_is_lossless(tmp_path):
    image = np.random.default_rng(0).integers(0, 256, (37, 53, 3), dtype=np.uint8)
    path = write_image(tmp_path / "x.png", image)
    np.testing.assert_array_equal(read_image(path), image)


@pytest.mark.parametrize("content", [b"", b"\x89PNG\r\n\x1a\n truncated"])
def test_unreadable_images_name_the_file(tmp_path, content):
    path = tmp_path / "bad.png"
    path.write_bytes(content)
    with pytest.raises(DataError, match="bad.png"):
        read_image(path)
    with pytest.raises(DataError, match="no such image"):
        read_image(tmp_path / "missing.png")


def test_write_under_a_file_is_a_data_error_naming_the_path(tmp_path):
    blocker = tmp_path / "out"
    blocker.write_text("a file, not a folder")
    target = blocker / "labelTxt" / "a.txt"
    with pytest.raises(DataError, match=f"{target}: cannot create a file") as info:
        atomic_write_text(target, "x")
    assert "Not a directory" in str(info.value) or "File exists" in str(info.value)
    assert isinstance(info.value.__cause__, OSError)


def test_write_onto_a_folder_is_a_data_error_and_leaves_no_temporary(tmp_path):
    (tmp_path / "a.png").mkdir()
    with pytest.raises(DataError, match="a.png: cannot write this file"):
        atomic_write_bytes(tmp_path / "a.png", b"data")
    assert [p.name for p in tmp_path.iterdir()] == ["a.png"]


def test_unreadable_image_is_a_data_error(tmp_path, monkeypatch):
    path = tmp_path / "x.png"
    path.write_bytes(b"\x89PNG")

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(np, "fromfile", refuse)
    with pytest.raises(DataError, match="x.png: cannot read this image.*Permission denied"):
        read_image(path)
