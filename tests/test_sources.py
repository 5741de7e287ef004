"""Sources of ``cstf-edge run``: the conversion rule to uint8 BGR, image decoding with its typed errors,
rasters read window by window (rasterio), and SOURCE expansion (folders, globs, videos)."""
from __future__ import annotations

import struct

import cv2
import numpy as np
import pytest

from cstf_edge.errors import CstfError, DataError
from cstf_edge.runtime.source_list import resolve_sources
from cstf_edge.runtime.sources import (MIN_SIDE, ImageSizeError, SourceError, UnreadableImageError, choose_bands,
                                       compute_stretch, open_image, probe_image, read_bands, to_bgr8)

rasterio = None
try:
    import rasterio
except ImportError:  # the geo extra is optional
    pass

needs_rasterio = pytest.mark.skipif(rasterio is None, reason="needs rasterio (pip install cstf-edge[geo])")


def _ramp(height=64, width=80, dtype=np.uint16, scale=1000):
    y, x = np.mgrid[:height, :width]
    return ((x + y * width) * scale / (height * width)).astype(dtype)


# ---------------------------------------------------------------- the conversion rule
def test_uint8_three_bands_are_rgb_in_file_order_and_become_bgr():
    rgb = np.random.default_rng(0).integers(0, 256, (20, 30, 3), dtype=np.uint8)
    out = to_bgr8(rgb)
    assert out.dtype == np.uint8 and out.shape == (20, 30, 3) and out.flags.c_contiguous
    np.testing.assert_array_equal(out, rgb[..., ::-1])


def test_one_band_is_replicated_and_two_bands_use_the_first():
    gray = np.arange(200, dtype=np.uint8).reshape(10, 20)
    for image in (gray, gray[..., None], np.stack([gray, 255 - gray], axis=-1)):
        out = to_bgr8(image)
        assert out.shape == (10, 20, 3)
        for k in range(3):
            np.testing.assert_array_equal(out[..., k], gray)


def test_four_bands_take_the_first_three_or_the_chosen_ones():
    bands = np.stack([np.full((8, 8), v, np.uint8) for v in (10, 20, 30, 40)], axis=-1)
    assert to_bgr8(bands)[0, 0].tolist() == [30, 20, 10]  # R, G, B = bands 1, 2, 3 -> B, G, R
    assert to_bgr8(bands, bands=[4, 3, 2])[0, 0].tolist() == [20, 30, 40]  # false colour: R=4, G=3, B=2
    assert to_bgr8(bands, bands=[4])[0, 0].tolist() == [40, 40, 40]
    assert choose_bands(4) == [0, 1, 2] and choose_bands(1) == [0] and choose_bands(2) == [0]
    with pytest.raises(DataError, match="band"):
        to_bgr8(bands, bands=[5, 1, 2])
    with pytest.raises(CstfError, match="1 or 3"):
        to_bgr8(bands, bands=[1, 2])


def test_sixteen_bit_stretch_maps_the_2nd_and_98th_percentiles_to_0_and_255():
    band = _ramp(100, 100, np.uint16, scale=60000)
    low, high = np.percentile(band, (2, 98))
    out = to_bgr8(band)[..., 0].astype(int)
    assert out.min() == 0 and out.max() == 255
    assert np.all(out[band <= low] == 0) and np.all(out[band >= high] == 255)
    middle = (band > low) & (band < high)
    expected = (band[middle] - low) * 255.0 / (high - low)
    assert np.abs(out[middle] - expected).max() <= 1.0
    assert np.all(np.diff(out.ravel()) >= 0)  # monotonic on the ramp


def test_stretch_is_per_band():
    one = _ramp(50, 50, np.uint16, scale=1000)
    bands = np.stack([one, one * 10, one * 3 + 500], axis=-1).astype(np.uint16)
    out = to_bgr8(bands)
    np.testing.assert_array_equal(out[..., 0], out[..., 2])
    assert np.abs(out[..., 1].astype(int) - out[..., 0]).max() <= 1


def test_float_and_signed_inputs_with_nan_and_constant_bands():
    sar = np.random.default_rng(1).gamma(1.0, 0.1, (40, 40)).astype(np.float32)
    sar[0, :5] = np.nan
    out = to_bgr8(sar)
    assert out.dtype == np.uint8 and out[0, :5].tolist() == [[0, 0, 0]] * 5
    assert to_bgr8(np.full((9, 9), 7, np.int16)).max() == 0  # no division by zero
    dem = (np.random.default_rng(2).normal(0, 300, (30, 30))).astype(np.int16)
    assert to_bgr8(dem).std() > 10


