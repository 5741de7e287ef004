"""``cstf-edge bench``: one small run end to end (SynthRS scenes of 256 px, torch + ONNX Runtime FP32/INT8,
batch 1 and 2), its four outputs, variants listed as unavailable with the reason, reuse of exported artifacts;
the Pareto front, percentiles, parity and per-iteration stage samples; bad arguments exit with code 2."""
from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("torch")

from cstf_edge.bench import BenchOptions, pareto_front  # noqa: E402
from cstf_edge.bench.measure import SampledTimes, detection_parity, summarize  # noqa: E402
from cstf_edge.bench.plot import plot_accuracy_vs_fps  # noqa: E402
from cstf_edge.bench.variants import Variant, unavailable_reason  # noqa: E402
from cstf_edge.cli import main  # noqa: E402
from cstf_edge.runtime.postprocess import Detections  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
SIZE = 256
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    from cstf_edge.data.synthrs import generate_dataset

    root = tmp_path_factory.mktemp("bench")
    generate_dataset(root / "val", 4, size=SIZE, seed=2, progress=False)
    generate_dataset(root / "calib", 8, size=SIZE, seed=3, progress=False)
    manifest = root / "calib.toml"
    manifest.write_text(f'source = "dir"\npath = "{root / "calib" / "images"}"\ncount = 8\n')
    return root


def _bench_args(scenes: Path, out: Path, *extra: str) -> list[str]:
    return ["bench", "--data", str(scenes / "val"), "--imgsz", str(SIZE), "--warmup", "1", "--iters", "2",
            "--calib", str(scenes / "calib.toml"), "--artifacts", str(scenes / "artifacts"), "--out", str(out),
            "--no-progress", "--no-sensitivity", *extra]


@pytest.fixture(scope="module")
def bench_out(scenes):
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CSTF_EDGE_CACHE", str(scenes / "cache"))
        out = scenes / "report"
        assert main(_bench_args(scenes, out, "--precisions", "fp32,int8", "--batch", "1,2")) == 0
    return out


@pytest.mark.slow
def test_the_four_outputs_exist_and_parse(bench_out):
    report = json.loads((bench_out / "report.json").read_text())
    assert report["format"] == "cstf-edge-bench/1" and report["reference"] == "torch-fp32-b1"
    lines = list(csv.DictReader(io.StringIO((bench_out / "report.csv").read_text())))
    assert {line["variant"] for line in lines} >= {"torch-fp32-b1", "onnxruntime-int8-b2", "tensorrt-int8-b1"}
    markdown = (bench_out / "report.md").read_text()
    for heading in ("## Accuracy and speed", "## Latency per stage", "## Not run here", "## Environment",
                    "## How each variant was run"):
        assert heading in markdown
    png = (bench_out / "accuracy_vs_fps.png").read_bytes()
    assert png.startswith(PNG_SIGNATURE)
    from PIL import Image

    assert Image.open(bench_out / "accuracy_vs_fps.png").size[0] >= 800


@pytest.mark.slow
def test_reference_and_onnxruntime_rows_carry_map_and_latency(bench_out):
    report = json.loads((bench_out / "report.json").read_text())
    rows = {row["variant"]: row for row in report["rows"]}
    for name in ("torch-fp32-b1", "onnxruntime-fp32-b1", "onnxruntime-int8-b1", "onnxruntime-int8-b2"):
        row = rows[name]
        assert 0.0 <= row["accuracy"]["map50_voc07"] <= 100.0 and 0.0 <= row["accuracy"]["map50_voc12"] <= 100.0
        latency = row["speed"]["latency_ms"]
        assert latency["n"] == 2 and 0 < latency["p50"] <= latency["p99"]
        assert {"decode", "pre", "infer", "post"} <= set(row["speed"]["stages_ms"])
        assert row["speed"]["fps"] > 0 and row["speed"]["megapixels_per_s"] > 0
        assert row["artifact_bytes"] > 0 and row["memory"]["peak_rss_mb"] > 0
    reference = rows["torch-fp32-b1"]
    assert reference["map_drop_voc07"] == 0 and reference["parity"]["detection_parity"] == 1.0
    assert rows["onnxruntime-fp32-b1"]["parity"]["detection_parity"] >= 0.9
    batched = rows["onnxruntime-int8-b2"]
    assert batched["batch"] == 2 and batched["speed"]["images_per_iteration"] == 2
    assert report["pareto_front"] and all(rows[name]["pareto"] for name in report["pareto_front"])


@pytest.mark.slow
def test_variants_that_cannot_run_are_listed_with_the_reason(bench_out):
    report = json.loads((bench_out / "report.json").read_text())
    skipped = {u["variant"]: u["reason"] for u in report["unavailable"]}
    assert "tensorrt-fp32-b1" in skipped and ("TensorRT" in skipped["tensorrt-fp32-b1"]
                                                or "GPU" in skipped["tensorrt-fp32-b1"])
    assert "INT8" in skipped["torch-int8-b1"]
    markdown = (bench_out / "report.md").read_text()
    assert "trt-int8 b2" in markdown
    lines = list(csv.DictReader(io.StringIO((bench_out / "report.csv").read_text())))
    assert all(line["reason"] for line in lines if line["status"] == "not run")


