"""Cached noise textures: every scene crops its texture from one precomputed fractal field, so no scene
pays for generating noise pixel by pixel. Deterministic: the field is built from a fixed seed."""
from __future__ import annotations

from functools import lru_cache

import cv2
import numpy as np

TEXTURE_SIZE = 2048
_TEXTURE_SEED = 20250725


def _octave(rng: np.random.Generator, cells: int, size: int) -> np.ndarray:
    grid = rng.standard_normal((cells, cells)).astype(np.float32)
    return cv2.resize(grid, (size, size), interpolation=cv2.INTER_CUBIC)


@lru_cache(maxsize=1)
def fractal_texture() -> np.ndarray:
    """A ``[TEXTURE_SIZE, TEXTURE_SIZE]`` float32 fractal field, zero mean and unit deviation (read-only)."""
    rng = np.random.default_rng(_TEXTURE_SEED)
    field = np.zeros((TEXTURE_SIZE, TEXTURE_SIZE), np.float32)
    cells, weight = 16, 1.0
    while cells <= TEXTURE_SIZE:
        field += weight * _octave(rng, cells, TEXTURE_SIZE)
        cells, weight = cells * 2, weight * 0.62
    field -= field.mean()
    field /= field.std()
    field.setflags(write=False)
    return field


@lru_cache(maxsize=1)
def grain_texture() -> np.ndarray:
    """A ``[TEXTURE_SIZE, TEXTURE_SIZE]`` float32 field of fine grain (1-3 px), unit deviation."""
    rng = np.random.default_rng(_TEXTURE_SEED + 1)
    white = rng.standard_normal((TEXTURE_SIZE, TEXTURE_SIZE)).astype(np.float32)
    grain = cv2.GaussianBlur(white, (0, 0), 0.8)
    grain /= grain.std()
    grain.setflags(write=False)
    return grain


def crop_texture(texture: np.ndarray, rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A random ``[height, width]`` window of ``texture`` (flipped at random; tiled if larger). Not
    transposed: a transposed view would make every later operation on it cache-unfriendly."""
    size = texture.shape[0]
    if height > size or width > size:
        reps = (-(-height // size) + 1, -(-width // size) + 1)
        texture = np.tile(texture, reps)
    y0 = int(rng.integers(0, texture.shape[0] - height + 1))
    x0 = int(rng.integers(0, texture.shape[1] - width + 1))
    window = texture[y0 : y0 + height, x0 : x0 + width]
    step_y, step_x = (1 if rng.integers(2) else -1), (1 if rng.integers(2) else -1)
    return window[::step_y, ::step_x]


def smooth_field(rng: np.random.Generator, height: int, width: int, cells: int = 6) -> np.ndarray:
    """A smooth random ``[height, width]`` float32 field (about ``cells`` blobs across), unit deviation."""
    grid = rng.standard_normal((cells, cells)).astype(np.float32)
    return cv2.resize(grid, (width, height), interpolation=cv2.INTER_CUBIC)


@lru_cache(maxsize=1)
def white_texture() -> np.ndarray:
    """A ``[TEXTURE_SIZE, TEXTURE_SIZE]`` float32 field of white Gaussian noise (sensor noise), unit deviation."""
    rng = np.random.default_rng(_TEXTURE_SEED + 2)
    white = rng.standard_normal((TEXTURE_SIZE, TEXTURE_SIZE), dtype=np.float32)
    white.setflags(write=False)
    return white
