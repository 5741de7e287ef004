"""The training loop on a tiny set of bright rectangles: the loss falls, checkpoints load, resume is exact."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("safetensors")

from cstf_edge._io import write_image  # noqa: E402
from cstf_edge.data.annotations import ImageLabels  # noqa: E402
from cstf_edge.data.dota import write_dota_labels  # noqa: E402
from cstf_edge.geometry import rbox_to_poly  # noqa: E402
from cstf_edge.model.checkpoint import load_weights, read_safetensors  # noqa: E402
from cstf_edge.model.predict import predict  # noqa: E402
from cstf_edge.model.train import TrainConfig, TrainConfigError, train  # noqa: E402

TINY_CLASSES = ("bar", "block")
SIZE = 128


def make_tiny_dota(root: Path, count: int = 16, size: int = SIZE, seed: int = 0) -> Path:
    """``count`` grey-noise images with 1-3 objects: long bright bars (class 0), squarish blocks (1)."""
    rng = np.random.default_rng(seed)
    for index in range(count):
        image = rng.integers(20, 60, size=(size, size, 3), dtype=np.uint8)
        rboxes, classes = [], []
        for _ in range(int(rng.integers(1, 4))):
            kind = int(rng.integers(0, 2))
            long_side = rng.uniform(0.25, 0.45) * size
            short = long_side * (rng.uniform(0.2, 0.35) if kind == 0 else rng.uniform(0.8, 1.0))
            centre = rng.uniform(0.25, 0.75, size=2) * size
            rboxes.append([centre[0], centre[1], long_side, short, rng.uniform(-np.pi / 2, np.pi / 2)])
            classes.append(TINY_CLASSES[kind])
        polys = rbox_to_poly(np.array(rboxes))
        for poly, name in zip(polys, classes):
            colour = (230, 230, 230) if name == "bar" else (60, 200, 240)
            cv2.fillPoly(image, [np.round(poly).astype(np.int32)], colour)
        image_id = f"tiny_{index:03d}"
        write_image(root / "images" / f"{image_id}.png", image)
        write_dota_labels(root / "labelTxt" / f"{image_id}.txt",
                          ImageLabels(image_id, polys, classes, np.zeros(len(classes), dtype=np.int64)))
    return root


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory) -> Path:
    return make_tiny_dota(tmp_path_factory.mktemp("tiny") / "data")


def tiny_config(data: Path, out: Path, **changes) -> TrainConfig:
    base = dict(data=str(data), class_names=TINY_CLASSES, out=str(out), imgsz=SIZE, batch=4, epochs=6,
                workers=0, augment=False, lr=4e-3, device="cpu", progress=False)
    return TrainConfig(**(base | changes))


def metrics(run: Path) -> list[dict]:
    import csv

    with (run / "metrics.csv").open() as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def trained_run(tiny_data, tmp_path_factory) -> Path:
    torch.set_num_threads(1)
    return train(tiny_config(tiny_data, tmp_path_factory.mktemp("runs") / "fit"))


def test_loss_falls_on_a_tiny_set(trained_run):
    rows = metrics(trained_run)
    assert len(rows) == 6 and rows[-1]["step"] == "24"
    first, last = float(rows[0]["loss"]), float(rows[-1]["loss"])
    assert last < 0.5 * first, rows
    assert float(rows[-1]["box"]) < float(rows[0]["box"])


def test_checkpoints_are_self_describing_and_load(trained_run, tiny_data):
    meta = json.loads((trained_run / "weights.json").read_text())
    assert meta["class_names"] == list(TINY_CLASSES) and meta["imgsz"] == SIZE and meta["model"] == "cstf-n"
    assert len(meta["data_hash"]) == 64 and meta["epoch"] == 6
    model, loaded_meta = load_weights(trained_run / "weights.safetensors")
    assert loaded_meta == meta
    images = np.stack([cv2.imread(str(p)) for p in sorted((tiny_data / "images").glob("*.png"))[:2]])
    detections = predict(model, images, conf=0.01)
    assert len(detections) == 2
    for item in detections:
        assert item.rboxes.shape[1] == 5 and np.all(np.diff(item.scores) <= 0)
        assert np.all(item.rboxes[:, 2] >= item.rboxes[:, 3])


def test_resume_continues_exactly(tiny_data, tmp_path):
    torch.set_num_threads(1)
    straight = train(tiny_config(tiny_data, tmp_path / "straight", epochs=2))
    interrupted = train(tiny_config(tiny_data, tmp_path / "resumed", epochs=2, max_steps=4))
    assert len(metrics(interrupted)) == 1
    resumed = train(tiny_config(tiny_data, tmp_path / "resumed", epochs=2, resume=True))
    a, _ = read_safetensors(straight / "last.safetensors")
    b, meta = read_safetensors(resumed / "last.safetensors")
    assert meta["step"] == 8 and a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, msg=key)
    assert [r["loss"] for r in metrics(straight)] == [r["loss"] for r in metrics(resumed)]


def test_resume_refuses_another_class_list(trained_run, tiny_data):
    config = tiny_config(tiny_data, trained_run, class_names=("bar", "block", "other"), resume=True)
    with pytest.raises(TrainConfigError, match="class_names"):
        train(config)


def test_bad_config_is_refused(tiny_data, tmp_path):
    with pytest.raises(TrainConfigError, match="batch=64"):
        train(tiny_config(tiny_data, tmp_path / "x", batch=64))
    with pytest.raises(TrainConfigError, match="amp"):
        train(tiny_config(tiny_data, tmp_path / "x", amp="int4"))