@pytest.mark.slow
def test_a_second_run_reuses_the_artifacts_and_prints_json(scenes, bench_out, monkeypatch, capsys):
    import cstf_edge.export as export

    def refuse(*args, **kwargs):
        raise AssertionError("the artifacts are up to date; nothing should be exported")

    monkeypatch.setattr(export, "run_export", refuse)
    monkeypatch.setenv("CSTF_EDGE_CACHE", str(scenes / "cache"))
    out = scenes / "again"
    code = main(_bench_args(scenes, out, "--backends", "ort", "--precisions", "int8", "--batch", "2", "--json",
                            "--sequential"))
    assert code == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["settings"]["schedule"] == "sequential" and printed["exports"] == []
    assert "were up to date" in (out / "report.md").read_text()
    assert [row["variant"] for row in printed["rows"]] == ["onnxruntime-int8-b2"]
    assert printed["reference"] is None and printed["rows"][0]["map_drop_voc07"] is None
    assert (out / "accuracy_vs_fps.png").is_file()


@pytest.mark.parametrize("extra, message", [
    (["--backends", "torch,caffe"], "caffe"),
    (["--batch", "0"], "--batch"),
    (["--batch", "1,x"], "--batch"),
    (["--precisions", "fp8"], "fp8"),
    (["--iters", "0"], "--iters"),
    (["--settle", "-1"], "--settle"),
    (["--settle", "nan"], "--settle"),
    (["--imgsz", "100"], "--imgsz"),
    (["--device", "tpu"], "--device"),
])
def test_bad_arguments_exit_with_code_2(tmp_path, caplog, extra, message):
    data = tmp_path / "data"
    data.mkdir()
    assert main(["bench", "--data", str(data), "--out", str(tmp_path / "out"), *extra]) == 2
    assert message in caplog.text
    assert not (tmp_path / "out").exists()


def test_missing_data_exits_with_code_2(tmp_path, caplog):
    assert main(["bench", "--data", str(tmp_path / "nowhere")]) == 2
    assert "--data" in caplog.text


def test_pareto_front():
    points = [(10.0, 80.0), (50.0, 79.0), (40.0, 70.0), (100.0, 60.0), (100.0, 55.0), (5.0, 80.0), (50.0, 79.0)]
    # (40, 70) is beaten by (50, 79); (100, 55) by (100, 60); (5, 80) by (10, 80); equal points both stay.
    assert pareto_front(points) == [0, 1, 6, 3]
    assert pareto_front([]) == [] and pareto_front([(1.0, 1.0)]) == [0]


def test_percentiles():
    stats = summarize(range(1, 101))
    assert stats["p50"] == pytest.approx(50.5) and stats["p90"] == pytest.approx(90.1)
    assert stats["p99"] == pytest.approx(99.01) and stats["mean"] == pytest.approx(50.5)
    assert (stats["min"], stats["max"], stats["n"]) == (1.0, 100.0, 100)
    assert summarize([7.0])["p99"] == 7.0
    assert summarize([])["p50"] is None and summarize([])["n"] == 0


def test_stage_samples_are_per_iteration():
    times = SampledTimes()
    with times("pre"):
        pass
    with times("infer"):
        pass
    with times("infer"):
        pass
    first = times.take()
    assert set(first) == {"pre", "infer"} and times.counts["infer"] == 2
    assert times.take() == {} and times.seconds["infer"] >= first["infer"]


def test_detection_parity():
    boxes = np.array([[50.0, 50.0, 40.0, 10.0, 0.0], [120.0, 80.0, 30.0, 12.0, 0.5], [10.0, 10.0, 8.0, 4.0, 0.0]])
    reference = Detections(boxes, np.array([0.9, 0.6, 0.1], np.float32), np.array([0, 1, 1]))
    assert detection_parity([reference], [reference])["detection_parity"] == 1.0
    moved = boxes.copy()
    moved[1, 0] += 10.0
    candidate = Detections(moved, reference.scores, reference.class_ids)
    parity = detection_parity([reference], [candidate])
    assert parity["reference_detections"] == 2 and parity["matched"] == 1  # the 0.1 detection is not counted


def test_reasons_for_variants_this_cpu_cannot_run(tmp_path):
    options = BenchOptions(data=str(tmp_path), device="cpu")
    assert "CUDA" in unavailable_reason(Variant("torch", "fp16", 1), options)
    assert "INT8" in unavailable_reason(Variant("torch", "int8", 1), options)
    assert unavailable_reason(Variant("torch", "fp32", 1), options) is None
    assert unavailable_reason(Variant("onnxruntime", "fp32", 1), options) is None
    assert unavailable_reason(Variant("tensorrt", "fp16", 1), options)


def test_plot_without_rows_is_still_a_png():
    assert plot_accuracy_vs_fps([], "nothing ran").startswith(PNG_SIGNATURE)


