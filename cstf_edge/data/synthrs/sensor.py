"""The sensor: optical blur, illumination, haze, noise and JPEG artefacts; SAR multiplicative speckle;
infrared's coarser optics. Takes a drawn scene canvas, returns the final uint8 image."""
from __future__ import annotations

from dataclasses import replace

import cv2
import numpy as np

from cstf_edge.data.synthrs.noise import crop_texture, smooth_field, white_texture
from cstf_edge.data.synthrs.scene import Conditions

HAZE_COLOUR = np.array([196, 198, 200], np.float32)  # BGR, a bluish-grey airlight
SAR_LOOKS = (3.0, 6.0)  # equivalent number of looks: intensity speckle ~ Gamma(L, 1/L)


def _varied(conditions: Conditions, rng: np.random.Generator, variant: int) -> Conditions:
    """Conditions of another acquisition: new light, haze and noise, same scene."""
    if variant == 0:
        return conditions
    return replace(Conditions.draw(rng), colour_jitter=conditions.colour_jitter)


def _illumination(size: int, conditions: Conditions) -> np.ndarray:
    """Gain times a linear brightness ramp across the image (bilinear resize of 2x2 corner values)."""
    gx, gy = conditions.gradient
    corners = conditions.gain * (1.0 + 0.5 * np.array([[-gx - gy, gx - gy], [gy - gx, gx + gy]], np.float32))
    return cv2.resize(corners, (size, size), interpolation=cv2.INTER_LINEAR)


def _jpeg(image: np.ndarray, quality: int | None) -> np.ndarray:
    if quality is None:
        return image
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    return cv2.imdecode(buf, cv2.IMREAD_UNCHANGED) if ok else image


def _optical(canvas: np.ndarray, conditions: Conditions, rng: np.random.Generator) -> np.ndarray:
    size = canvas.shape[0]
    blurred = cv2.GaussianBlur(canvas, (0, 0), conditions.blur_sigma)
    image = blurred.astype(np.float32)
    image *= _illumination(size, conditions)[..., None]
    if conditions.haze > 0:
        image *= 1.0 - conditions.haze
        image += conditions.haze * HAZE_COLOUR
    noise = crop_texture(white_texture(), rng, size, size)
    image += (conditions.noise_sigma * noise)[..., None]
    out = cv2.convertScaleAbs(image)  # saturating cast to uint8 (values are non-negative)
    return _jpeg(out, conditions.jpeg_quality)


def _sar(canvas: np.ndarray, conditions: Conditions, rng: np.random.Generator) -> np.ndarray:
    looks = float(rng.uniform(*SAR_LOOKS))
    size = canvas.shape[0]
    intensity_speckle = rng.standard_gamma(looks, (size, size), dtype=np.float32)
    intensity_speckle *= 1.0 / looks
    amplitude = canvas.astype(np.float32) * np.sqrt(intensity_speckle)
    amplitude *= conditions.gain
    return np.clip(amplitude, 0, 255).astype(np.uint8)


def _infrared(canvas: np.ndarray, conditions: Conditions, rng: np.random.Generator) -> np.ndarray:
    size = canvas.shape[0]
    image = cv2.GaussianBlur(canvas, (0, 0), conditions.blur_sigma * 1.8).astype(np.float32)
    image *= 1.0 + 0.05 * smooth_field(rng, size, size, cells=3)
    image += 1.5 * conditions.noise_sigma * crop_texture(white_texture(), rng, size, size)
    return np.clip(image, 0, 255).astype(np.uint8)


def apply_sensor(canvas: np.ndarray, conditions: Conditions, modality: str, rng: np.random.Generator,
                 variant: int = 0) -> np.ndarray:
    """The final uint8 image of ``modality`` from a drawn canvas."""
    conditions = _varied(conditions, rng, variant)
    if modality == "optical":
        return _optical(canvas, conditions, rng)
    if modality == "sar":
        return _sar(canvas, conditions, rng)
    return _infrared(canvas, conditions, rng)
