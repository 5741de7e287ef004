"""``cstf-edge run`` end to end on an ONNX export of the shipped weights: bad files reported while the run
goes on, outputs that parse back, tiling of a large scene, --skip-existing, GeoTIFF -> GeoJSON in the CRS,
the real DOTA samples scored, batching, videos, argument errors, and the runtime without torch."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import warnings
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest

from cstf_edge.cli import main
from cstf_edge.data.annotations import ImageLabels
from cstf_edge.data.dota import read_dota_labels, write_dota_labels
from cstf_edge.data.split import window_origins
from cstf_edge.data.synthrs import make_scene, render
from cstf_edge.data.task1 import read_task1_dir
from cstf_edge.geometry import polygon_iou_matrix
from cstf_edge.errors import CstfError
from cstf_edge.runtime.artifact import METADATA_KEY, ArtifactInfo
from cstf_edge.runtime.detector import ArrayWindows
from cstf_edge.runtime.run import RunConfig, run
from cstf_edge.runtime.visualize import render_scene

REPO = Path(__file__).resolve().parent.parent
SIZE = 512  # the shipped weights' training size: one tile per synthetic image, fast on CPU

try:
    import rasterio
except ImportError:  # the geo extra is optional
    rasterio = None


def export_shipped(path: Path, size: int = SIZE, dynamic: bool = False) -> Path:
    """The shipped weights as an ONNX artifact with cstf-edge metadata (until the export module lands)."""
    torch = pytest.importorskip("torch")
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from cstf_edge.model.checkpoint import load_weights, shipped_weights

    model, meta = load_weights(shipped_weights())
    axes = {"dynamic_axes": {"images": {0: "batch"}, "detections": {0: "batch"}}} if dynamic else {}
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the TorchScript exporter, as the export issue uses
        torch.onnx.export(model, (torch.zeros(1, 3, size, size),), str(path), opset_version=17,
                          input_names=["images"], output_names=["detections"], dynamo=False, **axes)
    info = ArtifactInfo.from_weights_meta(meta)
    info = replace(info, batch=None if dynamic else 1, preprocess=replace(info.preprocess, height=size, width=size))
    graph = onnx.load(str(path))
    entry = graph.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, info.to_json()
    onnx.save(graph, str(path))
    return path


@pytest.fixture(scope="session")
def onnx_model(tmp_path_factory) -> Path:
    return export_shipped(tmp_path_factory.mktemp("model") / "cstf-n-512.onnx")


@pytest.fixture(scope="session")
def onnx_dynamic(tmp_path_factory) -> Path:
    return export_shipped(tmp_path_factory.mktemp("model") / "cstf-n-512-dyn.onnx", dynamic=True)


def synth_folder(folder: Path, n: int, seed: int = 5, size: int = SIZE, suffix: str = ".png") -> list[ImageLabels]:
    """``n`` SynthRS scenes written as images, with their DOTA labels in ``folder/../labelTxt``."""
    folder.mkdir(parents=True, exist_ok=True)
    labels = []
    for index in range(n):
        scene = make_scene(seed, index, size=size)
        name = f"s{index:02d}"
        cv2.imwrite(str(folder / f"{name}{suffix}"), render(scene))
        truth = replace(scene.labels(), image_id=name)
        write_dota_labels(folder.parent / "labelTxt" / f"{name}.txt", truth)
        labels.append(truth)
    return labels


def cli(capsys, *argv) -> tuple[int, str, str]:
    code = main(["run", *map(str, argv), "--no-progress"])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def bad_files(folder: Path) -> dict[str, str]:
    """Broken images beside good ones, and the reason each must be reported with."""
    good = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    png, jpg = cv2.imencode(".png", good)[1].tobytes(), cv2.imencode(".jpg", good)[1].tobytes()
    files = {"empty.png": (b"", "empty file"), "cut.png": (png[: len(png) // 2], "truncated PNG"),
             "cut2.jpg": (jpg[: len(jpg) // 2], "truncated JPEG"), "text.png": (b"hello\n" * 30, "not an image"),
             "dot.png": (cv2.imencode(".png", good[:1, :1])[1].tobytes(), "too small")}
    for name, (data, _) in files.items():
        (folder / name).write_bytes(data)
    return {name: reason for name, (_, reason) in files.items()}


def test_bad_files_are_named_and_the_good_ones_still_written(tmp_path, onnx_model, capsys):
    synth_folder(tmp_path / "images", 2)
    reasons = bad_files(tmp_path / "images")
    code, out, err = cli(capsys, tmp_path / "images", "--model", onnx_model, "--out", tmp_path / "out")
    assert code == 1
    assert "2 done" in out and "5 failed" in out
    for name, reason in reasons.items():
        line = next(line for line in err.splitlines() if line.startswith("failed:") and name in line)
        assert str(tmp_path / "images" / name) in line and reason in line
    for good in ("s00", "s01"):
        assert (tmp_path / "out" / "labelTxt" / f"{good}.txt").is_file()
        assert (tmp_path / "out" / "json" / f"{good}.json").is_file()
    assert not (tmp_path / "out" / "labelTxt" / "cut.txt").exists()
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert (summary["processed"], summary["failed"], summary["sources"]) == (2, 5, 7)
    assert {Path(f["path"]).name for f in summary["failures"]} == set(reasons)


def test_outputs_parse_back_and_task1_scores(tmp_path, onnx_model, capsys):
    truth = synth_folder(tmp_path / "data" / "images", 3)
    out = tmp_path / "out"
    code, _, _ = cli(capsys, tmp_path / "data" / "images", "--model", onnx_model, "--out", out,
                     "--format", "dota,task1,geojson", "--save-vis")
    assert code == 0
    task1 = read_task1_dir(out)
    assert set(task1) == {"plane", "ship", "storage-tank", "small-vehicle", "large-vehicle"}
    total = 0
    for labels in truth:
        name = labels.image_id
        record = json.loads((out / "json" / f"{name}.json").read_text())  # task1 implies json
        dota = read_dota_labels(out / "labelTxt" / f"{name}.txt")
        polygons = np.array([d["polygon"] for d in record["detections"]]).reshape(-1, 4, 2)
        np.testing.assert_allclose(dota.polygons, polygons, atol=0.011)
        assert dota.classes == [d["class"] for d in record["detections"]] and not dota.difficult.any()
        assert set(record["timings_ms"]) >= {"decode", "pre", "infer", "post"}
        assert record["timings_ms"]["decode"] > 0.1  # the PNG decode, not only the window read
        geo = json.loads((out / "geojson" / f"{name}.geojson").read_text())
        assert geo["type"] == "FeatureCollection" and len(geo["features"]) == len(polygons)
        for feature in geo["features"]:
            ring = feature["geometry"]["coordinates"][0]
            assert feature["geometry"]["type"] == "Polygon" and len(ring) == 5 and ring[0] == ring[-1]
            assert feature["properties"]["coordinates"] == "pixel"
        assert cv2.imread(str(out / "vis" / f"{name}.jpg")).shape == (SIZE, SIZE, 3)
        total += len(polygons)
    assert total == sum(len(d) for d in task1.values()) > 0
    assert main(["eval-dota", "--results", str(out), "--labels", str(tmp_path / "data" / "labelTxt"), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["mAP"] > 0.3  # SynthRS-trained weights on SynthRS scenes


def test_classes_filter_and_bad_arguments_exit_2_before_running(tmp_path, onnx_model, capsys):
    synth_folder(tmp_path / "images", 1)
    images, out = tmp_path / "images", tmp_path / "out"
    assert cli(capsys, images, "--model", onnx_model, "--out", out, "--classes", "ship,4")[0] == 0
    found = read_dota_labels(out / "labelTxt" / "s00.txt")
    assert set(found.classes) <= {"ship", "large-vehicle"}
    bad = [("--conf", "2"), ("--classes", "boat"), ("--format", "xml"), ("--bands", "1,2"),
           ("--reference", str(images / "s00.png")), ("--imgsz", "1024"), ("--overlap", "600")]
    for option, value in bad:
        code, _, err = cli(capsys, images, "--model", onnx_model, "--out", tmp_path / "never", option, value)
        assert code == 2, (option, value, err)
    assert cli(capsys, tmp_path / "missing", "--model", onnx_model, "--out", tmp_path / "never")[0] == 2
    assert cli(capsys, images, "--model", tmp_path / "none.onnx", "--out", tmp_path / "never")[0] == 2
    assert not (tmp_path / "never").exists()
    with pytest.raises(SystemExit) as stop:
        main(["run", str(images)])  # --model is required
    assert stop.value.code == 2


@pytest.mark.slow
def test_large_scene_is_tiled_and_detections_land_in_full_image_pixels(tmp_path, onnx_model):
    scene = make_scene(1, 0, size=3000)
    cv2.imwrite(str(tmp_path / "big.png"), render(scene)[:2000])  # 3000 wide, 2000 high
    summary = run(RunConfig([str(tmp_path / "big.png")], model=str(onnx_model), out=str(tmp_path / "out"),
                            tile=SIZE, overlap=100, progress=False))
    assert summary.processed == 1 and summary.times.counts["infer"] == len(window_origins(3000, 2000, SIZE, 100))
    found = read_dota_labels(tmp_path / "out" / "labelTxt" / "big.txt")
    centres = found.polygons.mean(axis=1)
    assert len(found) > 50 and centres[:, 0].max() > 2000 and centres[:, 1].max() > 1024
    assert (centres >= 0).all() and (centres[:, 0] <= 3000).all() and (centres[:, 1] <= 2000).all()
    truth = scene.labels()
    inside = truth.polygons[..., 1].max(axis=1) < 2000
    gt_polygons, gt_classes = truth.polygons[inside], np.array(truth.classes)[inside]
    same_class = np.array(found.classes)[:, None] == gt_classes[None]
    matched = ((polygon_iou_matrix(found.polygons, gt_polygons) > 0.5) & same_class).any(axis=0)
    far = gt_polygons.mean(axis=1)[:, 0] > 1500  # objects seen only by later tiles
    assert far.sum() >= 20 and matched.mean() > 0.6 and matched[far].mean() > 0.6
    image = cv2.imread(str(tmp_path / "big.png"))
    assert render_scene(ArrayWindows(image), _result(found), max_side=600).shape == (400, 600, 3)


def test_pictures_draw_only_detections_of_the_vis_score():
    from cstf_edge.runtime.detector import DetectionResult
    from cstf_edge.runtime.visualize import draw_detections

    image = np.full((200, 200, 3), 90, np.uint8)
    boxes = np.array([[50.0, 50, 40, 20, 0.3], [150, 150, 40, 20, -0.5]])
    both = DetectionResult(boxes, np.array([0.9, 0.1], np.float32), np.array([0, 1]), ["a", "b"], (200, 200))
    confident = DetectionResult(boxes[:1], np.array([0.9], np.float32), np.array([0]), ["a", "b"], (200, 200))
    drawn = draw_detections(image, both, min_score=0.5)
    assert np.array_equal(drawn, draw_detections(image, confident))
    assert not np.array_equal(drawn, draw_detections(image, both))
    with pytest.raises(CstfError, match="--vis-conf must be in"):
        RunConfig(["x.png"], model="m.onnx", vis_conf=1.5, save_vis=True).check()
    with pytest.raises(CstfError, match="add --save-vis"):
        RunConfig(["x.png"], model="m.onnx", vis_conf=0.5).check()


def _result(labels: ImageLabels):
    from cstf_edge.runtime.detector import DetectionResult

    names = sorted(set(labels.classes))
    ids = np.array([names.index(c) for c in labels.classes])
    return DetectionResult(labels.rboxes(), np.ones(len(labels), np.float32), ids, names, (2000, 3000))


def test_skip_existing_resumes_and_keeps_task1_whole(tmp_path, onnx_model, capsys):
    synth_folder(tmp_path / "images", 3)
    args = (tmp_path / "images", "--model", onnx_model, "--out", tmp_path / "out")
    assert cli(capsys, *args)[0] == 0
    task1_before = {p.name: p.read_text() for p in (tmp_path / "out").glob("Task1_*.txt")}
    stamps = {p: p.stat().st_mtime_ns for p in (tmp_path / "out" / "labelTxt").iterdir()}
    (tmp_path / "out" / "json" / "s01.json").unlink()
    code, out, _ = cli(capsys, *args, "--skip-existing", "--json")
    summary = json.loads(out)
    assert code == 0 and (summary["processed"], summary["skipped"]) == (1, 2)
    for path, stamp in stamps.items():
        assert (path.stat().st_mtime_ns == stamp) == (path.stem != "s01")
    task1_after = {p.name: p.read_text() for p in (tmp_path / "out").glob("Task1_*.txt")}
    assert {k: sorted(v.splitlines()) for k, v in task1_after.items()} == \
        {k: sorted(v.splitlines()) for k, v in task1_before.items()}


@pytest.mark.skipif(rasterio is None, reason="needs rasterio (pip install cstf-edge[geo])")
def test_geotiff_detections_round_trip_to_geojson_in_its_crs(tmp_path, onnx_model):
    image = render(make_scene(5, 0, size=SIZE))
    transform = rasterio.Affine(0.5, 0.05, 500000.0, 0.04, -0.5, 4600000.0)  # a rotated grid, not only north-up
    (tmp_path / "src").mkdir()
    with rasterio.open(tmp_path / "src" / "geo.tif", "w", driver="GTiff", width=SIZE, height=SIZE, count=3,
                       dtype="uint8", crs="EPSG:32633", transform=transform) as dst:
        dst.write(image[..., ::-1].transpose(2, 0, 1))  # bands R, G, B
    sar = (render(make_scene(5, 1, size=SIZE), "sar").astype(np.float32) * 200).astype(np.uint16)
    with rasterio.open(tmp_path / "src" / "sar.tif", "w", driver="GTiff", width=SIZE, height=SIZE, count=1,
                       dtype="uint16", crs="EPSG:4326", transform=rasterio.Affine(1e-5, 0, 10, 0, -1e-5, 45)) as dst:
        dst.write(sar[None] if sar.ndim == 2 else sar[..., 0][None])
    summary = run(RunConfig([str(tmp_path / "src")], model=str(onnx_model), out=str(tmp_path / "out"),
                            formats=("json", "geojson"), progress=False))
    assert (summary.processed, summary.failed) == (2, 0)
    record = json.loads((tmp_path / "out" / "json" / "geo.json").read_text())
    collection = json.loads((tmp_path / "out" / "geojson" / "geo.geojson").read_text())
    assert collection["crs"]["properties"]["name"].endswith("32633") and collection["cstf_edge"]["coordinates"] == "crs"
    assert record["georeference"]["epsg"] == 32633 and len(collection["features"]) == record["num_detections"] > 0
    inverse = np.linalg.inv(np.array(list(transform)[:9], dtype=np.float64).reshape(3, 3))
    for feature, detection in zip(collection["features"], record["detections"]):
        ring = np.array(feature["geometry"]["coordinates"][0])
        assert feature["properties"]["coordinates"] == "crs" and np.array_equal(ring[0], ring[-1])
        pixels = (np.c_[ring[:4], np.ones(4)] @ inverse.T)[:, :2]
        expected = np.array(detection["polygon"]).reshape(4, 2)
        assert min(np.abs(np.roll(pixels, k, axis=0) - expected).max() for k in range(4)) < 0.011 or \
            min(np.abs(np.roll(pixels[::-1], k, axis=0) - expected).max() for k in range(4)) < 0.011
    sar_geo = json.loads((tmp_path / "out" / "geojson" / "sar.geojson").read_text())
    assert sar_geo["crs"]["properties"]["name"].endswith("4326")


def test_real_dota_images_task1_scores_through_the_evaluator(tmp_path, onnx_model, shared_data):
    from cstf_edge.eval import evaluate_dota

    demo = shared_data / "dota" / "devkit_yolo_demo"
    summary = run(RunConfig([str(demo / "images")], model=str(onnx_model), out=str(tmp_path / "out"),
                            formats=("task1",), progress=False))
    assert summary.processed == len(list((demo / "images").iterdir())) and summary.failed == 0
    result = evaluate_dota(tmp_path / "out", demo / "labelTxt")
    assert math.isfinite(result.mAP) and 0.0 <= result.mAP <= 1.0
    assert set(result.per_class_ap) >= {"small-vehicle", "large-vehicle"}


def test_batched_run_gives_the_detections_of_single_images(tmp_path, onnx_dynamic):
    synth_folder(tmp_path / "images", 5, seed=7)
    for batch in (1, 4):
        summary = run(RunConfig([str(tmp_path / "images")], model=str(onnx_dynamic), out=str(tmp_path / f"b{batch}"),
                                batch=batch, formats=("json",), progress=False))
        assert summary.processed == 5
    assert summary.times.counts["infer"] == 2  # 5 images as a batch of 4 and one of 1
    for k in range(5):
        one, four = (json.loads((tmp_path / f"b{b}" / "json" / f"s{k:02d}.json").read_text()) for b in (1, 4))
        assert one["num_detections"] == four["num_detections"]
        for a, b in zip(one["detections"], four["detections"]):
            assert a["class"] == b["class"] and abs(a["score"] - b["score"]) < 1e-3
            np.testing.assert_allclose(a["polygon"], b["polygon"], atol=0.05)


def test_video_frames_each_get_outputs(tmp_path, onnx_model, capsys):
    path = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 2.0, (SIZE, SIZE))
    if not writer.isOpened():
        pytest.skip("this OpenCV build cannot write MJPG video")
    for index in range(3):
        writer.write(render(make_scene(5, index, size=SIZE)))
    writer.release()
    code, out, _ = cli(capsys, path, "--model", onnx_model, "--out", tmp_path / "out", "--format", "dota")
    assert code == 0 and "3 done" in out
    assert sorted(p.name for p in (tmp_path / "out" / "labelTxt").iterdir()) == \
        [f"clip_{k:06d}.txt" for k in range(3)]


def test_runtime_runs_an_onnx_model_with_torch_unimportable(tmp_path, onnx_model):
    synth_folder(tmp_path / "images", 1)
    code = f"""