def test_script_entry_shows_the_bench_help():
    done = subprocess.run([sys.executable, str(REPO / "benchmarks" / "run.py"), "--help"], capture_output=True,
                          text=True, cwd=REPO, timeout=120)
    assert done.returncode == 0 and "--precisions" in done.stdout and "accuracy_vs_fps.png" in done.stdout


def test_infer_on_cuda_is_timed_by_cuda_events(monkeypatch):
    import torch

    class FakeEvent:
        def __init__(self, enable_timing=False):
            assert enable_timing

        def record(self):
            pass

        def synchronize(self):
            pass

        def elapsed_time(self, end):
            return 12.5  # milliseconds

    monkeypatch.setattr(torch.cuda, "Event", FakeEvent)
    times = SampledTimes(cuda_infer=True)
    with times("infer"):
        pass
    with times("pre"):
        pass
    taken = times.take()
    assert taken["infer"] == pytest.approx(0.0125) and taken["pre"] < 0.0125


def test_cuda_variants_on_a_machine_without_one_say_so(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA device")
    options = BenchOptions(data=str(tmp_path), device="cuda:0")
    assert "CUDA" in unavailable_reason(Variant("torch", "fp32", 1), options)
    assert "CUDA" in unavailable_reason(Variant("onnxruntime", "fp32", 1), options)


@pytest.mark.slow
def test_an_int8_artifact_calibrated_otherwise_is_stale(scenes, bench_out, tmp_path):
    from cstf_edge.bench.variants import Artifacts
    from cstf_edge.model.checkpoint import shipped_weights

    def artifacts(method: str, fp32_groups: tuple[str, ...] = ()) -> Artifacts:
        return Artifacts(BenchOptions(data=str(scenes / "val"), imgsz=SIZE, batches=(1, 2),
                                      calib=str(scenes / "calib.toml"), calib_method=method,
                                      artifacts=str(scenes / "artifacts"), fp32_groups=fp32_groups),
                         shipped_weights())

    int8, fp32 = Variant("onnxruntime", "int8", 1), Variant("onnxruntime", "fp32", 1)
    same, other = artifacts("minmax"), artifacts("entropy")
    assert same.fresh(same.path(int8)) and same.fresh(same.path(fp32))
    assert not other.fresh(other.path(int8)) and other.fresh(other.path(fp32))
    stem_fp32 = artifacts("minmax", ("/backbone/stem",))  # an INT8 made with other FP32 groups is remade
    assert not stem_fp32.fresh(stem_fp32.path(int8)) and stem_fp32.fresh(stem_fp32.path(fp32))
    import onnx

    from cstf_edge.bench.variants import read_artifact_info
    from cstf_edge.export.onnx_export import set_metadata

    info = read_artifact_info(same.path(int8))  # one made with nearest rounding (before the export rounded)
    assert info.extra["weight_rounding"] == "sum-preserving-v1"
    info.extra["weight_rounding"] = "nearest"
    model = onnx.load(str(same.path(int8)))
    set_metadata(model, info)
    nearest = tmp_path / same.path(int8).name
    onnx.save(model, str(nearest))
    assert not same.fresh(nearest)


@pytest.mark.slow
def test_an_artifact_of_an_older_exporter_is_stale(scenes, bench_out, tmp_path):
    import onnx

    from cstf_edge.bench.variants import Artifacts, read_artifact_info
    from cstf_edge.export.onnx_export import set_metadata
    from cstf_edge.model.checkpoint import shipped_weights

    artifacts = Artifacts(BenchOptions(data=str(scenes / "val"), imgsz=SIZE, batches=(1, 2),
                                       calib=str(scenes / "calib.toml"), artifacts=str(scenes / "artifacts")),
                          shipped_weights())
    current = artifacts.path(Variant("onnxruntime", "fp32", 1))
    assert artifacts.fresh(current)
    info = read_artifact_info(current)
    info.extra["export_revision"] = 1
    model = onnx.load(str(current))
    set_metadata(model, info)
    older = tmp_path / current.name
    onnx.save(model, str(older))
    assert not artifacts.fresh(older)


def test_cpu_info_names_the_x86_family_and_model_and_reads_arm_features(tmp_path):
    from cstf_edge.bench.environment import cpu_info

    x86 = tmp_path / "x86"
    x86.write_text("processor\t: 0\ncpu family\t: 26\nmodel\t\t: 2\nmodel name\t: AMD EPYC\n"
                   "flags\t\t: fpu avx2 avx512f avx512_vnni\n\nprocessor\t: 1\ncpu family\t: 26\nmodel\t\t: 2\n")
    info = cpu_info(str(x86))
    assert info["model"] == "AMD EPYC (family 26, model 2)"
    assert info["flags"]["avx512_vnni"] and not info["flags"].get("amx_int8", False)
    arm = tmp_path / "arm"
    arm.write_text("processor\t: 0\nFeatures\t: fp asimd asimddp i8mm\nModel\t\t: NVIDIA Jetson Orin Nano\n")
    info = cpu_info(str(arm))
    assert info["model"] == "NVIDIA Jetson Orin Nano" and info["flags"]["i8mm"]
