"""The DOTA Task1 evaluator against the official devkit's figures, and hand-made cases."""
from __future__ import annotations

import json
import logging

import numpy as np
import pytest

from cstf_edge.data.annotations import ImageLabels
from cstf_edge.data.task1 import Task1Detections
from cstf_edge.errors import EvaluationError
from cstf_edge.eval import evaluate_detections, evaluate_dota, evaluate_dota_arrays, voc_ap
from cstf_edge.geometry import rbox_to_poly


def fixture_inputs(shared_fixtures, shared_data, name):
    if name == "dota_eval_example":
        root = shared_data / "dota" / "eval_example"
        return root / "result_classname", root / "labelTxt", root / "imgnamefile.txt"
    root = shared_fixtures / name
    return root / "results", root / "labelTxt", root / "imageset.txt"


@pytest.mark.parametrize("name", ["dota_eval_example", "dota_eval_perturbed"])
@pytest.mark.parametrize("metric", ["voc07", "voc12"])
def test_matches_official_devkit(shared_fixtures, shared_data, name, metric):
    expected = json.loads((shared_fixtures / name / "expected.json").read_text())
    results, labels, imageset = fixture_inputs(shared_fixtures, shared_data, name)
    result = evaluate_dota(results, labels, imageset, metric=metric, iou_threshold=expected["iou_threshold"])
    assert list(result.per_class_ap) == expected["classes_evaluated"]
    for class_name, ap in expected[metric]["per_class_ap"].items():
        assert result.per_class_ap[class_name] == pytest.approx(ap, abs=1e-6), class_name
    assert result.mAP == pytest.approx(expected[metric]["mAP"], abs=1e-6)


def test_ground_truth_objects_match_devkit_parsing(shared_fixtures):
    """The devkit keeps lines with >= 9 space-separated fields, difficult 0 when absent."""
    from cstf_edge.data.dota import read_dota_labels

    for path in sorted((shared_fixtures / "dota_eval_perturbed" / "labelTxt").glob("*.txt")):
        devkit = [line.strip().split(" ") for line in path.read_text().splitlines()]
        devkit = [tokens for tokens in devkit if len(tokens) >= 9]
        ours = read_dota_labels(path)
        assert ours.classes == [tokens[8] for tokens in devkit]
        assert ours.difficult.tolist() == [int(tokens[9]) if len(tokens) == 10 else 0 for tokens in devkit]
        np.testing.assert_array_equal(ours.polygons.reshape(-1, 8), [[float(v) for v in t[:8]] for t in devkit])


BOXES = np.array([[50.0, 50.0, 40.0, 20.0, 0.3], [150.0, 80.0, 30.0, 30.0, 0.0], [300.0, 300.0, 60.0, 10.0, -1.0]])


def labels(difficult=(0, 0, 0)):
    return [ImageLabels("img", rbox_to_poly(BOXES), ["car"] * 3, np.array(difficult))]


def evaluate(dets, difficult=(0, 0, 0), metric="voc07"):
    return evaluate_dota_arrays({"car": dets}, labels(difficult), metric=metric)


def test_perfect_detections_give_ap_one():
    dets = Task1Detections(["img"] * 3, [0.9, 0.8, 0.7], rbox_to_poly(BOXES))
    for metric in ("voc07", "voc12"):
        result = evaluate(dets, metric=metric)
        assert result.per_class_ap == {"car": pytest.approx(1.0)}
        assert result.recall["car"] == 1.0 and result.precision["car"] == 1.0


def test_duplicate_is_a_false_positive():
    polys = rbox_to_poly(BOXES[[0, 0, 1, 2]])
    result = evaluate(Task1Detections(["img"] * 4, [0.9, 0.85, 0.8, 0.7], polys))
    curve = result.curves["car"]
    np.testing.assert_allclose(curve.precision, [1.0, 0.5, 2 / 3, 0.75])
    assert curve.true_positives == 3 and result.precision["car"] == 0.75


def test_detection_on_difficult_object_is_ignored():
    dets = Task1Detections(["img"] * 3, [0.9, 0.8, 0.7], rbox_to_poly(BOXES))
    result = evaluate(dets, difficult=(0, 1, 0))
    assert result.num_ground_truth["car"] == 2
    np.testing.assert_allclose(result.curves["car"].precision, [1.0, 1.0, 1.0])  # neither TP nor FP
    np.testing.assert_allclose(result.curves["car"].recall, [0.5, 0.5, 1.0])
    assert result.per_class_ap["car"] == pytest.approx(1.0)


def test_iou_must_exceed_threshold_and_low_iou_is_false_positive():
    shifted = BOXES[:1] + [20.0, 0, 0, 0, 0]
    result = evaluate(Task1Detections(["img"], [0.9], rbox_to_poly(shifted)))
    assert result.per_class_ap["car"] == 0.0 and result.curves["car"].true_positives == 0
    square = np.array([[0.0, 0.0], [2.0, 0.0], [2.0, 2.0], [0.0, 2.0]])
    half = np.array([[0.0, 0.0], [1.0, 0.0], [1.0, 2.0], [0.0, 2.0]])  # IoU exactly 0.5
    curve = evaluate_detections([0], [1.0], half[None], [0], square[None], [0])
    assert curve.true_positives == 0
    curve = evaluate_detections([0], [1.0], half[None], [0], square[None], [0], iou_threshold=0.49)
    assert curve.true_positives == 1


def test_empty_results_class_scores_zero():
    result = evaluate_dota_arrays({}, labels())
    assert result.per_class_ap == {"car": 0.0} and result.mAP == 0.0
    assert result.num_detections == {"car": 0} and result.num_ground_truth == {"car": 3}


