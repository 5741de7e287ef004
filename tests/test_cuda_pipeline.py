"""``Detector(..., pipeline="cuda")``: pre/post-processing through the CUDA twins gives the CPU pipeline's
detections. Without a GPU the twins run behind the fake cuda-python of ``cuda_fakes`` (host-compiled
kernels); with one (``gpu`` marker, and cuda-python) on the device itself. Also ``--pipeline`` of
``cstf-edge run``, ``auto``, and the error without cuda-python."""
from __future__ import annotations

import sys

import cv2
import numpy as np
import pytest

from cstf_edge.cli import main
from cstf_edge.data.synthrs import make_scene, render
from cstf_edge.errors import CstfError
from cstf_edge.runtime.cuda import _driver
from cstf_edge.runtime.cuda.pipeline import CudaPipeline, cuda_device_index, resolve_pipeline
from cstf_edge.runtime.detector import Detector
from cstf_edge.runtime.errors import BackendUnavailableError

from cuda_fakes import fake_cuda, host_kernels  # noqa: F401 - fixtures used by name
from test_runtime_run import export_shipped

SIZE = 512


@pytest.fixture(scope="module")
def onnx_model(tmp_path_factory):
    return export_shipped(tmp_path_factory.mktemp("model") / "cstf-n-512.onnx")


@pytest.fixture(scope="module")
def onnx_dynamic(tmp_path_factory):
    return export_shipped(tmp_path_factory.mktemp("model") / "cstf-n-512-dyn.onnx", dynamic=True)


@pytest.fixture
def no_cuda_python(monkeypatch):
    """cuda-python made unimportable (whether or not it is installed)."""
    for name in ("cuda", "cuda.bindings", "cuda.bindings.driver", "cuda.bindings.nvrtc", "cuda.bindings.runtime"):
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.setattr(_driver, "_BINDINGS", None)


def scenes() -> list[np.ndarray]:
    """SynthRS scenes at the network size, one smaller and off-square (letterboxed), one larger (tiled)."""
    images = [render(make_scene(11, index, size=SIZE)) for index in range(3)]
    images.append(np.ascontiguousarray(images[0][40:400, 10:500]))
    images.append(render(make_scene(12, 0, size=900)))
    return images


def assert_close_detections(got, want):
    """Same detections up to float rounding (the twins may differ by 1 grey level on other OpenCV builds)."""
    assert len(got) == len(want)
    assert np.array_equal(got.class_ids, want.class_ids)
    assert np.allclose(got.scores, want.scores, atol=1e-4)
    assert np.allclose(got.rboxes, want.rboxes, atol=1e-2)
    assert got.image_shape == want.image_shape


def detect_all(model, pipeline: str, device: str = "cpu", batch: int = 1) -> list:
    images = scenes()
    with Detector(model, device, pipeline=pipeline, batch=batch) as detector:
        found = detector.detect_batch(images[:4]) + [detector.detect_large(images[4])]
        assert (detector.pipeline is None) == (pipeline == "cpu")
    return found


# ---------------------------------------------------------------- behind the fake cuda-python
def test_cuda_pipeline_gives_the_cpu_pipeline_detections(onnx_model, fake_cuda):
    want = detect_all(onnx_model, "cpu")
    got = detect_all(onnx_model, "cuda")
    assert sum(len(found) for found in want) > 5
    for one, other in zip(got, want):
        assert_close_detections(one, other)
    assert {"letterbox_chw", "select_keys", "nms_mask"} <= set(fake_cuda.launches)
    assert not fake_cuda.memory  # the Detector's exit freed the pipeline's buffers


def test_cuda_pipeline_batches(onnx_dynamic, fake_cuda):
    for one, other in zip(detect_all(onnx_dynamic, "cuda", batch=3), detect_all(onnx_dynamic, "cpu", batch=3)):
        assert_close_detections(one, other)


