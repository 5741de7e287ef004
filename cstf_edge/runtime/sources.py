"""Where ``cstf-edge run`` reads its images from, and the one pixel conversion rule to uint8 BGR.

Sources (listed by ``cstf_edge.runtime.source_list``): an image file, a directory (its image, raster and
video files, not recursive), a glob (``'scenes/*.tif'``), a video file (frame by frame) or a camera index. Rasters (GeoTIFF/COG,
``.tif .tiff .vrt .jp2 .img``) open through rasterio when it is installed (``pip install cstf-edge[geo]``)
as a :class:`RasterWindows`, read window by window, so an 8000 x 8000 scene is never in memory whole.
Other images decode with OpenCV, but only when their header says the decoded pixels stay under
``MAX_DECODED_BYTES``; larger ones are refused with advice (a tiled GeoTIFF, or ``cstf-edge split``).

Conversion rule (:func:`to_bgr8`), the same for every source. Bands are numbered 1.. in file order
(R, G, B, ... for an RGB file):

1. bands: ``--bands`` picks 1 or 3 of them (1-based, e.g. ``4,3,2``); by default 1 or 2 bands -> band 1,
   3 or more -> bands 1, 2, 3 as R, G, B (a 4th band, alpha or near-infrared, is left out);
2. depth: uint8 is kept; any other type (uint16, int16, float, ...) is stretched per band linearly from
   its 2nd-98th percentile to 0-255 (clipped; NaN and nodata -> 0). The percentiles come from a decimated
   overview of the whole scene, so all tiles of one scene share one stretch;
3. one band is replicated to 3 (panchromatic, SAR); three are reordered R, G, B -> B, G, R.

A source that cannot be used (empty, truncated, not an image, too small, too large, unreadable) raises a
:class:`SourceError` naming the path and the reason; ``cstf-edge run`` reports it and goes on.
"""
from __future__ import annotations

import logging
import math
import struct
import warnings
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from cstf_edge.errors import CstfError, DataError
from cstf_edge.runtime.detector import ArrayWindows

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".jp2", ".pgm", ".ppm")
RASTER_SUFFIXES = (".tif", ".tiff", ".vrt", ".jp2", ".img")
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv")
MAX_DECODED_BYTES = 1 << 30  # an image OpenCV decodes whole may need at most this much for its pixels
MAX_UNPROBED_FILE_BYTES = 64 << 20  # a file whose header gives no size is decoded only below this
MIN_SIDE = 8  # pixels; anything smaller holds nothing to detect
STRETCH_PERCENTILES = (2.0, 98.0)
STRETCH_SAMPLE_PIXELS = 1 << 20  # the decimated overview the percentiles are computed on
_HEADER_BYTES = 1 << 18