def test_one_stretch_for_all_tiles_of_a_scene():
    scene = _ramp(300, 400, np.uint16, scale=50000)
    stretch = compute_stretch(scene[::4, ::4, None])
    whole = to_bgr8(scene, stretch=stretch)
    tile = to_bgr8(scene[100:200, 300:400], stretch=stretch)
    np.testing.assert_array_equal(tile, whole[100:200, 300:400])
    assert not np.array_equal(to_bgr8(scene[100:200, 300:400]), tile)  # a tile's own stretch would differ


# ---------------------------------------------------------------- decoding files, and their errors
def test_sixteen_bit_and_bgra_png_decode_by_the_rule(tmp_path):
    deep = _ramp(32, 48, np.uint16, scale=65000)
    cv2.imwrite(str(tmp_path / "deep.png"), deep)
    image = open_image(tmp_path / "deep.png").pixels
    assert image.dtype == np.uint8 and image.shape == (32, 48, 3) and image.max() == 255
    bgra = np.zeros((16, 16, 4), np.uint8)
    bgra[:] = (10, 20, 30, 255)  # OpenCV order: B, G, R, A
    cv2.imwrite(str(tmp_path / "alpha.png"), bgra)
    assert open_image(tmp_path / "alpha.png").pixels[0, 0].tolist() == [10, 20, 30]
    assert read_bands(tmp_path / "alpha.png")[0, 0].tolist() == [30, 20, 10, 255]  # file order R, G, B, A


def test_probe_reads_sizes_from_headers(tmp_path):
    image = np.zeros((37, 53, 3), np.uint8)
    for suffix in (".png", ".jpg", ".bmp", ".tif"):
        path = tmp_path / f"probe{suffix}"
        cv2.imwrite(str(path), image)
        kind, size = probe_image(path, path.read_bytes()[:4096])
        assert kind and size[:2] == (53, 37), (suffix, kind, size)


