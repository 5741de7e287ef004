"""Rotated-box-aware training augmentations (numpy + OpenCV, no PyTorch).

Every augmentation is a small callable ``step(state, rng) -> state`` over an :class:`AugmentState`, with
the random draws taken from the explicit ``numpy.random.Generator`` it is given, so a pipeline is
deterministic for a given seed. :class:`Compose` chains steps.

Geometry. Labels travel through the geometric steps as polygons ``[N, 4, 2]`` (the DOTA corners), which
each step maps with the very affine matrix it warps the pixels with; rotated boxes are made once at the
end (``cstf_edge.geometry.poly_to_rbox``), which is exact for flips, quarter turns, rotations and uniform
scales. Each state also carries ``transform``, the 3x3 matrix from original-image pixels to the current
image's pixels, the product of every geometric step so far (invert it to map predictions back).

Pixel coordinates (one place in this module: :func:`pixel_index_matrix`). Label coordinates are
continuous, with pixel ``(row i, column j)`` covering ``[j, j+1) x [i, i+1)``, so its centre is at
``(j + 0.5, i + 0.5)``. A horizontal flip is then ``x -> W - x`` and a resize by ``s`` is ``x -> s * x``,
which are exactly what ``cv2.flip`` and ``cv2.resize`` do to the pixels. OpenCV's ``warpAffine`` works on
pixel indices (centres at integers); :func:`pixel_index_matrix` converts a label-space matrix into the one
``warpAffine`` needs, so labels and pixels always move together.

Photometric steps (:class:`HSVJitter`) touch only pixel values; they draw independently for the query and
the reference image, while geometric steps move both identically.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from typing import Callable, Protocol, Sequence

import cv2
import numpy as np

from cstf_edge.errors import DataError
from cstf_edge.geometry import as_polygons

log = logging.getLogger(__name__)

PAD_VALUE = 114
"""Grey level of padding and of areas uncovered by a warp (the YOLO family's value)."""

_HALF_PIXEL = np.array([[1.0, 0.0, 0.5], [0.0, 1.0, 0.5], [0.0, 0.0, 1.0]])
_MINUS_HALF_PIXEL = np.array([[1.0, 0.0, -0.5], [0.0, 1.0, -0.5], [0.0, 0.0, 1.0]])


@dataclass
class AugmentState:
    """An image (uint8 HWC BGR), its object polygons ``[N, 4, 2]`` in its pixels, the 3x3 ``transform``
    from original pixels to its pixels, and an optional co-registered ``reference`` of the same shape."""

    image: np.ndarray
    polygons: np.ndarray
    transform: np.ndarray = field(default_factory=lambda: np.eye(3))
    reference: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.image.ndim != 3 or self.image.dtype != np.uint8:
            raise DataError(
                f"augmentation needs a uint8 HxWxC image, got {self.image.dtype} {self.image.shape}; "
                "read images with cstf_edge._io.read_image"
            )
        self.polygons = as_polygons(self.polygons).reshape(-1, 4, 2)
        self.transform = np.asarray(self.transform, dtype=np.float64).reshape(3, 3)
        if self.reference is not None and self.reference.shape[:2] != self.image.shape[:2]:
            raise DataError(
                f"reference image {self.reference.shape[:2]} and query image {self.image.shape[:2]} must "
                "have the same size (co-registered pair); resample the reference onto the query first"
            )

    @property
    def height(self) -> int:
        return int(self.image.shape[0])

    @property
    def width(self) -> int:
        return int(self.image.shape[1])


class Augmentation(Protocol):
    """What every step is: ``step(state, rng) -> state``."""

    def __call__(self, state: AugmentState, rng: np.random.Generator) -> AugmentState: ...


def pixel_index_matrix(affine: np.ndarray) -> np.ndarray:
    """The 2x3 matrix ``cv2.warpAffine`` needs to apply ``affine`` (3x3, label coordinates) to pixels."""
    return (_MINUS_HALF_PIXEL @ np.asarray(affine, dtype=np.float64) @ _HALF_PIXEL)[:2]


def transform_polygons(polygons: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """Map polygon corners ``[..., 4, 2]`` through a 3x3 (or 2x3) affine matrix."""
    matrix = np.asarray(affine, dtype=np.float64)
    pts = as_polygons(polygons)
    return pts @ matrix[:2, :2].T + matrix[:2, 2]


def _moved(state: AugmentState, affine: np.ndarray, warp: Callable[[np.ndarray], np.ndarray]) -> AugmentState:
    """Apply one geometric step: ``warp`` to the pixels of query and reference, ``affine`` to the labels."""
    reference = None if state.reference is None else warp(state.reference)
    return AugmentState(
        image=warp(state.image),
        polygons=transform_polygons(state.polygons, affine),
        transform=affine @ state.transform,
        reference=reference,
    )


def warp_affine(
    state: AugmentState,
    affine: np.ndarray,
    out_shape: tuple[int, int],
    border_value: int = PAD_VALUE,
    interpolation: int = cv2.INTER_LINEAR,
) -> AugmentState:
    """Warp a state with a 3x3 label-space ``affine`` onto an image of ``out_shape = (height, width)``."""
    index_matrix = pixel_index_matrix(affine)
    dsize = (int(out_shape[1]), int(out_shape[0]))

    def warp(img: np.ndarray) -> np.ndarray:
        out = cv2.warpAffine(
            img, index_matrix, dsize, flags=interpolation,
            borderMode=cv2.BORDER_CONSTANT, borderValue=(border_value,) * 3,
        )
        return out.reshape(out.shape[:2] + img.shape[2:])  # warpAffine drops a single channel axis

    return _moved(state, np.asarray(affine, dtype=np.float64), warp)


# ---------------------------------------------------------------- deterministic geometric operations

def flip(state: AugmentState, direction: str) -> AugmentState:
    """Exact mirror: ``"horizontal"`` maps ``x -> W - x``, ``"vertical"`` maps ``y -> H - y``."""
    if direction == "horizontal":
        affine = np.array([[-1.0, 0.0, state.width], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
        axis = 1
    elif direction == "vertical":
        affine = np.array([[1.0, 0.0, 0.0], [0.0, -1.0, state.height], [0.0, 0.0, 1.0]])
        axis = 0
    else:
        raise ValueError(f"flip direction must be 'horizontal' or 'vertical', got {direction!r}")
    return _moved(state, affine, lambda img: np.ascontiguousarray(np.flip(img, axis=axis)))


def rot90(state: AugmentState, quarter_turns: int) -> AugmentState:
    """Exact rotation by ``quarter_turns`` x 90 degrees clockwise on screen (y points down).

    One clockwise turn maps ``(x, y) -> (H - y, x)`` and swaps the image's height and width; a box's
    angle grows by ``pi/2`` (then canonicalised), its ``w`` and ``h`` are unchanged.
    """
    k = int(quarter_turns) % 4
    h, w = state.height, state.width
    affines = {
        0: np.eye(3),
        1: np.array([[0.0, -1.0, h], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]),
        2: np.array([[-1.0, 0.0, w], [0.0, -1.0, h], [0.0, 0.0, 1.0]]),
        3: np.array([[0.0, 1.0, 0.0], [-1.0, 0.0, w], [0.0, 0.0, 1.0]]),
    }
    # np.rot90 turns counter-clockwise for positive k (rows = y down).
    return _moved(state, affines[k], lambda img: np.ascontiguousarray(np.rot90(img, -k)))


def rotate(state: AugmentState, degrees: float, border_value: int = PAD_VALUE) -> AugmentState:
    """Rotate about the image centre by ``degrees`` counter-clockwise on screen (OpenCV's sign), keeping
    the image size; corners leave the frame and uncovered areas take ``border_value``.

    The matrix is ``cv2.getRotationMatrix2D`` about the centre ``(W/2, H/2)`` in label coordinates; the
    labels get it directly, the pixels through :func:`pixel_index_matrix`. A box's angle decreases by
    ``radians(degrees)``.
    """
    centre = (state.width / 2.0, state.height / 2.0)
    affine = np.vstack([cv2.getRotationMatrix2D(centre, float(degrees), 1.0), [0.0, 0.0, 1.0]])
    return warp_affine(state, affine, (state.height, state.width), border_value)


def letterbox_for_training(
    state: AugmentState,
    new_shape: int | tuple[int, int],
    pad_value: int = PAD_VALUE,
    scale_up: bool = True,
) -> AugmentState:
    """Training letterbox (NOT the deployed preprocessing, which lives in the runtime).

    Resizes with ``cv2.resize`` (bilinear) keeping the aspect ratio so that the image fits
    ``new_shape = (height, width)`` (an int means square), then pads with ``pad_value`` to exactly that
    shape, centred: ``left = (width - new_w) // 2``, ``top = (height - new_h) // 2``, the rest right and
    bottom. ``new_w = round(W * s)``, ``new_h = round(H * s)``, ``s = min(height / H, width / W)``
    (capped at 1 when ``scale_up`` is false). The label transform is
    ``x' = x * new_w / W + left``, ``y' = y * new_h / H + top``, exactly what the pixels undergo.
    An image already of shape ``new_shape`` is returned unchanged.
    """
    out_h, out_w = _shape_hw(new_shape)
    h, w = state.height, state.width
    scale = min(out_h / h, out_w / w)
    if not scale_up:
        scale = min(scale, 1.0)
    new_w, new_h = max(1, round(w * scale)), max(1, round(h * scale))
    left, top = (out_w - new_w) // 2, (out_h - new_h) // 2
    affine = np.array([[new_w / w, 0.0, left], [0.0, new_h / h, top], [0.0, 0.0, 1.0]])
    if (new_w, new_h, left, top) == (w, h, 0, 0):
        return _moved(state, affine, lambda img: img)
    pads = (top, out_h - new_h - top, left, out_w - new_w - left)

    def warp(img: np.ndarray) -> np.ndarray:
        resized = img
        if (new_w, new_h) != (w, h):
            resized = cv2.resize(img, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
        resized = resized.reshape((new_h, new_w) + img.shape[2:])
        out = cv2.copyMakeBorder(resized, *pads, cv2.BORDER_CONSTANT, value=(pad_value,) * 3)
        return out.reshape((out_h, out_w) + img.shape[2:])

    return _moved(state, affine, warp)


def _shape_hw(shape: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(shape, (int, np.integer)):
        shape = (int(shape), int(shape))
    if len(shape) != 2 or min(shape) <= 0:
        raise ValueError(f"an image shape must be a positive int or (height, width), got {shape!r}")
    return int(shape[0]), int(shape[1])


# ---------------------------------------------------------------- random steps

@dataclass(frozen=True)
class Compose:
    """Apply ``steps`` in order, all drawing from the same generator."""

    steps: Sequence[Augmentation]

    def __call__(self, state: AugmentState, rng: np.random.Generator) -> AugmentState:
        for step in self.steps:
            state = step(state, rng)
        return state


def _check_probability(p: float) -> None:
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"a probability must be in [0, 1], got {p}")


@dataclass(frozen=True)
class RandomFlip:
    """Mirror with probability ``p``; ``direction`` is ``"horizontal"`` or ``"vertical"``."""

    direction: str = "horizontal"
    p: float = 0.5

    def __post_init__(self) -> None:
        _check_probability(self.p)
        if self.direction not in ("horizontal", "vertical"):
            raise ValueError(f"direction must be 'horizontal' or 'vertical', got {self.direction!r}")

    def __call__(self, state: AugmentState, rng: np.random.Generator) -> AugmentState:
        return flip(state, self.direction) if rng.random() < self.p else state


@dataclass(frozen=True)
class RandomRot90:
    """With probability ``p``, turn by 1, 2 or 3 quarter turns (uniformly); see :func:`rot90`."""

    p: float = 0.5

    def __post_init__(self) -> None:
        _check_probability(self.p)

    def __call__(self, state: AugmentState, rng: np.random.Generator) -> AugmentState:
        if rng.random() >= self.p:
            return state
        return rot90(state, int(rng.integers(1, 4)))


@dataclass(frozen=True)
class RandomRotate:
    """With probability ``p``, rotate by an angle drawn uniformly in ``[-max_degrees, max_degrees]``."""

    max_degrees: float = 180.0
    p: float = 0.5
    border_value: int = PAD_VALUE

    def __post_init__(self) -> None:
        _check_probability(self.p)
        if self.max_degrees < 0:
            raise ValueError(f"max_degrees must be >= 0, got {self.max_degrees}")

    def __call__(self, state: AugmentState, rng: np.random.Generator) -> AugmentState:
        if rng.random() >= self.p:
            return state
        return rotate(state, rng.uniform(-self.max_degrees, self.max_degrees), self.border_value)


@dataclass(frozen=True)
class ScaleJitter:
    """Resize by a factor drawn uniformly in ``scale_range``, then crop or pad (``border_value``) to
    ``out_shape = (height, width)`` at a random integer offset: one warp, so the labels stay exact."""

    out_shape: int | tuple[int, int]
    scale_range: tuple[float, float] = (0.5, 1.5)
    border_value: int = PAD_VALUE

    def __post_init__(self) -> None:
        low, high = self.scale_range
        if not 0 < low <= high:
            raise ValueError(f"scale_range must satisfy 0 < low <= high, got {self.scale_range}")
        _shape_hw(self.out_shape)

    def __call__(self, state: AugmentState, rng: np.random.Generator) -> AugmentState:
        out_h, out_w = _shape_hw(self.out_shape)
        scale = rng.uniform(*self.scale_range)
        shift_x = _random_offset(state.width * scale, out_w, rng)
        shift_y = _random_offset(state.height * scale, out_h, rng)
        affine = np.array([[scale, 0.0, shift_x], [0.0, scale, shift_y], [0.0, 0.0, 1.0]])
        return warp_affine(state, affine, (out_h, out_w), self.border_value)


def _random_offset(scaled: float, out: int, rng: np.random.Generator) -> float:
    """Where the scaled image's left (top) edge lands: a crop offset (< 0) or a pad offset (>= 0)."""
    slack = out - scaled
    return float(np.round(rng.uniform(min(slack, 0.0), max(slack, 0.0))))


@dataclass(frozen=True)
class HSVJitter:
    """Multiply hue, saturation and value by ``1 + uniform(-gain, gain)`` (hue wraps at OpenCV's 180).

    Photometric only: labels and ``transform`` are untouched; the reference gets its own draw.
    """

    hue_gain: float = 0.015
    saturation_gain: float = 0.7
    value_gain: float = 0.4

    def __call__(self, state: AugmentState, rng: np.random.Generator) -> AugmentState:
        image = self._jitter(state.image, rng)
        reference = None if state.reference is None else self._jitter(state.reference, rng)
        return replace(state, image=image, reference=reference)

    def _jitter(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        if image.shape[2] != 3:
            log.debug("HSV jitter skipped on a %d-channel image", image.shape[2])
            return image
        gains = rng.uniform(-1.0, 1.0, 3) * [self.hue_gain, self.saturation_gain, self.value_gain] + 1.0
        hue, sat, val = cv2.split(cv2.cvtColor(image, cv2.COLOR_BGR2HSV))
        levels = np.arange(256, dtype=np.float64)
        lut_hue = np.mod(levels * gains[0], 180).astype(np.uint8)
        lut_sat = np.clip(levels * gains[1], 0, 255).astype(np.uint8)
        lut_val = np.clip(levels * gains[2], 0, 255).astype(np.uint8)
        hsv = cv2.merge((cv2.LUT(hue, lut_hue), cv2.LUT(sat, lut_sat), cv2.LUT(val, lut_val)))
        return cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)


def default_train_augmentation(
    out_shape: int | tuple[int, int],
    scale_range: tuple[float, float] = (0.5, 1.5),
    max_degrees: float = 180.0,
) -> Compose:
    """A standard remote-sensing pipeline: flips, quarter turns, free rotation, scale jitter, HSV."""
    return Compose([
        RandomFlip("horizontal", 0.5),
        RandomFlip("vertical", 0.5),
        RandomRot90(0.5),
        RandomRotate(max_degrees, 0.5),
        ScaleJitter(out_shape, scale_range),
        HSVJitter(),
    ])