class SourceError(DataError):
    """One source cannot be used; ``path`` and ``reason`` say which and why."""

    def __init__(self, path, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path, self.reason = str(path), reason


class UnreadableImageError(SourceError):
    """Empty, truncated, corrupt or not an image at all."""


class ImageSizeError(SourceError):
    """Too small to hold anything, or too large to decode whole."""


# ---------------------------------------------------------------- the conversion rule
@dataclass(frozen=True)
class Stretch:
    """Per-band linear stretch ``low -> 0``, ``high -> 255`` of the selected bands."""

    low: tuple[float, ...]
    high: tuple[float, ...]

    def apply(self, bands: np.ndarray) -> np.ndarray:
        """``[H, W, k]`` of any type -> uint8 ``[H, W, k]``."""
        out = np.empty(bands.shape, np.uint8)
        for k, (low, high) in enumerate(zip(self.low, self.high)):
            band = bands[..., k].astype(np.float32)
            band -= np.float32(low)
            band *= np.float32(255.0 / (high - low))
            np.clip(np.nan_to_num(band, copy=False, nan=0.0), 0.0, 255.0, out=band)
            out[..., k] = band
        return out


def choose_bands(count: int, bands=None) -> list[int]:
    """0-based band indices to use of ``count`` (rule 1 of the module docstring)."""
    if bands is None:
        return [0] if count < 3 else [0, 1, 2]
    picked = [int(b) for b in bands]
    if len(picked) not in (1, 3):
        raise CstfError(f"--bands takes 1 or 3 band numbers, got {len(picked)}: {picked}")
    if min(picked) < 1 or max(picked) > count:
        raise DataError(f"--bands {','.join(map(str, picked))} asks for a band the image lacks (it has {count})")
    return [b - 1 for b in picked]


def decimate(array: np.ndarray, max_pixels: int = STRETCH_SAMPLE_PIXELS) -> np.ndarray:
    """Every n-th row and column, so that at most about ``max_pixels`` remain."""
    step = max(1, math.ceil(math.sqrt(array.shape[0] * array.shape[1] / max_pixels)))
    return array[::step, ::step]


def compute_stretch(sample: np.ndarray, nodata=None) -> Stretch:
    """2nd-98th percentile stretch of each band of ``sample`` ``[H, W, k]`` (NaN and ``nodata`` ignored)."""
    lows, highs = [], []
    for k in range(sample.shape[2]):
        values = np.asarray(sample[..., k]).ravel()
        valid = np.isfinite(values) if values.dtype.kind == "f" else np.ones(values.shape, bool)
        if nodata is not None:
            valid &= values != nodata
        values = values[valid].astype(np.float64)
        low, high = np.percentile(values, STRETCH_PERCENTILES) if values.size else (0.0, 1.0)
        lows.append(float(low))
        highs.append(float(high) if high > low else float(low) + 1.0)
    return Stretch(tuple(lows), tuple(highs))


def to_bgr8(array: np.ndarray, bands=None, stretch: Stretch | None = None) -> np.ndarray:
    """Bands in file order (``[H, W]`` or ``[H, W, C]``, any dtype) -> uint8 ``[H, W, 3]`` BGR by the rule of
    the module docstring. ``stretch`` (for non-uint8 data) defaults to one computed from ``array`` itself."""
    if array.ndim not in (2, 3):
        raise DataError(f"expected an image of shape [H, W] or [H, W, C], got {array.shape}")
    hwc = array[..., None] if array.ndim == 2 else array
    chosen = hwc[..., choose_bands(hwc.shape[2], bands)]
    if chosen.dtype != np.uint8:
        chosen = (stretch or compute_stretch(decimate(chosen))).apply(chosen)
    if chosen.shape[2] == 1:
        return np.ascontiguousarray(np.repeat(chosen, 3, axis=2))
    return np.ascontiguousarray(chosen[..., ::-1])


# ---------------------------------------------------------------- image headers and OpenCV decoding
def _png_size(head: bytes):
    if len(head) < 26 or head[12:16] != b"IHDR":
        return None
    width, height = struct.unpack(">II", head[16:24])
    channels = {0: 1, 2: 3, 3: 3, 4: 2, 6: 4}.get(head[25], 4)
    return width, height, channels * max(1, head[24] // 8)


def _jpeg_size(head: bytes):
    i = 2
    while i + 9 < len(head):
        if head[i] != 0xFF:
            return None
        marker = head[i + 1]
        if marker == 0xFF:
            i += 1
            continue
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            height, width = struct.unpack(">HH", head[i + 5:i + 9])
            return width, height, max(3, head[i + 9])
        i += 2 + struct.unpack(">H", head[i + 2:i + 4])[0]
    return None


def _bmp_size(head: bytes):
    if len(head) < 30:
        return None
    width, height = struct.unpack("<ii", head[18:26])
    return abs(width), abs(height), max(3, struct.unpack("<H", head[28:30])[0] // 8)


def _tiff_size(path: Path, head: bytes):
    """Size from the first IFD of a classic TIFF (BigTIFF: None)."""
    order = "<" if head[:2] == b"II" else ">"
    if struct.unpack(order + "H", head[2:4])[0] != 42:
        return None
    tags = {}
    with open(path, "rb") as handle:
        handle.seek(struct.unpack(order + "I", head[4:8])[0])
        count = struct.unpack(order + "H", handle.read(2))[0]
        table = handle.read(12 * count)
    for n in range(len(table) // 12):
        tag, kind, number = struct.unpack(order + "HHI", table[12 * n:12 * n + 8])
        value = table[12 * n + 8:12 * n + 12]
        tags[tag] = (struct.unpack(order + "H", value[:2])[0] if kind == 3 else struct.unpack(order + "I", value)[0],
                     number)
    if 256 not in tags or 257 not in tags:
        return None
    samples = tags.get(277, (1, 1))[0]
    bits = tags[258][0] if 258 in tags and tags[258][1] * 2 <= 4 else 16  # values elsewhere: assume 16 bit
    return tags[256][0], tags[257][0], samples * max(1, bits // 8)


def probe_image(path: Path, head: bytes) -> tuple[str, tuple[int, int, int] | None]:
    """The format and ``(width, height, bytes per pixel)`` from the header, without decoding.
    Format ``""`` when unrecognised; size None when the header does not give it."""
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG", _png_size(head)
    if head.startswith(b"\xff\xd8"):
        return "JPEG", _jpeg_size(head)
    if head.startswith(b"BM"):
        return "BMP", _bmp_size(head)
    if head[:4] in (b"II*\x00", b"MM\x00*"):
        try:
            return "TIFF", _tiff_size(path, head)
        except (struct.error, OSError):  # a cut header: decoding will say what is wrong
            return "TIFF", None
    return "", None


def _truncated(kind: str, data: np.ndarray) -> bool:
    """A PNG without its IEND chunk, or a JPEG without an end-of-image marker after its first scan."""
    if kind == "PNG":
        return b"IEND" not in data[-32:].tobytes()
    if kind == "JPEG":
        raw = data.tobytes()
        scan = raw.find(b"\xff\xda")
        return scan < 0 or raw.find(b"\xff\xd9", scan) < 0
    return False


def _check_decodable(path: Path, kind: str, size, file_bytes: int, max_bytes: int) -> None:
    if size is None:
        if file_bytes > MAX_UNPROBED_FILE_BYTES:
            raise ImageSizeError(path, f"{file_bytes / 2**20:.0f} MiB {kind or 'file'} whose header does not "
                                 "give its size; convert it to a tiled GeoTIFF to read it window by window")
        return
    width, height, per_pixel = size
    check_side(path, width, height)
    need = width * height * max(3, per_pixel)
    if need > max_bytes:
        raise ImageSizeError(path, f"decoding it whole needs {need / 2**30:.1f} GiB ({width} x {height} px), above "
                             f"the {max_bytes / 2**30:.1f} GiB limit; convert it to a tiled GeoTIFF (gdal_translate "
                             "-co TILED=YES) and pip install cstf-edge[geo] to read it window by window, or cut "
                             "it into tiles with cstf-edge split")


def check_side(path, width: int, height: int) -> None:
    """Refuse images with a side under ``MIN_SIDE`` pixels."""
    if min(width, height) < MIN_SIDE:
        raise ImageSizeError(path, f"{width} x {height} px is too small (each side must be at least {MIN_SIDE} px)")


def read_bands(path: str | Path, max_bytes: int = MAX_DECODED_BYTES) -> np.ndarray:
    """Decode an image file with OpenCV, unchanged (8/16-bit, float, 1-4 channels), bands in file order."""
    path = Path(path)
    try:
        data = np.fromfile(path, dtype=np.uint8)
    except OSError as exc:
        raise UnreadableImageError(path, f"cannot read it ({exc.strerror or exc})") from None
    if data.size == 0:
        raise UnreadableImageError(path, "empty file (0 bytes)")
    kind, size = probe_image(path, data[:_HEADER_BYTES].tobytes())
    _check_decodable(path, kind, size, data.size, max_bytes)
    if _truncated(kind, data):
        raise UnreadableImageError(path, f"truncated {kind} (the file ends before the image does)")
    image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    if image is None:
        what = f"corrupt or truncated {kind}" if kind else "not an image OpenCV can read (unrecognised content)"
        raise UnreadableImageError(path, what)
    check_side(path, image.shape[1], image.shape[0])
    if image.ndim == 3 and image.shape[2] >= 3:  # OpenCV's BGR(A) -> file order R, G, B(, A)
        image = image[..., [2, 1, 0] + list(range(3, image.shape[2]))]
    return image


# ---------------------------------------------------------------- rasters through rasterio
@dataclass(frozen=True)
class GeoInfo:
    """Georeferencing of a raster: the affine ``transform`` ``(a, b, c, d, e, f)`` maps continuous pixel
    coordinates ``(x, y)`` to ``(a x + b y + c, d x + e y + f)`` in ``crs`` (None when unknown)."""

    transform: tuple[float, float, float, float, float, float]
    crs: str | None = None
    epsg: int | None = None
    crs_wkt: str | None = None


def rasterio_available() -> bool:
    """Whether the geo extra (rasterio) is installed."""
    try:
        import rasterio  # noqa: F401
    except ImportError:
        return False
    return True


class RasterWindows:
    """:class:`~cstf_edge.runtime.detector.WindowReader` over a raster opened with rasterio; windows come back
    as uint8 BGR by the conversion rule, with one stretch for the whole scene."""

    def __init__(self, path: str | Path, bands=None):
        import rasterio
        from rasterio.errors import NotGeoreferencedWarning, RasterioError

        self.path = Path(path)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", NotGeoreferencedWarning)
                self.dataset = rasterio.open(self.path)
        except (RasterioError, OSError) as exc:
            raise UnreadableImageError(self.path, f"rasterio cannot open it ({exc})") from None
        self.width, self.height = self.dataset.width, self.dataset.height
        try:
            check_side(self.path, self.width, self.height)
            self.indexes = [i + 1 for i in choose_bands(self.dataset.count, bands)]
            self.stretch = None if self._all_uint8() else self._overview_stretch()
        except Exception:
            self.close()
            raise
        self.geo = raster_geo(self.dataset)

    def _all_uint8(self) -> bool:
        return all(self.dataset.dtypes[i - 1] == "uint8" for i in self.indexes)

    def _read(self, **kwargs) -> np.ndarray:
        try:
            return self.dataset.read(self.indexes, **kwargs)
        except Exception as exc:  # rasterio and GDAL raise many types for a bad block
            raise UnreadableImageError(self.path, f"rasterio cannot read it ({exc})") from None

    def overview_bands(self, max_side: int, masked: bool = False) -> np.ndarray:
        """The selected bands decimated to at most ``max_side`` px, ``[h, w, k]`` in file order."""
        from rasterio.enums import Resampling

        scale = min(1.0, max_side / max(self.width, self.height))
        shape = (len(self.indexes), max(1, round(self.height * scale)), max(1, round(self.width * scale)))
        return np.moveaxis(self._read(out_shape=shape, masked=masked, resampling=Resampling.nearest), 0, -1)

    def _overview_stretch(self) -> Stretch:
        side = int(math.sqrt(STRETCH_SAMPLE_PIXELS))
        sample = self.overview_bands(side, masked=True)
        return compute_stretch(np.ma.filled(sample.astype(np.float64), np.nan))

    def overview(self, max_side: int) -> np.ndarray:
        """uint8 BGR of the whole scene at most ``max_side`` px on its long side (for drawing)."""
        return to_bgr8(np.ma.getdata(self.overview_bands(max_side)), stretch=self.stretch)

    def read(self, left: int, up: int, width: int, height: int) -> np.ndarray:
        from rasterio.windows import Window

        width, height = min(width, self.width - left), min(height, self.height - up)
        if width <= 0 or height <= 0:
            return np.zeros((max(height, 0), max(width, 0), 3), np.uint8)
        nodata = self.stretch is not None and any(v is not None for v in self.dataset.nodatavals)
        data = self._read(window=Window(left, up, width, height), masked=nodata)
        if nodata:  # nodata -> NaN -> 0 through the stretch
            data = np.ma.filled(data.astype(np.float32), np.nan)
        return to_bgr8(np.moveaxis(data, 0, -1), stretch=self.stretch)

    def close(self) -> None:
        self.dataset.close()


def raster_geo(dataset) -> GeoInfo | None:
    """The georeferencing of an open rasterio dataset, or None when it has none."""
    transform, crs = dataset.transform, dataset.crs
    if crs is None and transform.is_identity:
        return None
    if crs is None:
        return GeoInfo(tuple(transform)[:6])
    return GeoInfo(tuple(transform)[:6], crs.to_string(), crs.to_epsg(), crs.to_wkt())


# ---------------------------------------------------------------- opened images and source items
@dataclass
class OpenedImage:
    """One image ready for ``Detector.detect_large``: ``pixels`` is uint8 BGR in memory or a window reader."""

    pixels: np.ndarray | RasterWindows
    geo: GeoInfo | None = None

    @property
    def reader(self):
        return ArrayWindows(self.pixels) if isinstance(self.pixels, np.ndarray) else self.pixels

    @property
    def in_memory(self) -> bool:
        return isinstance(self.pixels, np.ndarray)

    @property
    def size(self) -> tuple[int, int]:
        """``(width, height)``."""
        return self.reader.width, self.reader.height

    def close(self) -> None:
        if not self.in_memory:
            self.pixels.close()


def open_image(path: str | Path, bands=None, max_bytes: int = MAX_DECODED_BYTES) -> OpenedImage:
    """A raster through rasterio (when installed) or any image through OpenCV, by the conversion rule."""
    path = Path(path)
    if not path.is_file():
        raise UnreadableImageError(path, "no such file")
    if path.suffix.lower() in RASTER_SUFFIXES and rasterio_available():
        raster = RasterWindows(path, bands)
        return OpenedImage(raster, raster.geo)
    if path.suffix.lower() in (".vrt", ".img"):
        raise UnreadableImageError(path, "needs rasterio: pip install cstf-edge[geo]")
    try:
        return OpenedImage(to_bgr8(read_bands(path, max_bytes), bands))
    except DataError as exc:
        raise exc if isinstance(exc, SourceError) else SourceError(path, str(exc)) from None