def _bad_files(folder):
    good = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    png, jpg = cv2.imencode(".png", good)[1].tobytes(), cv2.imencode(".jpg", good)[1].tobytes()
    files = {"empty.png": b"", "cut.png": png[: len(png) // 2], "cut.jpg": jpg[: len(jpg) // 2],
             "text.png": b"this is not an image\n" * 10, "tiny.png": cv2.imencode(".png", good[:1, :1])[1].tobytes()}
    for name, data in files.items():
        (folder / name).write_bytes(data)
    return files


@pytest.mark.parametrize("name, error, reason", [
    ("empty.png", UnreadableImageError, "empty file"), ("cut.png", UnreadableImageError, "truncated PNG"),
    ("cut.jpg", UnreadableImageError, "truncated JPEG"), ("text.png", UnreadableImageError, "not an image"),
    ("tiny.png", ImageSizeError, "too small"),
])
def test_bad_files_raise_typed_errors_naming_path_and_reason(tmp_path, name, error, reason):
    _bad_files(tmp_path)
    with pytest.raises(error, match=reason) as caught:
        open_image(tmp_path / name)
    assert isinstance(caught.value, SourceError) and isinstance(caught.value, DataError)
    assert caught.value.path == str(tmp_path / name) and str(tmp_path / name) in str(caught.value)
    assert MIN_SIDE > 1


def test_images_too_large_to_decode_are_refused_from_their_header(tmp_path):
    data = bytearray(cv2.imencode(".png", np.zeros((16, 16, 3), np.uint8))[1].tobytes())
    data[16:24] = struct.pack(">II", 40000, 40000)  # the IHDR says 40000 x 40000: 4.5 GiB of pixels
    (tmp_path / "huge.png").write_bytes(bytes(data))
    with pytest.raises(ImageSizeError, match="GeoTIFF"):
        open_image(tmp_path / "huge.png")
    with pytest.raises(ImageSizeError, match="limit"):
        open_image(_write(tmp_path / "ok.png", np.zeros((100, 100, 3), np.uint8)), max_bytes=10_000)


def _write(path, image):
    cv2.imwrite(str(path), image)
    return path


# ---------------------------------------------------------------- rasters through rasterio
def _geotiff(path, data, crs="EPSG:32633", transform=None, nodata=None, **profile):
    count = 1 if data.ndim == 2 else data.shape[0]
    with rasterio.open(path, "w", driver="GTiff", width=data.shape[-1], height=data.shape[-2], count=count,
                       dtype=data.dtype, crs=crs, transform=transform or rasterio.Affine(0.5, 0, 500000, 0, -0.5, 4600000),
                       nodata=nodata, **profile) as dst:
        dst.write(data if data.ndim == 3 else data[None])
    return path


@needs_rasterio
def test_raster_windows_share_one_stretch_and_keep_the_georeference(tmp_path):
    scene = _ramp(600, 700, np.uint16, scale=40000)
    opened = open_image(_geotiff(tmp_path / "pan.tif", scene, tiled=True, blockxsize=256, blockysize=256))
    reader = opened.pixels
    assert not opened.in_memory and (reader.width, reader.height) == (700, 600)
    whole = reader.read(0, 0, 700, 600)
    assert whole.shape == (600, 700, 3) and whole.dtype == np.uint8 and whole.max() == 255
    np.testing.assert_array_equal(reader.read(512, 256, 512, 512), whole[256:, 512:])  # clipped at the edges
    assert opened.geo.epsg == 32633 and opened.geo.transform[:3] == (0.5, 0.0, 500000.0)
    assert reader.overview(100).shape[1] == 100
    opened.close()


@needs_rasterio
@pytest.mark.filterwarnings("ignore:The given matrix is equal to Affine.identity")
def test_raster_bands_nodata_and_plain_tiffs(tmp_path):
    data = np.stack([np.full((40, 40), v, np.uint8) for v in (10, 20, 30, 40)])
    opened = open_image(_geotiff(tmp_path / "ms.tif", data), bands=[4, 3, 2])
    assert opened.pixels.read(0, 0, 8, 8)[0, 0].tolist() == [20, 30, 40]
    sar = _ramp(64, 64, np.uint16, scale=1000)
    sar[:32] = 65535  # nodata must not drive the stretch
    reader = open_image(_geotiff(tmp_path / "sar.tif", sar, nodata=65535)).pixels
    assert reader.read(0, 32, 64, 32)[..., 0].max() == 255 and reader.stretch.high[0] < 1000
    assert reader.read(0, 0, 64, 32).max() == 0  # nodata -> 0
    plain = open_image(_geotiff(tmp_path / "plain.tif", sar, crs=None, transform=rasterio.Affine.identity()))
    assert plain.geo is None


@needs_rasterio
def test_broken_raster_is_a_source_error(tmp_path):
    (tmp_path / "empty.tif").write_bytes(b"")
    with pytest.raises(UnreadableImageError, match="empty.tif"):
        open_image(tmp_path / "empty.tif")


# ---------------------------------------------------------------- SOURCE expansion
def test_folders_and_globs_expand_to_sorted_image_items(tmp_path):
    for name in ("b.png", "a.jpg", "c.tif"):
        _write(tmp_path / name, np.zeros((16, 16, 3), np.uint8))
    (tmp_path / "notes.txt").write_text("not a source")
    found = resolve_sources(str(tmp_path))
    assert found.total == 3 and [i.name for i in found.items] == ["a", "b", "c"]
    assert [i.name for i in resolve_sources([str(tmp_path / "*.png"), str(tmp_path / "a.jpg")]).items] == ["b", "a"]
    with pytest.raises(CstfError, match="no such file"):
        resolve_sources(str(tmp_path / "missing.png"))
    with pytest.raises(CstfError, match="matches no file"):
        resolve_sources(str(tmp_path / "*.webp"))
    (tmp_path / "sub").mkdir()
    _write(tmp_path / "sub" / "a.png", np.zeros((16, 16, 3), np.uint8))
    with pytest.raises(CstfError, match="same outputs"):
        resolve_sources([str(tmp_path), str(tmp_path / "sub")])


def test_videos_are_read_frame_by_frame(tmp_path):
    path = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 5.0, (64, 48))
    if not writer.isOpened():
        pytest.skip("this OpenCV build cannot write MJPG video")
    for k in range(4):
        writer.write(np.full((48, 64, 3), 40 * k, np.uint8))
    writer.release()
    found = resolve_sources(str(path))
    items = list(found.items)
    assert found.total == 4 and [i.name for i in items] == [f"clip_{k:06d}" for k in range(4)]
    assert items[2].open().pixels.shape == (48, 64, 3)
    assert [i.name for i in resolve_sources(str(path), max_frames=2).items] == ["clip_000000", "clip_000001"]
    (tmp_path / "broken.mp4").write_bytes(b"")
    (item,) = list(resolve_sources(str(tmp_path / "broken.mp4")).items)
    with pytest.raises(SourceError, match="cannot open"):
        item.open()