def test_unknown_image_and_bad_metric_raise():
    dets = Task1Detections(["other"], [0.9], rbox_to_poly(BOXES[:1]))
    with pytest.raises(EvaluationError, match="other"):
        evaluate(dets)
    with pytest.raises(EvaluationError, match="voc07"):
        evaluate(Task1Detections.empty(), metric="coco")


def test_missing_label_file_is_named(tmp_path):
    (tmp_path / "labels").mkdir()
    imageset = tmp_path / "set.txt"
    imageset.write_text("P0001\n")
    with pytest.raises(EvaluationError, match="P0001.txt"):
        evaluate_dota(tmp_path, tmp_path / "labels", imageset)
    with pytest.raises(EvaluationError, match="absent"):
        evaluate_dota(tmp_path, tmp_path / "absent")


def test_voc_ap_values():
    recall, precision = np.array([0.5, 0.5, 1.0]), np.array([1.0, 0.5, 2 / 3])
    assert voc_ap(recall, precision, "voc12") == pytest.approx(0.5 * 1.0 + 0.5 * 2 / 3)
    assert voc_ap(recall, precision, "voc07") == pytest.approx((6 * 1.0 + 5 * 2 / 3) / 11)


def test_cli_json(shared_fixtures, capsys):
    from cstf_edge.cli import main

    root = shared_fixtures / "dota_eval_perturbed"
    code = main(["eval-dota", "--results", str(root / "results"), "--labels", str(root / "labelTxt"),
                 "--imageset", str(root / "imageset.txt"), "--metric", "voc12", "--json"])
    assert code == 0
    printed = json.loads(capsys.readouterr().out)
    assert set(printed) == {"mAP", "per_class_ap", "metric", "num_detections", "num_ground_truth"}
    expected = json.loads((root / "expected.json").read_text())["voc12"]
    assert printed["mAP"] == pytest.approx(expected["mAP"], abs=1e-6)
    assert printed["metric"] == "voc12"


def test_cli_table_and_bad_input(shared_fixtures, tmp_path, capsys):
    from cstf_edge.cli import main

    root = shared_fixtures / "dota_eval_perturbed"
    assert main(["eval-dota", "--results", str(root / "results"), "--labels", str(root / "labelTxt")]) == 0
    out = capsys.readouterr().out
    assert "small-vehicle" in out and "mAP" in out
    assert main(["eval-dota", "--results", str(tmp_path / "none"), "--labels", str(root / "labelTxt")]) == 2


def test_empty_image_set_raises_and_suggests_labeltxt(tmp_path):
    root = tmp_path / "DOTA"
    (root / "labelTxt").mkdir(parents=True)
    (root / "labelTxt" / "P0001.txt").write_text("1 1 5 1 5 5 1 5 car 0\n")
    with pytest.raises(EvaluationError, match=f"did you mean {root / 'labelTxt'}"):
        evaluate_dota({}, root)
    empty_set = tmp_path / "set.txt"
    empty_set.write_text("\n")
    with pytest.raises(EvaluationError, match="no images to evaluate"):
        evaluate_dota({}, root / "labelTxt", empty_set)
    with pytest.raises(EvaluationError, match="ground truth is empty"):
        evaluate_dota_arrays({}, [])


def test_detections_of_any_class_must_be_on_evaluated_images():
    good = Task1Detections(["img"] * 3, [0.9, 0.8, 0.7], rbox_to_poly(BOXES))
    stray = Task1Detections(["elsewhere"], [0.9], rbox_to_poly(BOXES[:1]))
    with pytest.raises(EvaluationError, match="truck.*elsewhere"):
        evaluate_dota_arrays({"car": good, "truck": stray}, labels())


def test_unevaluated_result_class_is_a_warning(caplog):
    dets = Task1Detections(["img"] * 3, [0.9, 0.8, 0.7], rbox_to_poly(BOXES))
    with caplog.at_level(logging.WARNING, logger="cstf_edge.eval.dota_map"):
        result = evaluate_dota_arrays({"car": dets, "truck": dets}, labels())
    assert result.per_class_ap == {"car": pytest.approx(1.0)}
    assert any(r.levelno == logging.WARNING and "truck" in r.getMessage() for r in caplog.records)


def test_no_result_class_matching_the_ground_truth_raises(tmp_path):
    dets = Task1Detections(["img"] * 3, [0.9, 0.8, 0.7], rbox_to_poly(BOXES))
    with pytest.raises(EvaluationError, match=r"\['Car'\].*\['car'\]"):
        evaluate_dota_arrays({"Car": dets}, labels())
    assert evaluate_dota_arrays({"Car": Task1Detections.empty()}, labels()).mAP == 0.0  # nothing to mismatch


def test_hrsc_labels_fed_back_score_one_through_the_cli(shared_data, tmp_path, capsys):
    from cstf_edge.cli import main
    from cstf_edge.data.hrsc import load_hrsc_ground_truth
    from cstf_edge.data.task1 import labels_as_detections, write_task1_dir

    annotations = shared_data / "hrsc2016" / "FullDataSet" / "Annotations"
    truth = load_hrsc_ground_truth(annotations)
    assert [item.image_id for item in truth] == sorted(p.stem for p in annotations.glob("*.xml"))
    write_task1_dir(tmp_path, labels_as_detections(truth))
    args = ["eval-dota", "--results", str(tmp_path), "--labels", str(annotations), "--json"]
    assert main(args + ["--labels-format", "hrsc"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["mAP"] == pytest.approx(1.0) and list(printed["per_class_ap"]) == ["ship"]
    assert printed["num_ground_truth"] == sum(len(item) for item in truth)
    assert main(args) == 2  # read as DOTA labelTxt, the folder holds no .txt file
