"""The matcher's global search (``match/global_search.py``): proposals over every turn, confirmed by the
dense refinement."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from cstf_edge.eval.match_metrics import grid_rmse
from cstf_edge.match import estimate_transform, global_search
from cstf_edge.match.baselines import Matches

from test_match_refine import _affine, _other_sensor, _scene


def _about_centre(angle_deg: float, scale: float, size: int, tx: float = 0.0, ty: float = 0.0) -> np.ndarray:
    """Reference -> query: turn and scale about the image centre, then shift."""
    c = (size - 1) / 2.0
    centre, back = _affine(0.0, 1.0, -c, -c), _affine(0.0, 1.0, c + tx, c + ty)
    return back @ _affine(angle_deg, scale, 0.0, 0.0) @ centre


def _pair(angle_deg: float, scale: float, size: int = 320, seed: int = 0, tx: float = 14.0, ty: float = -9.0):
    reference = _scene(size, seed)
    truth = _about_centre(angle_deg, scale, size, tx, ty)
    query = _other_sensor(cv2.warpAffine(reference, truth[:2], (size, size), flags=cv2.INTER_LINEAR))
    return reference, query, truth


@pytest.mark.parametrize("angle, scale", [(137.0, 1.0), (-100.0, 1.0), (250.0, 1.41)])
def test_search_proposes_the_turn_and_the_refinement_confirms_it(angle, scale):
    reference, query, truth = _pair(angle, scale)
    candidates = global_search.search(reference, query)
    assert 1 <= len(candidates) <= global_search.CANDIDATES
    assert [c.score for c in candidates] == sorted((c.score for c in candidates), reverse=True)
    turn = abs((candidates[0].angle - angle + 180.0) % 360.0 - 180.0)
    assert turn <= global_search.ANGLE_STEP / 2 and candidates[0].scale == pytest.approx(1.0 / scale, rel=0.01)
    assert grid_rmse(candidates[0].transform, truth, (320, 320)) < 25.0  # within the refinement's reach
    found = global_search.register(reference, query)
    assert found is not None and len(found) >= global_search.MIN_INLIERS
    fit = estimate_transform(found.ref_xy, found.qry_xy, "affine")
    assert fit.ok and grid_rmse(fit.transform, truth, (320, 320)) < 0.5


def test_nothing_is_accepted_between_unrelated_or_empty_images():
    reference = _scene(seed=1)
    assert global_search.register(reference, _other_sensor(_scene(seed=2))) is None
    assert global_search.register(reference, np.full((320, 320), 128, np.uint8)) is None
    assert global_search.search(reference, reference[:30, :30]) == []  # too small to search: no error


def test_matcher_falls_back_on_the_search_only_when_the_network_finds_nothing(monkeypatch):
    pytest.importorskip("torch")  # the shipped matcher weights run through the PyTorch reference backend
    import cstf_edge.match.cstf as cstf_module

    reference, query, truth = _pair(137.0, 1.0, seed=3)
    monkeypatch.setattr(cstf_module.CSTFMatch, "_network", lambda self, r, q: Matches.empty())
    with cstf_module.CSTFMatch() as matcher:
        found = matcher.match(reference, query)
        assert matcher.last_stage == "global search" and matcher.last_refined is True
    fit = estimate_transform(found.ref_xy, found.qry_xy, "affine")
    assert fit.ok and grid_rmse(fit.transform, truth, (320, 320)) < 0.5
    with cstf_module.CSTFMatch(refine=False) as network_only:  # cstf-net: the network's answer alone
        assert len(network_only.match(reference, query)) == 0 and network_only.last_stage == "none"
    monkeypatch.setattr(cstf_module.global_search, "register", lambda *args: None)
    with cstf_module.CSTFMatch() as matcher:  # nothing anywhere: no matches, stage none
        assert len(matcher.match(reference, query)) == 0 and matcher.last_stage == "none"
        assert matcher.last_refined is False


def test_a_search_at_an_exact_working_pixel_shift_composes_the_transform_exactly():
    """Query: a non-square crop of the reference at an even offset (a whole pixel at the working scale of 1/2):
    the untouched turn's candidate is that translation, to float precision."""
    reference = _scene(256, seed=4)  # 256 px: searched at 128, a factor of 1/2
    query = reference[20:180, 40:240]  # 160 x 200
    truth = _affine(0.0, 1.0, -40.0, -20.0)  # reference -> query
    best = next(c for c in global_search.search(reference, query) if c.angle == 0.0 and c.scale == 1.0)
    assert np.abs(best.transform - truth).max() < 1e-6
