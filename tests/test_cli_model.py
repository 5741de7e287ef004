"""The model commands: ``info`` (size and FLOPs), ``train`` (runs, validates, resumes) and ``val`` (the
shipped weights score well on fresh SynthRS scenes; large images are tiled into full-image coordinates)."""
from __future__ import annotations

import csv
import json
import logging
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("safetensors")

from cstf_edge._io import read_image  # noqa: E402
from cstf_edge.cli import main  # noqa: E402
from cstf_edge.data.synthrs import SYNTH_CLASSES, generate_dataset  # noqa: E402
from cstf_edge.data.task1 import read_task1_dir  # noqa: E402
from cstf_edge.errors import DataError  # noqa: E402
from cstf_edge.geometry import rbox_to_poly  # noqa: E402
from cstf_edge.geometry.iou import polygon_iou_pairs  # noqa: E402
from cstf_edge.model import build_model  # noqa: E402
from cstf_edge.model.checkpoint import load_weights  # noqa: E402
from cstf_edge.model.predict import predict  # noqa: E402
from cstf_edge.model.summary import count_parameters, plot_metrics  # noqa: E402
from cstf_edge.model.train_data import modality_references, resolve_data  # noqa: E402
from cstf_edge.model.checkpoint import shipped_weights  # noqa: E402
from cstf_edge.model.validate import detect_large  # noqa: E402

SUMMARY_KEYS = {"mAP", "per_class_ap", "metric", "num_detections", "num_ground_truth"}


@pytest.fixture(autouse=True)
def _threads():
    torch.set_num_threads(2)


def run_json(capsys, *argv) -> dict:
    assert main(list(argv)) == 0
    return json.loads(capsys.readouterr().out)


def read_metrics(run: Path) -> list[dict]:
    with (run / "metrics.csv").open() as handle:
        return list(csv.DictReader(handle))


# ------------------------------------------------------------------------------------------------ info

def test_info_table_and_json(capsys):
    assert main(["info", "--model", "cstf-n", "--imgsz", "128"]) == 0
    table = capsys.readouterr().out
    params = count_parameters(build_model("cstf-n", 5))
    assert "cstf-n" in table and f"{params / 1e6:.3f} M" in table
    assert "YOLOv8n-obb (reference)" in table and "3.1 M" in table and "23.3@1024" in table
    small = run_json(capsys, "info", "--imgsz", "128", "--json")
    large = run_json(capsys, "info", "--imgsz", "256", "--json")
    assert small["model"] == "cstf-n" and small["params"] == params and 2.0 < small["params_M"] < 4.0
    assert small["reference"] == {"name": "YOLOv8n-obb", "params_M": 3.1, "gflops": 23.3, "imgsz": 1024}
    # convolutions cost 4x for twice the side; the coarse-token attention grows faster but is a small share
    assert 3.9 < large["gflops"] / small["gflops"] < 4.6
    assert 0 < small["cstf_block_gflops"] < small["gflops"]


def test_info_refuses_a_bad_size(caplog):
    assert main(["info", "--imgsz", "100"]) == 2
    assert "100x100" in caplog.text
    assert main(["info", "--model", "cstf-x"]) == 2
    assert "cstf-x" in caplog.text


# ----------------------------------------------------------------------------------------------- train

@pytest.fixture(scope="module")
def tiny_synth(tmp_path_factory) -> Path:
    """DATA/train (4 scenes) and DATA/val (2 scenes) of 128 px SynthRS, optical + SAR."""
    root = tmp_path_factory.mktemp("synth")
    generate_dataset(root / "train", 4, size=128, seed=5, modalities=("optical", "sar"), progress=False)
    generate_dataset(root / "val", 2, size=128, seed=6, modalities=("optical", "sar"), progress=False)
    return root


def train_args(data: Path, out: Path, epochs: int, *extra: str) -> list[str]:
    return ["train", "--data", str(data), "--epochs", str(epochs), "--imgsz", "128", "--batch", "2",
            "--workers", "0", "--device", "cpu", "--out", str(out), "--no-progress", "--no-augment", *extra]


