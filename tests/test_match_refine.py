"""The dense refinement of a registration (orientation channels, template search) and its use by the CSTF
matcher and ``cstf-edge match``."""
from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from cstf_edge.cli import main
from cstf_edge.eval.match_metrics import grid_rmse
from cstf_edge.match import estimate_transform
from cstf_edge.match.refine import BINS, refine_registration, orientation_channels


def _scene(size: int = 320, seed: int = 0) -> np.ndarray:
    """A gray test scene: smooth noise with blobs and bars of random intensity."""
    rng = np.random.default_rng(seed)
    image = cv2.resize(rng.random((size // 16, size // 16)).astype(np.float32), (size, size),
                       interpolation=cv2.INTER_CUBIC)
    image = (np.clip(image, 0, 1) * 120 + 60).astype(np.uint8)
    for _ in range(60):
        x, y = (int(v) for v in rng.integers(0, size, 2))
        if rng.random() < 0.5:
            cv2.circle(image, (x, y), int(rng.integers(3, 12)), int(rng.integers(0, 256)), -1)
        else:
            cv2.rectangle(image, (x, y), (x + int(rng.integers(4, 30)), y + int(rng.integers(3, 9))),
                          int(rng.integers(0, 256)), -1)
    return image


def _affine(angle_deg: float, scale: float, tx: float, ty: float) -> np.ndarray:
    a = np.deg2rad(angle_deg)
    return np.array([[scale * np.cos(a), -scale * np.sin(a), tx], [scale * np.sin(a), scale * np.cos(a), ty],
                     [0.0, 0.0, 1.0]])


def _other_sensor(gray: np.ndarray) -> np.ndarray:
    """Contrast reversed and a non-linear intensity map: what breaks intensity matching across sensors."""
    curve = (255.0 * (np.arange(256) / 255.0) ** 0.5).astype(np.uint8)
    return curve[255 - gray]


def test_orientation_channels_are_unit_vectors_and_ignore_contrast_reversal():
    scene = _scene()
    channels = orientation_channels(scene)
    assert channels.shape == scene.shape + (BINS,) and channels.dtype == np.float32
    norms = np.linalg.norm(channels, axis=2)
    assert norms.max() <= 1.0 + 1e-5 and np.median(norms) > 0.9
    assert np.allclose(orientation_channels(255 - scene), channels, atol=1e-5)


def test_orientation_channels_turn_with_the_image():
    """A quarter turn of the image is a shift by BINS / 2 of the orientation channels, turned."""
    scene = _scene(seed=3)
    turned = orientation_channels(np.ascontiguousarray(np.rot90(scene)))
    expected = np.roll(np.rot90(orientation_channels(scene)), BINS // 2, axis=2)
    assert np.abs(turned - expected).max() < 1e-4


def test_refinement_recovers_a_known_affine_across_a_modality_change():
    reference = _scene()
    truth = _affine(20.0, 1.1, -30.0, 25.0)
    query = _other_sensor(cv2.warpAffine(reference, truth[:2], (320, 320), flags=cv2.INTER_LINEAR))
    start = truth @ _affine(1.0, 1.0, 6.0, -4.0)  # what a coarse matcher gives: 1 degree and 7 px off
    assert grid_rmse(start, truth, (320, 320)) > 5.0
    refined = refine_registration(reference, query, start)
    assert refined is not None and len(refined) >= 20
    fit = estimate_transform(refined.ref_xy, refined.qry_xy, "affine")
    assert fit.ok and grid_rmse(fit.transform, truth, (320, 320)) < 0.3
    errors = np.linalg.norm(cv2.perspectiveTransform(refined.ref_xy.reshape(1, -1, 2), truth)[0] - refined.qry_xy,
                            axis=1)
    assert np.median(errors) < 0.3 and ((refined.confidence >= 0) & (refined.confidence <= 1)).all()


def test_refinement_declines_when_there_is_nothing_to_measure():
    reference = _scene()
    flat = np.full((320, 320), 128, np.uint8)
    assert refine_registration(reference, flat, np.eye(3)) is None
    assert refine_registration(flat, reference, np.eye(3)) is None


def test_match_cli_with_shipped_weights_uses_the_refinement(tmp_path, capsys):
    pytest.importorskip("torch")  # the shipped weights run through the PyTorch reference backend
    reference = _scene(384, seed=5)
    truth = _affine(-35.0, 0.9, 60.0, 90.0)
    query = _other_sensor(cv2.warpAffine(reference, truth[:2], (384, 384), flags=cv2.INTER_LINEAR))
    cv2.imwrite(str(tmp_path / "ref.png"), reference)
    cv2.imwrite(str(tmp_path / "qry.png"), query)
    assert main(["match", str(tmp_path / "ref.png"), str(tmp_path / "qry.png"), "--json"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["refined"] is True
    assert grid_rmse(np.array(result["transform"]), truth, (384, 384)) < 1.0
