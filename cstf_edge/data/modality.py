"""Random modality changes for self-supervised matching: one image made to look like another sensor's.

SynthRS renders the same scene as optical, SAR and infrared; these changes widen that to what real
cross-modal pairs show and SynthRS does not render (night, depth, maps) and make any single image usable:
non-linear intensity maps (monotone or not), inversion, SAR-like multiplicative speckle, blur,
map-like quantisation with edges, gradient-magnitude (edge) images, night-like low light with lamps.
Every function takes and returns a uint8 ``H x W x 3`` BGR image and draws from the given generator.
"""
from __future__ import annotations

from typing import Callable

import cv2
import numpy as np

from cstf_edge.match.baselines import to_gray


def to_bgr(gray: np.ndarray) -> np.ndarray:
    """uint8 BGR of a gray (or already BGR) image."""
    return gray if gray.ndim == 3 else cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR)


def _lut(image: np.ndarray, curve: np.ndarray) -> np.ndarray:
    return cv2.LUT(image, np.clip(curve, 0, 255).astype(np.uint8))


def intensity_map(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A random smooth intensity curve: gamma, or a non-monotone piecewise-linear map (as between bands)."""
    x = np.arange(256, dtype=np.float64) / 255.0
    if rng.random() < 0.5:
        curve = x ** np.exp(rng.uniform(-1.0, 1.0))
    else:
        knots = rng.uniform(0.0, 1.0, 5)
        curve = np.interp(x, np.linspace(0.0, 1.0, 5), knots)
    return _lut(image, 255.0 * curve)


def invert(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Negative image (thermal crossover: hot and cold swap)."""
    return 255 - image


def speckle(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Gray image times unit-mean gamma noise of 1-4 looks (SAR speckle)."""
    looks = float(rng.uniform(1.0, 4.0))
    noise = rng.gamma(looks, 1.0 / looks, image.shape[:2])
    gray = to_gray(image).astype(np.float64) * noise
    return to_bgr(np.clip(gray, 0, 255).astype(np.uint8))


def blur(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Gaussian blur of sigma 0.8-2.5 px (a coarser sensor)."""
    return cv2.GaussianBlur(image, (0, 0), float(rng.uniform(0.8, 2.5)))


def map_like(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Flat colour regions with dark outlines (a rendered map): smoothed, quantised to 3-6 random colours."""
    gray = cv2.bilateralFilter(to_gray(image), 7, 40, 5)
    levels = int(rng.integers(3, 7))
    bins = np.quantile(gray, np.linspace(0, 1, levels + 1)[1:-1])
    labels = np.digitize(gray, bins)
    palette = rng.integers(60, 256, (levels, 3)).astype(np.uint8)
    out = palette[labels]
    edges = cv2.Canny(gray, 50, 120) > 0
    out[edges] = rng.integers(0, 80)
    return np.ascontiguousarray(out)


def gradient_image(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Gradient magnitude (depth-like / edge-like structure without the texture)."""
    gray = cv2.GaussianBlur(to_gray(image), (0, 0), float(rng.uniform(0.5, 2.0))).astype(np.float32)
    magnitude = cv2.magnitude(cv2.Sobel(gray, cv2.CV_32F, 1, 0), cv2.Sobel(gray, cv2.CV_32F, 0, 1))
    return to_bgr(cv2.normalize(magnitude, None, 0, 255, cv2.NORM_MINMAX).astype(np.uint8))


def night(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Dark, noisy, with a few bright lamps (a night-time acquisition)."""
    dark = image.astype(np.float64) * rng.uniform(0.1, 0.35)
    h, w = image.shape[:2]
    lamps = np.zeros((h, w), np.float64)
    for _ in range(int(rng.integers(3, 15))):
        cv2.circle(lamps, (int(rng.integers(0, w)), int(rng.integers(0, h))), int(rng.integers(2, 8)), 1.0, -1)
    lamps = cv2.GaussianBlur(lamps, (0, 0), 4.0) * 255.0 * rng.uniform(0.5, 1.0)
    noisy = dark + lamps[..., None] + rng.normal(0.0, rng.uniform(2.0, 8.0), image.shape)
    return np.clip(noisy, 0, 255).astype(np.uint8)


def gray(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Colour dropped (a panchromatic or single-band sensor)."""
    return to_bgr(to_gray(image))


CHANGES: dict[str, Callable[[np.ndarray, np.random.Generator], np.ndarray]] = {
    "intensity": intensity_map, "invert": invert, "speckle": speckle, "blur": blur, "map": map_like,
    "gradient": gradient_image, "night": night, "gray": gray,
}


def random_change(image: np.ndarray, rng: np.random.Generator, strength: float = 1.0) -> np.ndarray:
    """Zero to two random changes (each with probability ``strength``), always followed by an intensity map
    with probability ``strength / 2``."""
    names = list(CHANGES)
    out = image
    for name in rng.choice(names, size=int(rng.integers(0, 3)), replace=False):
        if rng.random() < strength:
            out = CHANGES[name](out, rng)
    if rng.random() < strength / 2:
        out = intensity_map(out, rng)
    return to_bgr(out)
