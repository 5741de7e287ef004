"""Export: options and profiles, calibration manifests, the FP32/FP16/INT8 pipeline end to end at a small
input size (parity, metadata the runtime reads, calibration cache reuse, gates), and bad input."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from cstf_edge.cli import main  # noqa: E402
from cstf_edge.data.synthrs import generate_dataset  # noqa: E402
from cstf_edge.export import ExportError, ExportOptions, build_options, run_export  # noqa: E402
from cstf_edge.export.calibration import CalibrationBatcher, CalibrationManifest  # noqa: E402
from cstf_edge.export.options import load_profile  # noqa: E402
from cstf_edge.runtime import Detector, PreprocessSpec  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
SIZE = 256


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("CSTF_EDGE_CACHE", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def scenes(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("scenes")
    generate_dataset(root / "calib", 8, size=SIZE, seed=3, progress=False)
    generate_dataset(root / "val", 6, size=SIZE, seed=2, progress=False)
    manifest = root / "calib.toml"
    manifest.write_text(f'source = "dir"\npath = "{root / "calib" / "images"}"\ncount = 8\n')
    return {"calib": manifest, "val": root / "val"}


def test_every_shipped_profile_loads_and_checks():
    profiles = sorted((REPO / "export").glob("*.toml"))
    assert {p.stem for p in profiles} >= {"cpu-int8", "orin-nano-int8", "orin-fp16", "ground-station-fp16",
                                          "ground-station-int8"}
    for profile in profiles:
        options = build_options(str(profile), {})
        assert options.precision in ("fp16", "int8") and options.imgsz == 1024
        if options.precision == "int8":
            assert Path(options.calib).is_file(), profile


def test_relu_profile_names_its_weights_and_fp32_groups_select_scopes(tmp_path, monkeypatch):
    from types import SimpleNamespace

    from cstf_edge.export.cli import options_from_args
    from cstf_edge.export.graph_policy import int8_float_nodes

    monkeypatch.chdir(tmp_path)  # the profile's paths resolve beside the repository, not the working folder
    options = build_options(str(REPO / "export" / "cpu-int8-relu.toml"), {})
    assert Path(options.weights).is_file() and options.weights.endswith("cstf-n-relu-synthrs.safetensors")
    assert options.fp32_groups == ()  # the stem is quantized too (sum-preserving weight rounding)
    nodes = [SimpleNamespace(name=n, op_type="Conv") for n in (
        "/backbone/stem/conv/Conv", "/backbone/stem2/conv/Conv", "/backbone/stage1/x/Conv",
        "/head/levels.0/cls_out/Conv")]
    graph = SimpleNamespace(node=nodes)
    assert int8_float_nodes(graph) == ["/head/levels.0/cls_out/Conv"]
    assert int8_float_nodes(graph, ("/backbone/stem",)) == ["/backbone/stem/conv/Conv", "/head/levels.0/cls_out/Conv"]
    flags = SimpleNamespace(profile=None, dynamic_batch=None, fp32_groups="/backbone/stem, /neck/",
                            **{k: None for k in ("weights", "precision", "target", "calib", "calib_method", "val",
                                                 "imgsz", "batch", "with_reference", "sensitivity", "weight_rounding",
                                                 "workspace_gib", "dla_core", "name", "out")})
    assert options_from_args(flags).fp32_groups == ("/backbone/stem", "/neck/")


def test_flags_override_a_profile():
    options = build_options(str(REPO / "export" / "cpu-int8.toml"), {"imgsz": 512, "calib_method": None})
    assert options.imgsz == 512 and options.calib_method == "minmax" and options.precision == "int8"


def test_profile_with_an_unknown_key_names_it(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('precision = "int8"\nimg_size = 1024\n')
    with pytest.raises(ExportError, match="img_size"):
        load_profile(bad)


@pytest.mark.parametrize("overrides, message", [
    ({"imgsz": 1000}, "multiple of 64"),
    ({"precision": "int4"}, "int4"),
    ({"dynamic_batch": (4, 2)}, "4:2"),
    ({"dla_core": 0}, "--target tensorrt"),
    ({"precision": "int8"}, "calibration set"),
    ({"weight_rounding": "stochastic"}, "--weight-rounding 'stochastic' is not one of sum-preserving, nearest"),
])
def test_impossible_options_are_refused(overrides, message):
    with pytest.raises(ExportError, match=message):
        build_options(None, overrides)


def test_calibration_manifest_errors(tmp_path):
    small = tmp_path / "small.toml"
    small.write_text('source = "synthrs"\ncount = 2\n')
    with pytest.raises(ExportError, match="too small"):
        CalibrationManifest.load(small)
    missing = tmp_path / "missing.toml"
    missing.write_text(f'source = "dir"\npath = "{tmp_path / "nowhere"}"\ncount = 8\n')
    with pytest.raises(ExportError, match="does not exist"):
        CalibrationManifest.load(missing).image_paths()


def test_calibration_batcher_names_an_unreadable_image(tmp_path, scenes):
    good = sorted((scenes["val"] / "images").glob("*.png"))[:2]
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png")
    batcher = CalibrationBatcher(good + [broken], PreprocessSpec(SIZE, SIZE), batch=1)
    with pytest.raises(ExportError, match="broken.png"):
        list(batcher)


def test_calibration_batches_equal_the_runtime_preprocessing(scenes):
    from cstf_edge._io import read_image
    from cstf_edge.runtime import preprocess_batch

    paths = sorted((scenes["val"] / "images").glob("*.png"))[:3]
    spec = PreprocessSpec(SIZE, SIZE)
    batches = list(CalibrationBatcher(paths, spec, batch=2))
    assert [b.shape[0] for b in batches] == [2, 1]
    expected = preprocess_batch([read_image(p) for p in paths], spec)[0]
    np.testing.assert_array_equal(np.concatenate(batches), expected)


@pytest.mark.slow
def test_int8_export_end_to_end(tmp_path, scenes, monkeypatch):
    from cstf_edge.export import sensitivity

    choose = sensitivity.choose_float_groups

    def also_stage1(rows, *args, **kwargs):  # a group of convolutions kept FP32, as the sweep may keep one
        for row in rows:
            row.kept_fp32 = row.kept_fp32 or row.group == "/backbone/stage1"
        return choose(rows, *args, **kwargs)

    monkeypatch.setattr(sensitivity, "choose_float_groups", also_stage1)
    options = ExportOptions(precision="int8", imgsz=SIZE, calib=str(scenes["calib"]), val=str(scenes["val"]),
                            out=str(tmp_path / "out"))
    summary = run_export(options, progress=False)
    out = tmp_path / "out"
    names = {p.name for p in out.iterdir()}
    for precision in ("fp32", "fp16", "int8"):
        assert f"cstf-n-relu-{SIZE}.{precision}.onnx" in names
        assert f"cstf-n-relu-{SIZE}.{precision}.onnx.report.json" in names
        report = summary["artifacts"][precision]
        assert 0.0 <= report["accuracy"]["map50_voc07"] <= 100.0
        assert report["latency_ms_batch1_cpu"] > 0
    assert "cstf-n-relu-256.int8.sensitivity.json" in names
    assert not [n for n in names if n.startswith(".")], "staging files left behind"
    fp32 = summary["artifacts"]["fp32"]["parity"]
    assert fp32["against"] == "pytorch fp32" and fp32["max_abs_error"] < 1e-2
    assert summary["gates"]["fp32_detection_parity"]["passed"]
    assert set(summary["gates"]) == {"fp32_detection_parity", "fp16_map_drop", "int8_map_drop"}
    import onnx

    fp32_graph = onnx.load(str(out / f"cstf-n-relu-{SIZE}.fp32.onnx")).graph
    slices = [n.name for n in fp32_graph.node
              if n.op_type in ("Slice", "Split") and n.name.startswith(("/backbone/", "/neck/"))]
    assert not slices, f"CSP halves should be two convolutions, not slices: {slices}"
    # Convolutions that stay FP32 in the INT8 model (the head's outputs, a group the sweep keeps) keep the FP32
    # weights: only those that become INT8 are rounded onto the grid.
    from onnx import numpy_helper

    int8_graph = onnx.load(str(out / f"cstf-n-relu-{SIZE}.int8.onnx")).graph
    assert not [n.name for n in int8_graph.node if n.op_type == "Resize" and n.name.startswith("/neck/")]
    fp32_weights = {i.name: numpy_helper.to_array(i) for i in fp32_graph.initializer}
    int8_weights = {i.name: numpy_helper.to_array(i) for i in int8_graph.initializer}
    kept = [n for n in int8_graph.node if n.op_type == "Conv" and ("_out/" in n.name or "/stage1/" in n.name)]
    assert any("/stage1/" in n.name for n in kept)
    assert kept and all(n.input[1] in int8_weights for n in kept)
    fp32_conv = {n.name: n.input[1] for n in fp32_graph.node if n.op_type == "Conv"}
    for node in kept:
        np.testing.assert_array_equal(int8_weights[node.input[1]], fp32_weights[fp32_conv[node.name]])
    sweep = json.loads((out / "cstf-n-relu-256.int8.sensitivity.json").read_text())
    assert len(sweep) > 10 and all(row["score_error"] >= 0 for row in sweep)
    # The runtime reads what the export wrote, and the INT8 model carries Q/DQ nodes and its calibration.
    with Detector(out / "cstf-n-relu-256.int8.onnx") as detector:
        assert detector.info.precision == "int8" and detector.info.imgsz == (SIZE, SIZE)
        assert detector.info.extra["calibration"]["method"] == "minmax"
        assert detector.info.extra["quantized_tensors"] > 50
        assert detector.info.extra["weight_rounding"] == "sum-preserving-v1"
        assert detector.info.extra["ranges"] == "concat-shared-v1"
        assert detector.info.extra["ort_layout"] == "ort-int8-layout-v1"
        assert detector.info.extra["gathered_upsamples"] >= 2  # the neck's two upsamples
        # the 3-channel stem and the two CSTF fusions' first convolutions (features, context, confidences and the
        # keypoint map: an odd channel count)
        assert detector.info.extra["padded_convs"] == 3
        found = detector.detect(np.full((300, 200, 3), 90, np.uint8))
        assert found.image_shape == (300, 200)
    # A second export with the same inputs reuses the calibration ranges and the sweep (no image is read).
    options.out, options.val = str(tmp_path / "again"), None
    import cstf_edge.export.calibration as calibration

    def refuse(*args, **kwargs):
        raise AssertionError("calibration images were read again")

    original = calibration.CalibrationBatcher.batches
    calibration.CalibrationBatcher.batches = refuse
    try:
        again = run_export(options, progress=False)
    finally:
        calibration.CalibrationBatcher.batches = original
    assert again["artifacts"]["int8"]["metadata"]["extra"]["calibration"]["cache_key"] == \
        summary["artifacts"]["int8"]["metadata"]["extra"]["calibration"]["cache_key"]


def test_cli_refuses_a_corrupt_checkpoint_and_leaves_nothing(tmp_path):
    weights = tmp_path / "broken.safetensors"
    weights.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    out = tmp_path / "out"
    code = main(["export", "--weights", str(weights), "--imgsz", str(SIZE), "--out", str(out)])
    assert code == 2
    assert not out.exists() or not any(out.iterdir())


def test_cli_int8_without_calibration_set_is_a_clear_error(tmp_path, caplog):
    code = main(["export", "--precision", "int8", "--imgsz", str(SIZE), "--out", str(tmp_path / "o")])
    assert code == 2
    assert "--calib" in caplog.text


def test_python_dash_m_entry_shows_help(capsys):
    import runpy
    import sys

    argv = sys.argv
    sys.argv = ["python -m cstf_edge.export", "--help"]
    try:
        with pytest.raises(SystemExit) as stop:
            runpy.run_module("cstf_edge.export", run_name="__main__")
    finally:
        sys.argv = argv
    assert stop.value.code == 0
    assert "export/cpu-int8.toml" in capsys.readouterr().out


def test_two_input_export_runs_with_a_reference_image(tmp_path, scenes):
    options = ExportOptions(precision="int8", imgsz=SIZE, calib=str(scenes["calib"]), with_reference=True,
                            sensitivity=False, out=str(tmp_path / "ref"), name="ref")
    summary = run_export(options, progress=False)
    assert summary["gates"]["fp32_detection_parity"]["passed"]
    from cstf_edge._io import read_image

    images = sorted((scenes["val"] / "images").glob("*.png"))
    for precision in ("fp32", "int8"):
        with Detector(tmp_path / "ref" / f"ref.{precision}.onnx") as detector:
            assert detector.info.input_names == ["images", "reference"]
            found = detector.detect(read_image(images[0]), reference=read_image(images[1]))
            assert found.image_shape == (SIZE, SIZE)


def test_a_cached_sensitivity_sweep_over_other_groups_is_not_reused(tmp_path):
    from cstf_edge.export.sensitivity import GroupSensitivity, load_table, save_table

    path = tmp_path / "sweep.json"
    save_table([GroupSensitivity("/backbone/stem", 3, 0.001, 0.1), GroupSensitivity("/cstf/saliency", 4, 0.0, 0.0)],
               path)
    groups = {"/backbone/stem": ["a", "b", "c"], "/cstf/saliency": ["d", "e", "f", "g"]}
    assert [r.group for r in load_table(path, groups)] == ["/backbone/stem", "/cstf/saliency"]
    assert load_table(path, {**groups, "/cstf/saliency": ["d", "e"]}) is None  # the policy quantizes fewer nodes
    assert load_table(path, {"/backbone/stem": ["a", "b", "c"]}) is None
    assert load_table(tmp_path / "missing.json", groups) is None


@pytest.mark.slow
@pytest.mark.parametrize("target, sweep", [("onnxruntime", False), ("tensorrt", False), ("onnxruntime", True)])
def test_int8_ranges_are_calibrated_on_the_fp32_model(tmp_path, scenes, monkeypatch, target, sweep):
    """The cached ranges are the FP32 model's (the cache is keyed by its hash), whichever path fills them: the
    model quantized afterwards has rounded weights and reads them from the cache."""
    from cstf_edge.export import pipeline
    from cstf_edge.export.quantize_modelopt import modelopt_available

    if target == "tensorrt" and modelopt_available() is not None:
        pytest.skip("Model Optimizer calibrates by itself where it is installed")
    calibrated = []
    original = pipeline.ExportRun._calibrate

    def spy(self, source, out, batcher, cache, exclude, **kwargs):
        calibrated.append((Path(source).name, cache.is_file()))
        return original(self, source, out, batcher, cache, exclude, **kwargs)

    if target == "onnxruntime":
        monkeypatch.setattr(pipeline.ExportRun, "_calibrate", spy)
    else:  # every ONNX Runtime quantization of a TensorRT target goes through the symmetric fallback
        import cstf_edge.export.quantize_modelopt as modelopt_module

        fallback = modelopt_module.quantize_symmetric_ort

        def spy_fallback(source, out, *, batcher, method, exclude, cache_path):
            calibrated.append((Path(source).name, cache_path.is_file()))
            return fallback(source, out, batcher=batcher, method=method, exclude=exclude, cache_path=cache_path)

        monkeypatch.setattr(modelopt_module, "quantize_symmetric_ort", spy_fallback)
    run = pipeline.ExportRun(ExportOptions(precision="int8", imgsz=SIZE, calib=str(scenes["calib"]), target=target,
                                           sensitivity=sweep, out=str(tmp_path / "out")), progress=False)
    run.export_int8(run.export_fp32())
    first_name, cache_existed = calibrated[0]
    assert first_name == f"cstf-n-relu-{SIZE}.fp32.onnx" and not cache_existed  # the FP32 model fills the cache
    assert all(existed for _, existed in calibrated[1:])  # every later quantization reads it
    assert any(name.endswith(".int8.rounded.onnx") for name, _ in calibrated[1:])
