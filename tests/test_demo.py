"""``cstf-edge demo`` end to end at its smallest: one 1024 scene and one that needs tiling."""
from __future__ import annotations

import json

import pytest

pytest.importorskip("torch")
pytest.importorskip("onnxruntime")

from cstf_edge.cli import main  # noqa: E402


@pytest.mark.slow
def test_demo_writes_artifacts_detections_score_and_bench(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("CSTF_EDGE_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "demo"
    code = main(["demo", "--out", str(out), "--scenes", "1", "--large", "1300", "--iters", "1", "--json"])
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    for precision in ("fp32", "fp16", "int8"):
        assert (out / "artifacts" / f"cstf-n-relu-1024.{precision}.onnx").is_file()  # the shipped weights' model
    labels = sorted(p.name for p in (out / "detections" / "labelTxt").iterdir())
    assert labels == ["large_synthrs_4_000000.txt", "synthrs_2_000000.txt"]
    assert len(list((out / "detections" / "vis").iterdir())) == 2
    assert list((out / "detections").glob("Task1_*.txt"))
    assert 0.0 < result["map50_voc07_int8_run"] <= 100.0
    assert {row["variant"] for row in result["bench_rows"]} == {"torch-fp32-b1", "onnxruntime-fp32-b1",
                                                                 "onnxruntime-int8-b1"}
    for name in ("report.md", "report.csv", "report.json", "accuracy_vs_fps.png"):
        assert (out / "bench" / name).is_file()
    # the large scene was tiled: detections exist beyond the first 1024 x 1024 window
    large = json.loads((out / "detections" / "json" / "large_synthrs_4_000000.json").read_text())
    assert (large["width"], large["height"]) == (1300, 1300) and "merge" in large["timings_ms"]
    centres = [d["rbox"][:2] for d in large["detections"]]
    assert any(max(c) > 1024 for c in centres) and all(0 <= v <= 1300 for c in centres for v in c)
