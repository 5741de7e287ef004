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
from cstf_edge.match.refine import BINS, LEVELS, MAX_SIDE, orientation_channels, refine_registration


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


def _fit_error(refined, truth, size) -> float:
    fit = estimate_transform(refined.ref_xy, refined.qry_xy, "affine")
    assert fit.ok
    return grid_rmse(fit.transform, truth, size)


def test_scores_are_zero_mean_ncc_over_all_channels():
    from cstf_edge.match.refine import Level, _scores, _window_stats

    rng = np.random.default_rng(0)
    reference, aligned = (rng.random((40, 40, BINS)).astype(np.float32) for _ in range(2))
    level, points = Level(1.0, 5, 3, 1), np.array([[20, 18], [12, 25]])
    scores = _scores(reference, aligned, points, level, _window_stats(reference, 11))
    for k, (x, y) in enumerate(points):
        template = reference[y - 5:y + 6, x - 5:x + 6]
        template = template - template.mean(axis=(0, 1))
        for dy in range(-3, 4):
            for dx in range(-3, 4):
                window = aligned[y + dy - 5:y + dy + 6, x + dx - 5:x + dx + 6]
                window = window - window.mean(axis=(0, 1))
                ncc = (template * window).sum() / np.sqrt((template ** 2).sum() * (window ** 2).sum())
                assert abs(scores[k, dy + 3, dx + 3] - ncc) < 1e-4


@pytest.mark.parametrize("level", LEVELS, ids=lambda level: f"scale{level.scale}")
def test_each_level_alone_measures_a_sub_pixel_shift(level):
    """Sub-pixel peaks and the pixel-centre mapping of the reduced level: a shift of (0.4, -0.3) px is
    found to 0.1 px by either level alone (without the parabola or with a half-pixel slip it is not)."""
    reference = _scene(seed=2)
    truth = _affine(0.0, 1.0, 0.4, -0.3)
    query = cv2.warpAffine(reference, truth[:2], (320, 320), flags=cv2.INTER_CUBIC)
    refined = refine_registration(reference, query, np.eye(3), levels=(level,))
    assert refined is not None and _fit_error(refined, truth, (320, 320)) < 0.1


def test_refinement_declines_when_there_is_nothing_to_measure():
    reference = _scene()
    flat = np.full((320, 320), 128, np.uint8)
    assert refine_registration(reference, flat, np.eye(3)) is None
    assert refine_registration(flat, reference, np.eye(3)) is None
    ramp = np.tile(np.linspace(0.0, 1.0, 320, dtype=np.float32), (320, 1))  # smooth: no template can lock on
    assert refine_registration(reference, ramp, np.eye(3)) is None
    assert refine_registration(reference, _scene(seed=9), np.eye(3)) is None  # another scene: no consistent fit


def test_refinement_takes_small_colour_and_large_images():
    reference = _scene(seed=4)
    assert refine_registration(reference[:40], reference[:40], np.eye(3)) is None  # a strip: declined, no error
    assert refine_registration(reference[:1], reference[:1], np.eye(3)) is None
    truth = _affine(0.0, 1.0, 2.0, -1.5)
    colour = cv2.cvtColor(cv2.warpAffine(reference, truth[:2], (320, 320)), cv2.COLOR_GRAY2BGR)
    refined = refine_registration(cv2.cvtColor(reference, cv2.COLOR_GRAY2BGRA), colour, np.eye(3))
    assert refined is not None and _fit_error(refined, truth, (320, 320)) < 0.2
    large = cv2.resize(_scene(640, seed=6), (2560, 2560), interpolation=cv2.INTER_CUBIC)
    big_truth = _affine(3.0, 1.0, 12.0, -8.0)
    query = cv2.warpAffine(large, big_truth[:2], (2560, 2560), flags=cv2.INTER_LINEAR)
    refined = refine_registration(large, query, _affine(3.0, 1.0, 5.0, 0.0))  # reduced to MAX_SIDE inside
    assert MAX_SIDE < 2560 and refined is not None and refined.ref_xy.max() > MAX_SIDE
    assert _fit_error(refined, big_truth, (2560, 2560)) < 1.0


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


def test_matcher_keeps_the_network_matches_when_the_refinement_declines(monkeypatch, tmp_path, capsys):
    pytest.importorskip("torch")
    import cstf_edge.match.cstf as cstf_module

    reference = cv2.cvtColor(_scene(384, seed=5), cv2.COLOR_GRAY2BGR)
    query = cv2.warpAffine(reference, _affine(10.0, 1.0, 20.0, 10.0)[:2], (384, 384))
    with cstf_module.CSTFMatch(refine=False) as network_only:
        expected = network_only.match(reference, query)
    monkeypatch.setattr(cstf_module, "refine_registration", lambda *args: None)
    monkeypatch.setattr(cstf_module.global_search, "register", lambda *args: None)
    with cstf_module.CSTFMatch() as matcher:
        got = matcher.match(reference, query)
        assert matcher.last_refined is False and matcher.name == "cstf" and matcher.last_stage == "network"
    assert len(got) == len(expected) > 0 and np.allclose(got.ref_xy, expected.ref_xy)
    # The command writes such a transform but does not trust it: exit code 1, "confirmed": false.
    cv2.imwrite(str(tmp_path / "ref.png"), reference)
    cv2.imwrite(str(tmp_path / "qry.png"), query)
    assert main(["match", str(tmp_path / "ref.png"), str(tmp_path / "qry.png"), "--json"]) == 1
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["stage"] == "network" and result["confirmed"] is False and result["transform"] is not None
