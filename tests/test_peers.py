"""Peers in the bench (``--peers``): the Ultralytics OBB output layout converted to ours, refusal of files of
another layout, which nodes INT8 keeps FP32, and a bench run with a small model in Ultralytics' ONNX layout
(node names, metadata, output rows) exported here with torch, run at FP32 and INT8 beside cstf-n. Ultralytics
itself is not needed (it is an optional extra that does not install next to torch 2.13 CPU)."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from torch import nn  # noqa: E402

from cstf_edge.bench import peers  # noqa: E402
from cstf_edge.cli import main  # noqa: E402
from cstf_edge.geometry import canonicalize_rboxes  # noqa: E402

SIZE = 256
CLASSES = ["plane", "ship", "storage-tank", "small-vehicle", "large-vehicle"]  # the shipped weights' classes


def test_to_detections_lays_the_output_out_as_ours_in_the_box_convention():
    rng = np.random.default_rng(0)
    n, classes = 50, 3
    raw = np.concatenate([rng.uniform(10, 200, (1, 2, n)), rng.uniform(2, 40, (1, 2, n)),
                          rng.uniform(0, 1, (1, classes, n)), rng.uniform(-math.pi / 4, 3 * math.pi / 4, (1, 1, n))],
                         axis=1).astype(np.float32)
    out = peers.to_detections(raw)
    assert out.shape == (1, n, 5 + classes)
    np.testing.assert_array_equal(out[0, :, 5:], raw[0, 4:4 + classes].T)  # scores untouched
    expected = canonicalize_rboxes(np.concatenate([raw[0, :4], raw[0, -1:]]).T.astype(np.float64))
    np.testing.assert_allclose(out[0, :, :5], expected, rtol=1e-5, atol=1e-4)
    assert np.all(out[0, :, 2] >= out[0, :, 3]) and np.all(np.abs(out[0, :, 4]) <= math.pi / 2)


class _Branch(nn.Sequential):
    def __init__(self, c: int, out: int):
        super().__init__(nn.Sequential(nn.Conv2d(c, c, 3, 1, 1), nn.SiLU()),
                         nn.Sequential(nn.Conv2d(c, c, 3, 1, 1), nn.SiLU()), nn.Conv2d(c, out, 1))


class _Head(nn.Module):
    """An OBB head in Ultralytics' layout: branches cv2 (box), cv3 (classes), cv4 (angle), output
    ``[B, 4 + C + 1, N]`` with xywh in input pixels, sigmoid scores and the angle in [-pi/4, 3pi/4)."""

    def __init__(self, c: int, classes: int, stride: int):
        super().__init__()
        self.cv2, self.cv3, self.cv4 = (nn.ModuleList([_Branch(c, k)]) for k in (4, classes, 1))
        self.stride = stride

    def forward(self, x):
        b, _, h, w = x.shape
        ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
        centre = (torch.stack([xs, ys]).float() + 0.5) * self.stride
        box = self.cv2[0](x)
        xy = centre + box[:, :2] * self.stride
        wh = torch.nn.functional.softplus(box[:, 2:]) * self.stride * 2
        angle = (self.cv4[0](x).sigmoid() - 0.25) * math.pi
        out = torch.cat([xy, wh, self.cv3[0](x).sigmoid(), angle], 1)
        return out.reshape(b, out.shape[1], -1)


class TinyUltralyticsObb(nn.Module):
    def __init__(self, classes: int):
        super().__init__()
        self.model = nn.ModuleList([nn.Sequential(nn.Conv2d(3, 8, 8, 8), nn.SiLU()), _Head(8, classes, 8)])

    def forward(self, images):
        return self.model[1](self.model[0](images))


def _ultralytics_like_onnx(path: Path, names: list[str]) -> Path:
    torch.manual_seed(0)
    model = TinyUltralyticsObb(len(names)).eval()
    torch.onnx.export(model, torch.zeros(1, 3, SIZE, SIZE), str(path), opset_version=17, input_names=["images"],
                      output_names=["output0"], dynamo=False)
    proto = onnx.load(str(path))
    for key, value in {"task": "obb", "names": str(dict(enumerate(names))), "imgsz": str([SIZE, SIZE]),
                       "version": "test", "author": "Ultralytics"}.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(proto, str(path))
    return path


def test_int8_keeps_the_head_outputs_and_decode_in_fp32(tmp_path):
    graph = onnx.load(str(_ultralytics_like_onnx(tmp_path / "peer.onnx", CLASSES))).graph
    kept = set(peers.float_nodes(graph))
    convs = {n.name for n in graph.node if n.op_type == "Conv"}
    assert "/model.0/model.0.0/Conv" in convs and "/model.0/model.0.0/Conv" not in kept  # backbone: INT8
    hidden = {c for c in convs if c.endswith((".0/Conv", ".1/Conv")) and c.startswith("/model.1/")}
    outputs = {c for c in convs if c.endswith(".2/Conv") and c.startswith("/model.1/")}
    assert len(hidden) == 6 and len(outputs) == 3, sorted(convs)
    assert not hidden & kept and outputs <= kept
    decode = [n.name for n in graph.node if n.name.startswith("/model.1/") and n.name.count("/") == 2]
    assert decode and set(decode) <= kept  # the head's own ops: score sigmoid, box and angle decode


def test_peers_run_at_fp32_and_int8_and_say_so_for_fp16(tmp_path):
    from cstf_edge.bench import BenchOptions
    from cstf_edge.bench.variants import Variant, all_variants, unavailable_reason

    options = BenchOptions(data=str(tmp_path), precisions=("fp32", "fp16"), peers=("yolov8n-obb",))
    peer_rows = [v for v in all_variants(options) if v.peer]
    assert [v.precision for v in peer_rows] == ["fp32", "fp16"]
    assert "peers are run at fp32 and int8" in unavailable_reason(Variant("onnxruntime", "fp16", 1, "yolov8n-obb"),
                                                                   options)
    assert unavailable_reason(peer_rows[0], options) is None  # Ultralytics is needed only when exporting


def test_a_file_of_another_layout_is_refused_naming_it(tmp_path):
    plain = tmp_path / "plain.onnx"
    torch.onnx.export(nn.Conv2d(3, 4, 1), torch.zeros(1, 3, 8, 8), str(plain), opset_version=17, dynamo=False)
    with pytest.raises(peers.PeerError, match="plain.onnx: not an Ultralytics OBB export"):
        peers.import_onnx(plain, tmp_path / "out.onnx", model="plain", origin="test", trained=True, record={})
    assert not (tmp_path / "out.onnx").exists()
    assert peers.unavailable(str(tmp_path / "missing.onnx")) == f"--peers {tmp_path / 'missing.onnx'}: no such file"


def test_a_model_name_without_ultralytics_says_how_to_get_it(tmp_path):
    try:
        __import__("ultralytics")
        pytest.skip("Ultralytics imports here")
    except Exception:  # noqa: BLE001
        pass
    artifacts = peers.PeerArtifacts(tmp_path, SIZE, CLASSES, None, "minmax", progress=False)
    with pytest.raises(peers.PeerError, match="needs a torchvision|yolo export"):
        artifacts.ensure("yolov8n-obb", "fp32")
    assert peers.unavailable("yolov8n-obb") is None  # known only when an export is needed
    assert not list(tmp_path.iterdir())


@pytest.mark.slow
def test_bench_runs_peers_beside_cstf_n(tmp_path, monkeypatch):
    from cstf_edge.data.synthrs import generate_dataset

    monkeypatch.setenv("CSTF_EDGE_CACHE", str(tmp_path / "cache"))
    generate_dataset(tmp_path / "val", 3, size=SIZE, seed=2, progress=False)
    generate_dataset(tmp_path / "calib", 8, size=SIZE, seed=3, progress=False)
    manifest = tmp_path / "calib.toml"
    manifest.write_text(f'source = "dir"\npath = "{tmp_path / "calib" / "images"}"\ncount = 8\n')
    scored = _ultralytics_like_onnx(tmp_path / "tinyobb.onnx", CLASSES)
    other = _ultralytics_like_onnx(tmp_path / "coco80.onnx", [str(i) for i in range(80)])
    out = tmp_path / "report"
    args = ["bench", "--data", str(tmp_path / "val"), "--imgsz", str(SIZE), "--warmup", "1", "--iters", "2",
            "--calib", str(manifest), "--out", str(out), "--no-progress", "--no-sensitivity", "--settle", "0",
            "--backends", "torch,onnxruntime", "--precisions", "fp32,int8", "--peers", f"{scored},{other}"]
    assert main(args) == 0
    report = json.loads((out / "report.json").read_text())
    rows = {row["variant"]: row for row in report["rows"]}
    assert {"tinyobb-onnxruntime-fp32-b1", "tinyobb-onnxruntime-int8-b1", "coco80-onnxruntime-int8-b1"} <= set(rows)
    tiny = rows["tinyobb-onnxruntime-int8-b1"]
    assert tiny["accuracy"]["map50_voc07"] is not None and tiny["map_drop_voc07"] is not None
    assert tiny["parity"] is None and tiny["speedup_vs_reference"] > 0 and "UltralyticsObbRunner" in tiny["how"]
    assert "calib.toml, minmax" in tiny["how"]
    assert tiny["speed"]["stages_ms"]["infer"]["n"] == 2
    coco = rows["coco80-onnxruntime-fp32-b1"]
    assert coco["accuracy"]["map50_voc07"] is None and "not those of the model" in coco["accuracy"]["note"]
    assert not coco["pareto"] and rows["onnxruntime-int8-b1"]["parity"] is not None
    assert "## Timed, not scored" in (out / "report.md").read_text()
    int8 = onnx.load(str(out / "artifacts" / f"tinyobb-{SIZE}.int8.onnx"))
    assert sum(n.op_type == "QuantizeLinear" for n in int8.graph.node) > 3
    assert (out / "accuracy_vs_fps.png").stat().st_size > 10_000
