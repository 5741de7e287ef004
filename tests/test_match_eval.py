"""eval-match: pair readers and their pixel conventions, OpenCV baselines, estimator refusals, metrics, CLI."""
from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from cstf_edge.cli import main
from cstf_edge.data.synthrs.pairs import make_pair, warp_image
from cstf_edge.errors import CstfError, DataError
from cstf_edge.eval.match_metrics import (NOT_SCORED, PairResult, aggregate, correspondence_stats,
                                          evaluate_pair, grid_rmse, project)
from cstf_edge.match import Matcher, MatchPair, OpenCVMatcher, estimate_transform, read_pairs, read_srif
from cstf_edge.match.pairs import change_origin


def _texture(size: int = 320, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    image = cv2.resize(rng.integers(0, 256, (size // 8, size // 8, 3), dtype=np.uint8), (size, size),
                       interpolation=cv2.INTER_CUBIC)
    for _ in range(40):
        centre = tuple(int(v) for v in rng.integers(0, size, 2))
        cv2.circle(image, centre, int(rng.integers(4, 20)), tuple(int(v) for v in rng.integers(0, 256, 3)), -1)
    return image


def _affine() -> np.ndarray:
    angle, scale = np.deg2rad(25.0), 0.9
    c, s = scale * np.cos(angle), scale * np.sin(angle)
    return np.array([[c, -s, 60.0], [s, c, -30.0], [0.0, 0.0, 1.0]])


@pytest.fixture(scope="module")
def synth_pairs(tmp_path_factory):
    out = tmp_path_factory.mktemp("pairs")
    assert main(["synth", str(out), "--n", "1", "--size", "256", "--pairs", "2", "--pair-modalities", "optical,sar",
                 "--no-progress"]) == 0
    return out


def test_sift_recovers_a_known_affine(tmp_path):
    reference, gt = _texture(), _affine()
    query = cv2.warpAffine(reference, gt[:2], (320, 320))
    for name, image in (("ref.png", reference), ("qry.png", query)):
        cv2.imwrite(str(tmp_path / name), image)
    pair = MatchPair("p", "test", tmp_path / "ref.png", tmp_path / "qry.png", gt)
    result = evaluate_pair(pair, OpenCVMatcher("sift"), "affine")
    assert result.success and result.grid_rmse < 0.5
    assert result.num_correct >= 20 and result.correct_ratio > 0.8
    assert np.allclose(np.array(result.transform), gt, atol=0.05 * np.abs(gt).max())


def test_matcher_protocol_and_empty_image():
    matcher = OpenCVMatcher("orb")
    assert isinstance(matcher, Matcher)
    matches = matcher.match(np.zeros((64, 64, 3), np.uint8), np.zeros((64, 64), np.uint8))
    assert len(matches) == 0 and matches.ref_xy.shape == (0, 2)
    with pytest.raises(CstfError):
        OpenCVMatcher("surf")


def test_synthrs_transform_converted_to_opencv_centres():
    """A point mapped by the SynthRS H (continuous coords) equals the converted H on OpenCV coords + 0.5, and
    warping with the converted H reproduces the query the generator made."""
    pair = make_pair(seed=0, index=0, size=128)
    converted = change_origin(pair.transform, 0.5)
    points = np.array([[0.0, 0.0], [10.0, 100.0], [127.0, 3.5]])
    assert np.allclose(project(pair.transform, points + 0.5), project(converted, points) + 0.5)
    image = _texture(128)
    assert np.array_equal(cv2.warpAffine(image, converted[:2], (128, 128)), warp_image(image, pair.transform, 128))


def test_srif_origin_shift():
    gt = np.array([[0.5, 0.2, 10.0], [-0.2, 0.5, 3.0], [0.0, 0.0, 1.0]])
    converted = change_origin(gt, 1.0)  # MATLAB 1-based -> OpenCV 0-based
    point = np.array([[7.0, 9.0]])
    assert np.allclose(project(converted, point) + 1.0, project(gt, point + 1.0))


def test_estimator_refuses_too_few_or_degenerate():
    rng = np.random.default_rng(0)
    ref = rng.uniform(0, 100, (5, 2))
    estimate = estimate_transform(ref, ref + 3.0, "affine")
    assert estimate.transform is None and "too few matches" in estimate.reason
    ref = rng.uniform(0, 100, (30, 2))
    estimate = estimate_transform(ref, rng.uniform(0, 100, (30, 2)), "homography")
    assert estimate.transform is None and estimate.reason
    collinear = np.stack([np.arange(20.0), np.arange(20.0)], axis=1)
    estimate = estimate_transform(collinear, np.zeros((20, 2)), "affine")
    assert estimate.transform is None
    for kind in ("similarity", "affine", "homography"):
        ok = estimate_transform(ref, ref + [5.0, -2.0], kind)
        assert ok.ok and np.allclose(ok.transform[:2, 2], [5.0, -2.0], atol=1e-3) and ok.num_inliers == 30
    with pytest.raises(CstfError):
        estimate_transform(ref, ref, "projective")


def test_metrics_on_hand_made_correspondences():
    gt = np.array([[1.0, 0.0, 10.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    ref = np.array([[0.0, 0.0], [5.0, 5.0], [20.0, 1.0], [7.0, 7.0]])
    qry = ref + [10.0, 0.0] + np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 2.0], [30.0, 0.0]])
    n_correct, ratio, rmse = correspondence_stats(ref, qry, gt)
    assert n_correct == 3 and ratio == 0.75 and rmse == pytest.approx(np.sqrt(5.0 / 3.0))
    assert grid_rmse(gt, gt, (100, 80)) == pytest.approx(0.0)
    shifted = gt.copy()
    shifted[0, 2] += 2.0
    assert grid_rmse(shifted, gt, (100, 80)) == pytest.approx(2.0)


def _row(modality: str, method: str, success: bool, scored: bool = True) -> PairResult:
    return PairResult("p", modality, method, 10, 5, 0.5, 1.0, 8, 1.0 if success else 9.0, success, 0.1,
                      scored=scored, note="" if scored else NOT_SCORED)


def test_aggregate_leaves_out_unscored_rows():
    rows = [_row("A", "sift", True), _row("A", "sift", False), _row("B", "sift", True, scored=False)]
    report = aggregate(rows)
    assert report["modalities"]["A"]["sift"]["success_rate"] == 0.5
    assert report["modalities"]["B"]["sift"]["note"] == NOT_SCORED
    assert report["overall"]["sift"]["pairs"] == 2 and report["overall"]["sift"]["success_rate"] == 0.5


def test_synthrs_reader(synth_pairs):
    pairs = read_pairs(synth_pairs)
    assert len(pairs) == 2 and {p.modality for p in pairs} == {"synthrs:optical-sar"}
    assert all(p.reference.is_file() and p.query.is_file() and p.transform.shape == (3, 3) for p in pairs)


def test_srif_reader_on_real_data(shared_data):
    root = shared_data / "multimodal" / "srif_dataset"
    if not root.is_dir():
        pytest.skip(f"{root} not found")
    pairs = read_srif(root)
    modalities = {p.modality for p in pairs}
    assert {"Optical-Optical", "Optical-SAR", "Optical-Map"} <= modalities
    assert all(p.gt_known_wrong == (p.modality == "Optical-SAR") for p in pairs)
    identity = [p for p in pairs if p.modality == "Optical-Map"]
    assert identity and all(np.allclose(p.transform, np.eye(3)) for p in identity)
    assert read_pairs(root / "Nighttime")[0].name.startswith("Nighttime/pair")


def test_cli_on_synthrs_pairs(synth_pairs, tmp_path, capsys):
    assert main(["eval-match", str(synth_pairs), "--out", str(tmp_path / "r"), "--no-progress"]) == 0
    table = capsys.readouterr().out
    assert "synthrs:optical-sar" in table and "overall" in table
    # the default: the shipped matcher with and without the dense refinement, and both baselines
    assert "CSTF:" in table and "CSTF-NET:" in table and "SIFT" in table and "ORB" in table
    report = json.loads((tmp_path / "r" / "report.json").read_text())
    assert len(report["pairs"]) == 8 and (tmp_path / "r" / "report.md").is_file()
    picture = cv2.imread(str(tmp_path / "r" / "success.png"))
    for colour in ("#1f77b4", "#d62728"):  # CSTF's and SIFT's bars are drawn
        bgr = np.array([int(colour[i:i + 2], 16) for i in (5, 3, 1)])
        assert (np.abs(picture.astype(int) - bgr).sum(axis=2) < 10).sum() > 50, colour
    assert "success.png" in (tmp_path / "r" / "report.md").read_text()
    assert main(["eval-match", str(synth_pairs), "--methods", "sift", "--transform", "similarity", "--json",
                 "--no-progress"]) == 0
    assert set(json.loads(capsys.readouterr().out)["overall"]) == {"sift"}


def test_success_picture_is_skipped_without_matplotlib(monkeypatch, caplog):
    import sys

    from cstf_edge.eval.match_plot import plot_success

    report = aggregate([PairResult("p", "m", "sift", 10, 8, 0.8, 1.0, 8, 1.0, True, 0.1)])
    assert plot_success(report, ["sift"], "t")[:8] == b"\x89PNG\r\n\x1a\n"
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)  # import fails as if not installed
    assert plot_success(report, ["sift"], "t") is None and "matplotlib is not installed" in caplog.text


def test_cli_bad_folder_exits_2(tmp_path, caplog):
    assert main(["eval-match", str(tmp_path / "missing")]) == 2
    assert "missing" in caplog.text
    assert main(["eval-match", str(tmp_path)]) == 2
    assert main(["eval-match", str(tmp_path), "--methods", "akaze"]) == 2
    with pytest.raises(DataError):
        read_pairs(tmp_path / "missing")
