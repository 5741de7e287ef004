"""The CSTF matcher: pair generation, quarter turns, the network, its losses, training, ONNX export and the
runtime matcher behind ``cstf-edge match``."""
from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from cstf_edge.cli import main  # noqa: E402
from cstf_edge.data.augment import pixel_index_matrix  # noqa: E402
from cstf_edge.data.match_pairs import canonical_pair, sample_pair  # noqa: E402
from cstf_edge.data.modality import CHANGES, random_change  # noqa: E402
from cstf_edge.match.rot90 import quarter_turns, rot90_matrix, rotate90  # noqa: E402
from cstf_edge.model.match_loss import matcher_loss, targets  # noqa: E402
from cstf_edge.model.matcher import CSTFMatcher, MatcherSpec, token_points  # noqa: E402
from cstf_edge.model.train_match import load_matcher, save_matcher  # noqa: E402

SIZE = 128


def _texture(size: int = 256, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    noise = cv2.resize(rng.random((size // 8, size // 8)).astype(np.float32), (size, size), cv2.INTER_CUBIC)
    image = (np.clip(noise, 0, 1) * 255).astype(np.uint8)
    for _ in range(12):
        x, y = (int(v) for v in rng.integers(10, size - 10, 2))
        cv2.rectangle(image, (x, y), (x + 12, y + 7), int(rng.integers(0, 255)), -1)
    return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)


@pytest.fixture(scope="module")
def matcher_files(tmp_path_factory):
    """An untrained matcher's weights and its ONNX export at 128 px."""
    from cstf_edge.export.matcher_onnx import export_matcher

    folder = tmp_path_factory.mktemp("matcher")
    torch.manual_seed(0)
    weights = save_matcher(folder / "m.safetensors", CSTFMatcher(MatcherSpec()).eval(), {"config": {}})
    _, figures = export_matcher(weights, folder / "m.onnx", SIZE)
    return weights, folder / "m.onnx", figures


def test_rot90_matrix_matches_numpy_and_undoes_rotation():
    image = np.arange(35, dtype=np.uint8).reshape(5, 7)
    for k in range(4):
        matrix, turned = rot90_matrix(k, 7, 5), rotate90(image, k)
        for y, x in [(0, 0), (2, 3), (4, 6)]:
            x2, y2, _ = matrix @ [x + 0.5, y + 0.5, 1.0]
            assert turned[int(y2), int(x2)] == image[y, x]
    for degrees, expected in [(10, 0), (80, 1), (-100, 3), (179, 2), (44, 0)]:
        a = np.radians(degrees)
        assert quarter_turns(np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])) == expected


def test_sample_pair_ground_truth_is_exact_and_canonical_turn_leaves_45_degrees():
    source = {"optical": _texture()}
    for seed in range(6):
        pair = canonical_pair(sample_pair(source, np.random.default_rng(seed), SIZE, change_strength=0.0))
        residual = np.degrees(np.arctan2(pair.transform[1, 0] - pair.transform[0, 1],
                                         pair.transform[0, 0] + pair.transform[1, 1]))
        assert abs(residual) <= 45.0 + 1e-6
        warped = cv2.warpAffine(pair.reference, pixel_index_matrix(pair.transform), (SIZE, SIZE))
        inside = (pair.query_mask > 0) & (cv2.erode(warped.max(2), np.ones((5, 5))) > 0)
        if inside.sum() > 200:  # the reference's view of the query covers enough of it to compare
            difference = np.abs(warped.astype(int) - pair.query.astype(int))[inside]
            assert np.median(difference) < 12, seed


def test_difficulty_zero_keeps_rotation_near_quarter_turns_and_scale_near_one():
    source = {"optical": _texture()}
    for seed in range(20):
        pair = sample_pair(source, np.random.default_rng(seed), SIZE, difficulty=0.0)
        linear = pair.transform[:2, :2]
        angle = np.degrees(np.arctan2(linear[1, 0], linear[0, 0]))
        assert abs((angle + 45) % 90 - 45) <= 15.0 + 1e-6
        assert 0.8 - 1e-9 <= np.sqrt(abs(np.linalg.det(linear))) <= 1.25 + 1e-9


@pytest.mark.parametrize("name", sorted(CHANGES))
def test_modality_changes_keep_shape_and_type(name):
    image = _texture(64)
    out = CHANGES[name](image, np.random.default_rng(1))
    assert out.shape[:2] == (64, 64) and out.dtype == np.uint8
    assert random_change(image, np.random.default_rng(2)).shape == (64, 64, 3)


def test_targets_of_identity_transform_point_at_own_tokens():
    h = w = SIZE // 16
    gt = targets(torch.eye(3)[None], torch.ones(1, SIZE, SIZE, dtype=torch.uint8), h, w)
    assert gt["query_valid"].all() and gt["ref_valid"].all()
    assert torch.equal(gt["index"][0], torch.arange(h * w))
    assert gt["offset"].abs().max() < 1e-5
    shifted = torch.tensor([[[1.0, 0, 16.0], [0, 1, 0], [0, 0, 1]]])  # query = reference moved 16 px right
    gt = targets(shifted, torch.ones(1, SIZE, SIZE, dtype=torch.uint8), h, w)
    assert not gt["query_valid"][0, 0] and gt["index"][0, 1] == 0


def test_forward_shapes_and_reference_broadcast():
    matcher = CSTFMatcher(MatcherSpec()).eval()
    reference, query = torch.rand(1, 3, SIZE, SIZE), torch.rand(3, 3, SIZE, SIZE)
    with torch.no_grad():
        broadcast = matcher(reference, query)
        repeated = matcher(reference.expand(3, -1, -1, -1).contiguous(), query)
    n = (SIZE // 16) ** 2
    assert [tuple(t.shape) for t in broadcast] == [(3, n, 2), (3, n, 2), (3, n), (3, n)]
    for a, b in zip(broadcast, repeated):
        assert torch.allclose(a, b, atol=1e-5)
    assert torch.equal(broadcast[1][0], token_points(SIZE // 16, SIZE // 16))
    assert ((broadcast[2] >= 0) & (broadcast[2] <= 1)).all()


def test_training_steps_lower_the_loss_on_a_fixed_batch():
    torch.manual_seed(0)
    matcher = CSTFMatcher(MatcherSpec())
    pairs = [canonical_pair(sample_pair({"o": _texture(seed=s)}, np.random.default_rng(s), SIZE, 0.0))
             for s in range(2)]
    reference = torch.tensor(np.stack([p.reference for p in pairs])).permute(0, 3, 1, 2).float() / 255
    query = torch.tensor(np.stack([p.query for p in pairs])).permute(0, 3, 1, 2).float() / 255
    transform = torch.tensor(np.stack([p.transform for p in pairs]), dtype=torch.float32)
    mask = torch.tensor(np.stack([p.query_mask for p in pairs]))
    optimizer = torch.optim.Adam(matcher.parameters(), 2e-3)
    losses = []
    for _ in range(25):
        loss, terms = matcher_loss(matcher, matcher.train()(reference, query), transform, mask)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(terms["coarse"])
    assert np.isfinite(losses).all() and np.mean(losses[-3:]) < 0.7 * np.mean(losses[:3])


def test_weights_round_trip(matcher_files, tmp_path):
    weights, _, _ = matcher_files
    matcher, meta = load_matcher(weights)
    assert meta["spec"]["backbone"] == "cstf-n"
    with pytest.raises(Exception, match="matcher weights"):
        from cstf_edge.model.checkpoint import shipped_weights
        load_matcher(shipped_weights())


def test_onnx_export_parity_and_metadata(matcher_files):
    from cstf_edge.runtime.backends import open_runner

    _, onnx_path, figures = matcher_files
    assert figures["confidence_max_abs"] < 1e-3 and figures["tokens_same_match"] > 0.99
    runner = open_runner(onnx_path)
    assert runner.info.task == "match" and runner.info.input_names == ["reference", "query"]
    assert runner.info.imgsz == (SIZE, SIZE) and runner.info.max_batch == 4


def test_runtime_matcher_onnx_equals_torch_and_maps_points_back(matcher_files):
    from cstf_edge.match.cstf import CSTFMatch

    weights, onnx_path, _ = matcher_files
    reference, query = _texture(200, 3), rotate90(_texture(200, 3)[20:180, 10:190], 1)
    results = []
    for model, options in ((onnx_path, {}), (weights, {"imgsz": SIZE})):
        with CSTFMatch(model, min_confidence=0.0, refine=False, **options) as matcher:
            results.append((matcher.match(reference, query), matcher.last_turn))
    (a, turn_a), (b, turn_b) = results
    assert turn_a == turn_b and len(a) == len(b) > 0
    assert np.allclose(a.ref_xy, b.ref_xy, atol=0.05) and np.allclose(a.qry_xy, b.qry_xy, atol=1e-6)
    assert (a.qry_xy >= -0.5).all() and (a.qry_xy[:, 0] <= query.shape[1] - 0.5).all()
    assert (a.qry_xy[:, 1] <= query.shape[0] - 0.5).all() and (a.ref_xy <= 199.5).all()


def test_runtime_matcher_refuses_a_detector(tmp_path):
    from cstf_edge.errors import CstfError
    from cstf_edge.match.cstf import CSTFMatch
    from cstf_edge.model.checkpoint import shipped_weights

    with pytest.raises(CstfError, match="not a matcher"):
        CSTFMatch(shipped_weights())


def _write_pair(folder, shift=(12.0, 7.0)):
    reference = _texture(256, 5)
    query = cv2.warpAffine(reference, np.float32([[1, 0, shift[0]], [0, 1, shift[1]]]), (256, 256))
    cv2.imwrite(str(folder / "ref.png"), reference)
    cv2.imwrite(str(folder / "qry.png"), query)
    return folder / "ref.png", folder / "qry.png"


def test_match_cli_success_writes_everything(tmp_path, capsys):
    ref, qry = _write_pair(tmp_path)
    out = tmp_path / "out"
    assert main(["match", str(ref), str(qry), "--method", "sift", "--out", str(out), "--json"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(result) >= {"num_matches", "num_inliers", "transform", "seconds"}
    assert np.allclose(np.array(result["transform"])[:2, 2], [12.0, 7.0], atol=0.5)
    for name in ("matches.csv", "transform.txt", "warped.png", "matches.png", "checkerboard.png", "result.json"):
        assert (out / name).is_file(), name
    assert (out / "matches.csv").read_text().startswith("x_ref,y_ref,x_qry,y_qry,confidence")


def test_match_cli_failure_exits_1_and_removes_a_stale_transform(tmp_path, capsys, matcher_files):
    ref, _ = _write_pair(tmp_path)
    blank = tmp_path / "blank.png"
    cv2.imwrite(str(blank), np.full((128, 128, 3), 90, np.uint8))
    out = tmp_path / "out"
    out.mkdir()
    (out / "transform.txt").write_text("1 0 0\n0 1 0\n0 0 1\n")
    _, onnx_path, _ = matcher_files
    assert main(["match", str(ref), str(blank), "--model", str(onnx_path), "--out", str(out), "--json"]) == 1
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["transform"] is None and result["reason"]
    assert not (out / "transform.txt").exists() and (out / "matches.png").is_file()


def test_match_cli_bad_image_exits_2(tmp_path):
    ref, _ = _write_pair(tmp_path)
    assert main(["match", str(ref), str(tmp_path / "missing.png"), "--method", "sift"]) == 2


def test_drawn_subset_prefers_inliers_spread_over_the_image():
    from cstf_edge.match.baselines import Matches
    from cstf_edge.match.outputs import drawn_subset

    rng = np.random.default_rng(0)
    ref = np.vstack([rng.uniform(0, 20, (200, 2)), rng.uniform(100, 400, (50, 2))])  # a dense clump + spread
    matches = Matches(ref, ref + 5.0, rng.random(250))
    inliers = np.zeros(250, bool)
    inliers[::2] = True
    chosen = drawn_subset(matches, inliers, limit=60)
    assert len(chosen) == 60 and len(set(chosen.tolist())) == 60
    assert inliers[chosen].all()  # 125 inliers available: only inliers drawn
    assert (ref[chosen] > 50).any(axis=1).sum() >= 20  # not all from the clump of 200


def test_train_match_cli_on_a_folder_and_exact_resume(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    for seed in range(2):
        cv2.imwrite(str(images / f"t{seed}.png"), _texture(128, seed))
    (images / "broken.png").write_bytes(b"not an image")  # skipped with a warning
    run = tmp_path / "run"
    common = ["train-match", "--out", str(run), "--images", str(images), "--batch", "2", "--imgsz", "64",
              "--init", "none", "--save-every", "1", "--no-progress"]
    assert main(common + ["--steps", "2"]) == 0
    first = (run / "metrics.csv").read_text().splitlines()
    assert len(first) == 3 and (run / "matcher.safetensors").is_file() and (run / "last.safetensors").is_file()
    assert main(common + ["--steps", "3", "--resume"]) == 0
    resumed = (run / "metrics.csv").read_text().splitlines()
    assert resumed[:3] == first and resumed[3].startswith("3,")
    assert load_matcher(run / "matcher.safetensors")[1]["step"] == 3