import sys
sys.modules["torch"] = None  # any 'import torch' now raises ImportError
import cstf_edge.runtime
import cstf_edge.runtime.run
from cstf_edge.runtime.run import RunConfig, run
summary = run(RunConfig([{str(tmp_path / 'images')!r}], model={str(onnx_model)!r}, out={str(tmp_path / 'out')!r},
                        formats=("dota", "task1", "json", "geojson"), save_vis=True, progress=False))
assert summary.processed == 1 and summary.failed == 0, summary.to_dict()
loaded = sorted(name for name, module in sys.modules.items() if module is not None and name.split(".")[0] == "torch")
assert not loaded, loaded
from cstf_edge.cli import main  # the command line too, as a Jetson without torch runs it
assert main(["run", {str(tmp_path / 'images')!r}, "--model", {str(onnx_model)!r}, "--out", {str(tmp_path / 'cli')!r},
             "--no-progress"]) == 0
loaded = sorted(name for name, module in sys.modules.items() if module is not None and name.split(".")[0] == "torch")
assert not loaded, loaded
print("ok", summary.detections)
"""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.splitlines()[-1].startswith("ok")


def test_real_hrsc2016_images_write_every_format_and_ship_scores(tmp_path, onnx_model, shared_data):
    from cstf_edge.eval import evaluate_dota

    hrsc = shared_data / "hrsc2016" / "FullDataSet"
    summary = run(RunConfig([str(hrsc / "AllImages")], model=str(onnx_model), out=str(tmp_path / "out"),
                            formats=("dota", "task1", "json", "geojson"), conf=0.05, progress=False))
    assert summary.failed == 0 and summary.processed == len(list((hrsc / "AllImages").iterdir()))
    for folder in ("labelTxt", "json", "geojson"):
        assert len(list((tmp_path / "out" / folder).iterdir())) == summary.processed
    result = evaluate_dota(tmp_path / "out", hrsc / "Annotations", labels_format="hrsc", classes=["ship"])
    assert set(result.per_class_ap) == {"ship"} and math.isfinite(result.mAP)


def test_detect_large_takes_a_path(tmp_path, onnx_model):
    from cstf_edge._io import write_image
    from cstf_edge.data.synthrs import make_scene, render
    from cstf_edge.runtime import Detector

    image = render(make_scene(2, 0, size=700), "optical")
    write_image(tmp_path / "scene.png", image)
    with Detector(onnx_model) as detector:
        from_path = detector.detect_large(tmp_path / "scene.png")
        from_array = detector.detect_large(image)
    assert from_path.image_shape == (700, 700) and len(from_path) == len(from_array) > 0
    np.testing.assert_allclose(from_path.rboxes, from_array.rboxes)
