"""The one preprocessing of cstf-edge: letterbox to the network size, BGR -> RGB, /255, HWC -> CHW, float32.

Calibration, export checks, evaluation and inference all call :func:`preprocess_batch` (or the PyTorch
twin ``cstf_edge.model.detector.images_to_input``, and the CUDA twin in ``cstf_edge.runtime.cuda``, each
parity-tested against this numpy version). Its parameters (:class:`PreprocessSpec`) travel in every
artifact's metadata and are checked at load.

Letterbox rule (the training letterbox uses the same one): scale ``s = min(H_net / H, W_net / W)``,
resized size ``new_w = round(W * s)``, ``new_h = round(H * s)`` (bilinear, ``cv2.resize``), centred with
``left = (W_net - new_w) // 2``, ``top = (H_net - new_h) // 2``, the rest padded with ``pad_value``.
A point maps as ``x' = x * new_w / W + left``, ``y' = y * new_h / H + top`` (continuous pixel
coordinates, see ``cstf_edge.geometry.boxes``).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import cv2
import numpy as np

from cstf_edge.errors import CstfError

PAD_VALUE = 114


class PreprocessError(CstfError):
    """An image or a preprocessing setting the network cannot take."""


@dataclass(frozen=True)
class PreprocessSpec:
    """Network input size and the pixel conversion; ``to_metadata`` is what artifacts carry."""

    height: int
    width: int
    pad_value: int = PAD_VALUE
    channels: str = "RGB"
    scale: float = 1.0 / 255.0
    letterbox: bool = True

    def to_metadata(self) -> dict:
        return asdict(self)

    @classmethod
    def from_metadata(cls, meta: dict, height: int | None = None, width: int | None = None) -> "PreprocessSpec":
        """From an artifact's ``preprocess`` entry (which may lack the size: pass it then)."""
        known = {k: meta[k] for k in ("pad_value", "channels", "scale", "letterbox") if k in meta}
        return cls(height=int(meta.get("height", height)), width=int(meta.get("width", width)), **known)

    def mismatch(self, other: "PreprocessSpec") -> list[str]:
        """Human-readable differences between two specs (empty when they agree)."""
        mine, theirs = self.to_metadata(), other.to_metadata()
        return [f"{key}: {mine[key]!r} != {theirs[key]!r}" for key in mine
                if (abs(mine[key] - theirs[key]) > 1e-12 if key == "scale" else mine[key] != theirs[key])]


@dataclass(frozen=True)
class Letterbox:
    """How one image of ``src_w x src_h`` was placed in the network input."""

    src_w: int
    src_h: int
    new_w: int
    new_h: int
    left: int
    top: int

    @classmethod
    def fit(cls, src_h: int, src_w: int, spec: PreprocessSpec) -> "Letterbox":
        if src_h < 1 or src_w < 1:
            raise PreprocessError(f"image of {src_w} x {src_h} pixels has no area")
        scale = min(spec.height / src_h, spec.width / src_w)
        new_w, new_h = max(1, round(src_w * scale)), max(1, round(src_h * scale))
        return cls(src_w, src_h, new_w, new_h, (spec.width - new_w) // 2, (spec.height - new_h) // 2)

    def to_network(self) -> np.ndarray:
        """3 x 3 affine: original-image pixels -> network-input pixels."""
        return np.array([[self.new_w / self.src_w, 0.0, self.left],
                         [0.0, self.new_h / self.src_h, self.top], [0.0, 0.0, 1.0]])

    def points_to_image(self, points: np.ndarray) -> np.ndarray:
        """Network-input ``[..., 2]`` points -> original-image pixels (the inverse letterbox)."""
        out = np.array(points, dtype=np.float64, copy=True)
        out[..., 0] = (out[..., 0] - self.left) * (self.src_w / self.new_w)
        out[..., 1] = (out[..., 1] - self.top) * (self.src_h / self.new_h)
        return out


def check_image(image: np.ndarray) -> None:
    """Raise unless ``image`` is a uint8 ``H x W x 3`` BGR array."""
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        shape = getattr(image, "shape", None)
        dtype = getattr(image, "dtype", type(image).__name__)
        raise PreprocessError(f"expected a uint8 H x W x 3 BGR image, got {dtype} of shape {shape}; "
                              "convert it with cstf_edge.runtime.sources.to_bgr8")


def letterbox(image: np.ndarray, spec: PreprocessSpec) -> tuple[np.ndarray, Letterbox]:
    """uint8 BGR image -> uint8 BGR image of the network size, and its :class:`Letterbox`."""
    check_image(image)
    box = Letterbox.fit(image.shape[0], image.shape[1], spec)
    if (box.new_w, box.new_h, box.left, box.top) == (box.src_w, box.src_h, 0, 0) \
            and (spec.height, spec.width) == image.shape[:2]:
        return image, box
    resized = image
    if (box.new_w, box.new_h) != (box.src_w, box.src_h):
        resized = cv2.resize(image, (box.new_w, box.new_h), interpolation=cv2.INTER_LINEAR)
    pads = (box.top, spec.height - box.new_h - box.top, box.left, spec.width - box.new_w - box.left)
    out = cv2.copyMakeBorder(resized, *pads, cv2.BORDER_CONSTANT, value=(spec.pad_value,) * 3)
    return out, box


def to_tensor(images: np.ndarray, spec: PreprocessSpec | None = None) -> np.ndarray:
    """uint8 BGR ``[B, H, W, 3]`` at the network size -> float32 ``[B, 3, H, W]`` (RGB, times ``scale``)."""
    scale = 1.0 / 255.0 if spec is None else spec.scale
    if images.ndim != 4 or images.shape[-1] != 3:
        raise PreprocessError(f"expected uint8 [B, H, W, 3] images, got shape {images.shape}")
    if spec is not None and spec.channels not in ("RGB", "BGR"):
        raise PreprocessError(f"channels {spec.channels!r} is not RGB or BGR")
    order = (2, 1, 0) if spec is None or spec.channels == "RGB" else (0, 1, 2)  # output plane <- BGR plane
    out = np.empty((images.shape[0], 3) + images.shape[1:3], dtype=np.float32)
    for image, planes in zip(images, out):
        # cv2.split makes contiguous planes, so each multiply streams (0.7 against 1.1 ms for a strided
        # transpose of a 1024 x 1024 image on a 2-core AMD EPYC); the same float32 products either way.
        split = cv2.split(np.ascontiguousarray(image))
        for plane, source in zip(planes, order):
            np.multiply(split[source], np.float32(scale), out=plane, casting="unsafe")
    return out


def preprocess_batch(images, spec: PreprocessSpec) -> tuple[np.ndarray, list[Letterbox]]:
    """BGR uint8 images of any size -> the network input ``[B, 3, H, W]`` and each image's letterbox."""
    placed = [letterbox(image, spec) for image in images]
    if not placed:
        raise PreprocessError("no images to preprocess")
    return to_tensor(np.stack([p[0] for p in placed]), spec), [p[1] for p in placed]
