"""The foundation's acceptance check, through the command line: a SynthRS data set scored against its
own labels gives mAP 1.0, through per-image label files and through Task1 files; dropping detections
lowers it (so the check can fail)."""
import json

import numpy as np
import pytest

from cstf_edge.cli import main
from cstf_edge.data.task1 import Task1Detections, labels_as_detections, write_task1_dir
from cstf_edge.eval.dota_map import load_ground_truth


@pytest.fixture(scope="module")
def synth_set(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth")
    assert main(["synth", str(out), "--n", "50", "--seed", "3", "--no-progress"]) == 0
    return out


def _eval_json(capsys, *args) -> dict:
    capsys.readouterr()
    assert main(["eval-dota", *args, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_synth_labels_fed_back_score_map_1(synth_set, capsys):
    labels = str(synth_set / "labelTxt")
    summary = _eval_json(capsys, "--results", labels, "--results-format", "labels", "--labels", labels)
    assert summary["mAP"] == pytest.approx(1.0, abs=1e-12)  # 11-point sum, as the devkit gives
    assert set(summary["per_class_ap"]) == {"plane", "ship", "storage-tank", "small-vehicle", "large-vehicle"}
    assert summary["num_ground_truth"] > 50


def test_task1_files_of_the_labels_score_map_1_and_fewer_score_less(synth_set, tmp_path, capsys):
    detections = labels_as_detections(load_ground_truth(synth_set / "labelTxt"))
    write_task1_dir(tmp_path / "all", detections)
    summary = _eval_json(capsys, "--results", str(tmp_path / "all"), "--labels", str(synth_set / "labelTxt"),
                         "--metric", "voc12")
    assert summary["mAP"] == pytest.approx(1.0, abs=1e-12)
    ships = detections["ship"]
    half = np.arange(len(ships)) % 2 == 0
    detections["ship"] = Task1Detections([i for i, k in zip(ships.image_ids, half) if k],
                                         ships.scores[half], ships.polygons[half])
    write_task1_dir(tmp_path / "half", detections)
    summary = _eval_json(capsys, "--results", str(tmp_path / "half"), "--labels", str(synth_set / "labelTxt"))
    assert 0.4 < summary["per_class_ap"]["ship"] < 0.7
    assert summary["mAP"] < 1.0