def test_train_validates_each_epoch_and_resumes(tiny_synth, tmp_path, caplog):
    out = tmp_path / "run"
    assert main(train_args(tiny_synth, out, 1, "--reference-modality", "sar")) == 0
    first = read_metrics(out)
    assert len(first) == 1 and first[0]["step"] == "2" and 0.0 <= float(first[0]["mAP50"]) <= 1.0
    meta = json.loads((out / "weights.json").read_text())
    assert meta["class_names"] == list(SYNTH_CLASSES) and meta["config"]["reference_modality"] == "sar"
    assert meta["config"]["val"] == str(tiny_synth / "val")
    load_weights(out / "weights.safetensors")
    if not (out / "results.png").exists():  # the plot needs matplotlib; without it one warning says so
        assert "pip install matplotlib" in caplog.text

    assert main(train_args(tiny_synth, out, 2, "--reference-modality", "sar", "--resume")) == 0
    rows = read_metrics(out)
    assert len(rows) == 2 and rows[0] == first[0] and rows[1]["step"] == "4" and rows[1]["mAP50"] != ""
    assert json.loads((out / "last.json").read_text())["epoch"] == 2


def test_results_plot_or_one_warning(tmp_path, caplog):
    rows = [{"epoch": 1, "loss": 3.0, "cls": 1.0, "box": 1.5, "saliency": 0.5, "mAP50": ""},
            {"epoch": "2", "loss": "2.0", "cls": "0.8", "box": "1.0", "saliency": "0.2", "mAP50": "0.4"}]
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        assert plot_metrics(rows, tmp_path / "a.png") is None and plot_metrics(rows, tmp_path / "b.png") is None
        assert caplog.text.count("pip install matplotlib") <= 1 and not list(tmp_path.iterdir())
        return
    path = plot_metrics(rows, tmp_path / "results.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_train_data_layouts(tiny_synth, tmp_path):
    spec = resolve_data(tiny_synth)
    assert (spec.train, spec.val, spec.class_names) == (tiny_synth / "train", tiny_synth / "val", None)
    toml = tmp_path / "data.toml"
    toml.write_text(f'train = "{tiny_synth / "train"}"\nval = "{tiny_synth / "val"}"\nclasses = ["ship", "plane"]\n')
    assert resolve_data(toml).class_names == ("ship", "plane")
    assert resolve_data(tiny_synth, val=tiny_synth / "train").val == tiny_synth / "train"
    with pytest.raises(DataError, match="infrared/images"):
        modality_references(tiny_synth / "train", "infrared", [])
    toml.write_text('val = "x"\n')
    with pytest.raises(DataError, match="needs train"):
        resolve_data(toml)


def test_train_bad_input_exits_2_naming_the_path(tiny_synth, tmp_path, caplog):
    empty = tmp_path / "empty"
    (empty / "images").mkdir(parents=True)
    (empty / "labelTxt").mkdir()
    assert main(train_args(empty, tmp_path / "r", 1)) == 2
    assert str(empty) in caplog.text
    assert main(train_args(tiny_synth, tmp_path / "r", 1, "--reference-modality", "infrared")) == 2
    assert str(tiny_synth / "train" / "infrared" / "images") in caplog.text


# ------------------------------------------------------------------------------------------------- val

def test_val_shipped_weights_on_fresh_synthrs(tmp_path, capsys):
    data = tmp_path / "s99"
    generate_dataset(data, 4, size=512, seed=99, progress=False)
    summary = run_json(capsys, "val", "--data", str(data), "--json", "--no-progress")
    assert set(summary) == SUMMARY_KEYS and summary["metric"] == "voc07"
    assert set(summary["per_class_ap"]) <= set(SYNTH_CLASSES) and summary["num_ground_truth"] > 20
    # measured 0.875 with the SiLU weights (CPU, torch 2.13): plane, ship and storage-tank 1.0, small-vehicle 0.56
    assert summary["mAP"] > 0.8


def test_val_tiles_large_images_into_full_image_coordinates(tmp_path, capsys):
    data = tmp_path / "s768"
    generate_dataset(data, 1, size=768, seed=99, progress=False)
    summary = run_json(capsys, "val", "--data", str(data), "--imgsz", "512", "--json", "--no-progress",
                       "--save", str(tmp_path / "task1"))
    assert summary["mAP"] > 0.5
    detections = read_task1_dir(tmp_path / "task1")
    # Full-image coordinates: every box centre inside the 768 px image (tiles never leave it), and
    # boxes found beyond the first 512 px tile.
    centres = np.concatenate([d.polygons.mean(axis=1) for d in detections.values()])
    assert centres.min() >= 0 and centres.max() <= 768
    assert (centres > 600).any()


def test_detect_large_maps_each_tile_back(tmp_path):
    """A 512 scene pasted at (256, 256) of a 768 canvas is exactly one DOTA window: its confident
    detections, shifted by (256, 256), are found again among the merged full-image detections."""
    generate_dataset(tmp_path, 1, size=512, seed=98, progress=False)
    scene = read_image(next((tmp_path / "images").glob("*.png")))
    canvas = np.full((768, 768, 3), 114, dtype=np.uint8)
    canvas[256:, 256:] = scene
    model, _ = load_weights(shipped_weights())
    direct = predict(model, scene[None], conf=0.3)[0]
    merged = detect_large(model, canvas, imgsz=512, conf=0.3)
    assert len(direct) >= 5
    shifted = direct.rboxes + np.array([256, 256, 0, 0, 0])
    polys_a, polys_b = rbox_to_poly(shifted), rbox_to_poly(merged.rboxes)
    ia, ib = np.repeat(np.arange(len(shifted)), len(merged)), np.tile(np.arange(len(merged)), len(shifted))
    best = polygon_iou_pairs(polys_a[ia], polys_b[ib]).reshape(len(shifted), len(merged)).max(axis=1)
    assert np.mean(best > 0.7) >= 0.9, best


def test_val_bad_input_exits_2_naming_the_path(tmp_path, caplog):
    data = tmp_path / "one"
    generate_dataset(data, 1, size=128, seed=3, progress=False)
    missing = tmp_path / "nope.safetensors"
    assert main(["val", "--weights", str(missing), "--data", str(data)]) == 2
    assert str(missing) in caplog.text
    empty = tmp_path / "empty"
    (empty / "images").mkdir(parents=True)
    (empty / "labelTxt").mkdir()
    caplog.clear()
    with caplog.at_level(logging.ERROR):
        assert main(["val", "--data", str(empty)]) == 2
    assert str(empty) in caplog.text
    assert main(["val", "--data", str(tmp_path / "absent")]) == 2
    assert str(tmp_path / "absent") in caplog.text


def test_train_fine_tunes_from_weights_and_refuses_other_classes(tmp_path, caplog):
    """--weights starts from a weights file (the loaded model equals it); a class list that differs
    from the file's is refused with the list to use."""
    from cstf_edge.model.checkpoint import load_initial_weights, read_safetensors

    _, meta = read_safetensors(shipped_weights())
    model = build_model(meta["model"], len(meta["class_names"]))
    load_initial_weights(model, shipped_weights(), meta["class_names"])
    shipped, _ = load_weights(shipped_weights())
    for (name, a), b in zip(model.state_dict().items(), shipped.state_dict().values()):
        assert torch.equal(a, b), name
    data = tmp_path / "data"
    generate_dataset(data, 2, size=128, seed=5, progress=False)
    code = main(["train", "--data", str(data), "--weights", str(shipped_weights()), "--classes", "ship,plane",
                 "--out", str(tmp_path / "run"), "--epochs", "1", "--batch", "2", "--imgsz", "128",
                 "--workers", "0", "--no-progress"])
    assert code == 2
    assert "--classes plane,ship,storage-tank" in caplog.text


def test_train_takes_the_model_of_its_weights_and_warns_on_another(tmp_path, caplog):
    """Without --model, --weights decides the model size (the shipped weights are cstf-n-relu); an explicit
    other size with the same tensors loads with a warning; a corrupt weights file is a clear error (exit 2)."""
    from cstf_edge.model.checkpoint import load_initial_weights, read_safetensors
    from cstf_edge.shipped import SILU_WEIGHTS

    data = tmp_path / "data"
    generate_dataset(data, 2, size=128, seed=5, progress=False)
    base = ["train", "--data", str(data), "--epochs", "1", "--batch", "2", "--imgsz", "128", "--workers", "0",
            "--no-progress", "--classes", "plane,ship,storage-tank,small-vehicle,large-vehicle"]
    assert main(base + ["--weights", str(shipped_weights()), "--out", str(tmp_path / "run")]) == 0
    _, meta = read_safetensors(tmp_path / "run" / "weights.safetensors")
    assert meta["model"] == read_safetensors(shipped_weights())[1]["model"] == "cstf-n-relu"
    _, silu = read_safetensors(SILU_WEIGHTS)
    model = build_model("cstf-n-relu", len(silu["class_names"]))
    with caplog.at_level(logging.WARNING):
        load_initial_weights(model, SILU_WEIGHTS, silu["class_names"], "cstf-n-relu")
    assert "holds cstf-n weights; they start a cstf-n-relu model" in caplog.text
    corrupt = tmp_path / "corrupt.safetensors"
    corrupt.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00not a header")
    caplog.clear()
    assert main(base + ["--weights", str(corrupt), "--out", str(tmp_path / "bad")]) == 2
    assert str(corrupt) in caplog.text