def test_auto_pipeline_follows_the_device_and_cuda_python(fake_cuda):
    assert resolve_pipeline("auto", "cuda:1") == "cuda"
    assert resolve_pipeline("auto", "cpu") == "cpu"
    assert resolve_pipeline("cuda", "cpu") == "cuda"
    assert (cuda_device_index("cuda:1"), cuda_device_index("cuda"), cuda_device_index("cpu")) == (1, 0, 0)


def test_cuda_pipeline_without_cuda_python_has_the_install_hint(onnx_model, no_cuda_python):
    with pytest.raises(BackendUnavailableError, match=r"pip install 'cuda-python>=12'"):
        Detector(onnx_model, pipeline="cuda")
    assert resolve_pipeline("auto", "cuda:0") == "cpu"
    assert Detector(onnx_model, pipeline="auto").pipeline is None


def test_unknown_pipeline_is_refused(onnx_model):
    with pytest.raises(CstfError, match="pipeline 'gpu'"):
        Detector(onnx_model, pipeline="gpu")
    with pytest.raises(BackendUnavailableError, match="cuda:x"):
        cuda_device_index("cuda:x")


def test_pipeline_refuses_another_spec(fake_cuda):
    from cstf_edge.runtime.preprocess import PreprocessError, PreprocessSpec

    pipeline = CudaPipeline(PreprocessSpec(64, 64), max_batch=1)
    with pytest.raises(PreprocessError, match="set up for"):
        pipeline.preprocess([np.zeros((8, 8, 3), np.uint8)], PreprocessSpec(32, 32))
    pipeline.close()


def run_cli(model, folder, out, *extra) -> int:
    return main(["run", str(folder), "--model", str(model), "--out", str(out), "--no-progress", "--format", "json",
                 *extra])


def image_folder(folder, count: int = 2):
    folder.mkdir()
    for index, image in enumerate(scenes()[:count]):
        cv2.imwrite(str(folder / f"s{index}.png"), image)
    return folder


def test_run_cli_pipeline_option(onnx_model, fake_cuda, tmp_path, capsys):
    folder = image_folder(tmp_path / "images")
    assert run_cli(onnx_model, folder, tmp_path / "cpu") == 0
    cpu_line = capsys.readouterr().out
    assert run_cli(onnx_model, folder, tmp_path / "cuda", "--pipeline", "cuda") == 0
    cuda_line = capsys.readouterr().out
    assert cpu_line.split(";")[1] == cuda_line.split(";")[1]  # "N detections"
    assert "letterbox_chw" in fake_cuda.launches


def test_run_cli_pipeline_cuda_without_cuda_python(onnx_model, no_cuda_python, tmp_path, caplog):
    folder = image_folder(tmp_path / "images", 1)
    assert run_cli(onnx_model, folder, tmp_path / "out", "--pipeline", "cuda") == 2
    assert "pip install 'cuda-python>=12'" in caplog.text
    assert not (tmp_path / "out" / "summary.json").exists()


# ---------------------------------------------------------------- on the GPU (fixture gpu: conftest.py)


@pytest.mark.gpu
def test_gpu_cuda_pipeline_gives_the_cpu_pipeline_detections(gpu, onnx_model):
    """ONNX Runtime (CPU build is enough) with pre/post on GPU 0, against the numpy twins."""
    for one, other in zip(detect_all(onnx_model, "cuda"), detect_all(onnx_model, "cpu")):
        assert_close_detections(one, other)


@pytest.mark.gpu
def test_gpu_cuda_pipeline_with_the_torch_backend_on_cuda(gpu):
    """The PyTorch reference on cuda:0, pre/post on the same GPU, against the numpy twins on that backend."""
    pytest.importorskip("torch")
    from cstf_edge.model.checkpoint import shipped_weights

    got, want = detect_all(shipped_weights(), "cuda", "cuda:0"), detect_all(shipped_weights(), "cpu", "cuda:0")
    for one, other in zip(got, want):
        assert len(one) == len(other) and np.array_equal(one.class_ids, other.class_ids)
        assert np.allclose(one.rboxes, other.rboxes, atol=0.05)
