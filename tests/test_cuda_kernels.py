"""The CUDA twins of pre/post-processing (``cstf_edge.runtime.cuda``) against their numpy twins.

Without a GPU: the import shim, error checking and launch helpers; the host-side tables and reductions; the
kernels' code itself, compiled with the host C++ compiler and run thread by thread (every kernel but
``bitonic_local``, whose steps are run the same way); and the twins' whole host code behind a fake
cuda-python whose ``cuLaunchKernel`` checks each packed argument against the kernel's C signature and runs
the host-compiled kernel. With a GPU (``gpu`` marker; also needs cuda-python): the kernels themselves.

Tolerances: preprocessing 1 grey level (1/255 after scaling), where OpenCV's fixed-point rounding may
differ between builds (on this project's build the twins agree exactly); NMS: equal results, or a
difference only where some IoU lies within 1e-6 of the threshold.
"""
from __future__ import annotations

import ctypes
import subprocess
import sys
from enum import IntEnum

import numpy as np
import pytest

from cstf_edge.bench.raw_detections import dense_raw as bench_dense_raw
from cstf_edge.errors import CstfError
from cstf_edge.geometry import rbox_to_poly
from cstf_edge.geometry.iou import polygon_iou_matrix, polygon_iou_pairs
from cstf_edge.geometry.nms import class_aware_nms, rotated_nms
from cstf_edge.runtime.cuda import _driver, kernels
from cstf_edge.runtime.cuda import postprocess as cpost
from cstf_edge.runtime.cuda import preprocess as cpre
from cstf_edge.runtime.errors import BackendUnavailableError
from cstf_edge.runtime.postprocess import nms, postprocess, select_candidates
from cstf_edge.runtime.preprocess import Letterbox, PreprocessSpec, preprocess_batch

from cuda_fakes import fake_cuda, host_kernels, run_kernel  # noqa: F401 - fixtures used by name

GREY = 1.0 / 255.0 + 1e-6
SIZES = [(1, 1), (300, 517), (517, 300), (7, 13), (1024, 1024), (2048, 2048), (3000, 4000)]
SPECS = [PreprocessSpec(1024, 1024), PreprocessSpec(640, 800, pad_value=0, channels="BGR")]
SPEC_IDS = ["1024-RGB", "640x800-BGR"]


def random_image(rng, height, width):
    return rng.integers(0, 256, (height, width, 3), dtype=np.uint8)


def dense_raw(rng, n=21504, num_classes=15, clusters=400):
    """The bench generator's dense scene, plus exact score ties and a NaN score."""
    raw = bench_dense_raw(rng, n, num_classes, clusters)
    rows = np.arange(0, n - 1, 97)
    raw[rows, 5:] = raw[rows + 1, 5:]
    raw[5, 6] = np.nan
    return raw


def assert_masks_agree(got, want, rboxes, iou):
    """Equal NMS bitmasks but for pairs whose IoU lies within 1e-6 of the threshold."""
    rows, words = np.nonzero(np.bitwise_xor(got, want))
    pairs = np.asarray([(i, 64 * w + b) for i, w in zip(rows, words) for b in range(64)
                        if (int(got[i, w] ^ want[i, w]) >> b) & 1], dtype=np.int64).reshape(-1, 2)
    polys = rbox_to_poly(np.asarray(rboxes, dtype=np.float64))
    values = polygon_iou_pairs(polys[pairs[:, 0]], polys[pairs[:, 1]])
    assert (np.abs(values - iou) < 1e-6).all(), f"{len(pairs)} mask bits differ away from the threshold"


def assert_same_detections(got, want, iou=None):
    """Equal detections; with ``iou``, a difference is allowed only where a pair lies within 1e-6 of it."""
    same = len(got) == len(want) and np.array_equal(got.rboxes, want.rboxes) and \
        np.array_equal(got.scores, want.scores) and np.array_equal(got.class_ids, want.class_ids)
    if not same:
        assert iou is not None, f"{len(got)} detections, numpy twin {len(want)}"
        both = rbox_to_poly(np.concatenate([got.rboxes, want.rboxes]))
        assert (np.abs(polygon_iou_matrix(both, both) - iou) < 1e-6).any(), "results differ away from the threshold"


# ---------------------------------------------------------------- import shim, errors, launch helpers
def test_import_needs_no_cuda_python():
    code = ("import sys; sys.modules['cuda'] = None; import cstf_edge.runtime.cuda as c; "
            "assert 'torch' not in sys.modules; print(c.CudaPreprocessor.__name__)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "CudaPreprocessor"


def test_missing_cuda_python_is_backend_unavailable_with_install_hint(monkeypatch):
    for name in ("cuda", "cuda.bindings", "cuda.bindings.driver", "cuda.bindings.nvrtc", "cuda.bindings.runtime"):
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.setattr(_driver, "_BINDINGS", None)
    with pytest.raises(BackendUnavailableError, match=r"pip install 'cuda-python>=12'"):
        _driver.bindings()
    with pytest.raises(BackendUnavailableError, match="cuda-python"):
        cpre.CudaPreprocessor(SPECS[0])
    with pytest.raises(BackendUnavailableError, match="cuda-python"):
        cpost.CudaPostprocessor(21504, 15)


class FakeResult(IntEnum):
    CUDA_SUCCESS = 0
    CUDA_ERROR_INVALID_VALUE = 1


def test_check_unpacks_values_and_raises_a_typed_error_with_the_name():
    assert _driver.check((FakeResult.CUDA_SUCCESS,), "cuInit") is None
    assert _driver.check((FakeResult.CUDA_SUCCESS, 7), "cuDeviceGet") == 7
    assert _driver.check((FakeResult.CUDA_SUCCESS, 1, 2), "x") == (1, 2)
    with pytest.raises(_driver.CudaError, match="CUDA_ERROR_INVALID_VALUE") as caught:
        _driver.check((FakeResult.CUDA_ERROR_INVALID_VALUE, None), "cuLaunchKernel")
    assert isinstance(caught.value, CstfError)
    assert (caught.value.name, caught.value.call) == ("CUDA_ERROR_INVALID_VALUE", "cuLaunchKernel")


def test_choose_arch_prefers_a_cubin_and_falls_back_to_ptx():
    assert _driver.choose_arch(9, 0, [75, 80, 86, 87, 89, 90]) == ("--gpu-architecture=sm_90", True)
    assert _driver.choose_arch(8, 7, None) == ("--gpu-architecture=sm_87", True)
    assert _driver.choose_arch(12, 0, [75, 80, 86, 90]) == ("--gpu-architecture=compute_90", False)
    with pytest.raises(BackendUnavailableError, match="compute capability 5.0"):
        _driver.choose_arch(5, 0, [75, 80])


def test_pack_args_points_at_each_value_with_its_width():
    holders, params = _driver.pack_args((np.int32(-3), np.float32(0.5), np.float64(0.25), _driver.pointer(2**40)))
    assert params.dtype == np.intp and len(params) == 4
    assert ctypes.c_int32.from_address(int(params[0])).value == -3
    assert ctypes.c_float.from_address(int(params[1])).value == 0.5
    assert ctypes.c_double.from_address(int(params[2])).value == 0.25
    assert ctypes.c_uint64.from_address(int(params[3])).value == 2**40
    with pytest.raises(TypeError, match="numpy scalar"):
        _driver.pack_args((1,))


def test_launch_geometry_covers_every_thread():
    assert _driver.grid_1d(0, 256) == (1,) and _driver.grid_1d(257, 256) == (2,)
    assert _driver.grid_2d(1024, 1024, cpre.BLOCK) == (32, 128) and _driver.grid_2d(1025, 1, cpre.BLOCK) == (33, 1)
    assert cpost.padded_length(1) == 2 and cpost.padded_length(21504) == 32768 and cpost.padded_length(64) == 64


# ---------------------------------------------------------------- host-side logic in numpy
@pytest.mark.parametrize("spec", SPECS, ids=SPEC_IDS)
@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_resize_taps_reproduce_the_numpy_twin(spec, size):
    """The kernel's integer arithmetic, in numpy, on the host-built taps."""
    image = random_image(np.random.default_rng(size[0] * 7 + size[1]), *size)
    box = Letterbox.fit(image.shape[0], image.shape[1], spec)
    x0, x1, a0, a1 = cpre.resize_taps(box.src_w, box.new_w, "x").astype(np.int64)
    y0, y1, b0, b1 = (t[:, None, None] for t in cpre.resize_taps(box.src_h, box.new_h, "y").astype(np.int64))
    pixels = image.astype(np.int64)
    s0 = pixels[y0[:, 0, 0]][:, x0] * a0[:, None] + pixels[y0[:, 0, 0]][:, x1] * a1[:, None]
    s1 = pixels[y1[:, 0, 0]][:, x0] * a0[:, None] + pixels[y1[:, 0, 0]][:, x1] * a1[:, None]
    out = np.full((spec.height, spec.width, 3), spec.pad_value, dtype=np.int64)
    out[box.top:box.top + box.new_h, box.left:box.left + box.new_w] = \
        np.clip(((((s0 >> 4) * b0) >> 16) + (((s1 >> 4) * b1) >> 16) + 2) >> 2, 0, 255)
    ordered = out[..., ::-1] if spec.channels == "RGB" else out
    got = ordered.transpose(2, 0, 1).astype(np.float32) * np.float32(spec.scale)
    assert np.abs(got - preprocess_batch([image], spec)[0][0]).max() <= GREY


def test_staging_layout_is_aligned_and_disjoint():
    images = [np.zeros((h, w, 3), np.uint8) for h, w in [(1, 1), (300, 517), (3000, 4000)]]
    boxes = [Letterbox.fit(i.shape[0], i.shape[1], SPECS[0]) for i in images]
    offsets, total = cpre.staging_layout(images, boxes)
    end = 0
    for image, box, (taps, pixels) in zip(images, boxes, offsets):
        assert taps % cpre.ALIGN == 0 and pixels % cpre.ALIGN == 0
        assert taps >= end and pixels >= taps + 16 * (box.new_w + box.new_h)
        end = pixels + image.nbytes
    assert total >= end


def test_conf_threshold_selects_what_numpy_selects():
    scores = np.random.default_rng(0).random(100000).astype(np.float32)
    for conf in (0.25, 0.1, 1 / 3, np.float64(0.1), np.float64(1 / 3), 0.0, 1.0):
        assert np.array_equal(scores >= conf, scores >= cpost.conf_threshold(conf))
    assert np.isnan(cpost.conf_threshold(float("nan")))


def bitonic_numpy(keys, k, j):
    """One compare-exchange step of the bitonic network, as ``bitonic_exchange`` does it per thread."""
    t = np.arange(len(keys) // 2, dtype=np.int64)
    i = ((t & ~(j - 1)) << 1) | (t & (j - 1))
    a, b = keys[i], keys[i + j]
    swap = (a > b) == ((i & k) == 0)
    keys[i], keys[i + j] = np.where(swap, b, a), np.where(swap, a, b)


def test_bitonic_schedule_sorts():
    rng = np.random.default_rng(2)
    for n, tile in [(2, 2048), (8, 2048), (4096, 2048), (32768, 2048), (256, 8)]:
        keys = rng.integers(0, 2**63, n, dtype=np.uint64)
        work = keys.copy()
        for k, j in cpost.expand_schedule(cpost.bitonic_schedule(n, tile)):
            bitonic_numpy(work, k, j)
        assert np.array_equal(work, np.sort(keys))


def mask_from_matrix(matrix, class_ids, iou, agnostic):
    """The NMS bitmask from a dense IoU matrix of cstf_edge.geometry.iou."""
    hits = np.triu(matrix > iou, k=1)
    if not agnostic:
        hits &= class_ids[:, None] == class_ids[None, :]
    words = _driver.ceil_div(len(hits), 64)
    padded = np.zeros((len(hits), words * 64), dtype=np.uint64)
    padded[:, :len(hits)] = hits
    return np.bitwise_or.reduce(padded.reshape(len(hits), words, 64) << np.arange(64, dtype=np.uint64), axis=-1)


@pytest.mark.parametrize("agnostic", [False, True])
def test_bitmask_greedy_reduction_equals_rotated_nms(agnostic):
    found = select_candidates(dense_raw(np.random.default_rng(3), n=4000, clusters=60), 0.1, max_candidates=1200)
    polys = rbox_to_poly(found.rboxes)
    mask = mask_from_matrix(polygon_iou_matrix(polys, polys), found.class_ids, 0.5, agnostic)
    assert np.array_equal(mask, cpost.nms_mask_numpy(found.rboxes, found.class_ids, 0.5, agnostic))
    kept = cpost.order_kept(cpost.greedy_reduce(mask, len(found)), found.scores, found.class_ids, agnostic)
    if agnostic:
        want = rotated_nms(found.rboxes, found.scores, 0.5)
    else:
        want = class_aware_nms(found.rboxes, found.scores, found.class_ids, 0.5)
    assert len(want) > 50 and np.array_equal(kept, want)


def test_greedy_reduce_small_cases():
    assert cpost.greedy_reduce(np.zeros((0, 0), np.uint64), 0).tolist() == []
    chain = np.array([[0b010], [0b100], [0]], dtype=np.uint64)  # 0 suppresses 1; 1 (gone) would suppress 2
    assert cpost.greedy_reduce(chain, 3).tolist() == [0, 2]
    wide = np.zeros((70, 2), np.uint64)
    wide[0, 1] = np.uint64(1) << np.uint64(5)  # 0 suppresses 69
    assert 69 not in cpost.greedy_reduce(wide, 70).tolist()


# ---------------------------------------------------------------- the kernels' code, host-compiled (cuda_fakes)
@pytest.mark.parametrize("spec", SPECS, ids=SPEC_IDS)
@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_host_compiled_letterbox_kernel_matches_the_numpy_twin(host_kernels, spec, size):
    image = random_image(np.random.default_rng(size[0] + 3 * size[1]), *size)
    box = Letterbox.fit(size[0], size[1], spec)
    out = np.empty((1, 3, spec.height, spec.width), np.float32)
    run_kernel(host_kernels, "letterbox_chw", _driver.grid_2d(spec.width, spec.height, cpre.BLOCK), cpre.BLOCK,
               image, box.src_w, cpre.letterbox_taps(box), box.new_w, box.new_h, box.left, box.top,
               spec.pad_value, spec.scale, int(spec.channels == "RGB"), out, spec.width, spec.height)
    assert np.abs(out - preprocess_batch([image], spec)[0]).max() <= GREY


@pytest.mark.parametrize("conf, classes", [(0.25, None), (0.05, None), (0.25, np.array([0, 2, 7]))])
def test_host_compiled_select_and_sort_kernels_match_select_candidates(host_kernels, conf, classes):
    raw = dense_raw(np.random.default_rng(5))
    n, padded = len(raw), cpost.padded_length(len(raw))
    allowed = np.isin(np.arange(15), [] if classes is None else classes).astype(np.uint8)
    keys, count = np.empty(padded, np.uint64), np.zeros(1, np.uint32)
    run_kernel(host_kernels, "select_keys", _driver.grid_1d(padded, 256), (256,), raw, n, 20, 15,
               cpost.conf_threshold(conf), allowed, int(classes is not None), keys, padded, count)
    for k, j in cpost.expand_schedule(cpost.bitonic_schedule(padded)):
        run_kernel(host_kernels, "bitonic_global", (padded // 512,), (256,), keys, padded, j, k)
    want = select_candidates(raw, conf, max_candidates=3000, classes=classes)
    assert int(count[0]) == len(select_candidates(raw, conf, max_candidates=n, classes=classes))
    ranked = (keys[:min(int(count[0]), 3000)] & np.uint64(0xFFFFFFFF)).astype(np.int64)
    assert np.array_equal(raw[ranked, :5].astype(np.float64), want.rboxes)
    assert np.array_equal(raw[ranked, 5:].argmax(axis=1), want.class_ids)


def host_polygons(lib, boxes):
    boxes, polys = np.ascontiguousarray(boxes, dtype=np.float32), np.empty((len(boxes), 4, 2))
    lib.host_polygons(ctypes.c_void_p(boxes.ctypes.data), len(boxes), ctypes.c_void_p(polys.ctypes.data))
    return polys


def test_host_compiled_iou_matches_geometry_iou(host_kernels):
    rng = np.random.default_rng(7)
    a = np.column_stack([rng.uniform(0, 60, (5000, 2)), rng.uniform(0, 40, (5000, 2)),
                         rng.uniform(-np.pi, np.pi, 5000)]).astype(np.float32)
    b = a + rng.normal(0, 4, a.shape).astype(np.float32) * (rng.random((5000, 1)) < 0.8)
    b[:50], b[50:60, 2:4], b[60:70, 2] = a[:50], 0.0, 1e-3  # identical, empty, needle-thin
    pa, pb = host_polygons(host_kernels, a), host_polygons(host_kernels, b)
    assert np.abs(pa - rbox_to_poly(a.astype(np.float64))).max() < 1e-9
    out = np.empty(len(a))
    host_kernels.host_iou_pairs(*(ctypes.c_void_p(x.ctypes.data) for x in (pa, pb)), len(a),
                                ctypes.c_void_p(out.ctypes.data))
    want = polygon_iou_pairs(rbox_to_poly(a.astype(np.float64)), rbox_to_poly(b.astype(np.float64)))
    assert np.abs(out - want).max() < 1e-9 and np.allclose(out[:50], 1.0)


@pytest.mark.parametrize("agnostic", [False, True])
def test_host_compiled_mask_kernel_gives_the_numpy_nms(host_kernels, agnostic):
    found = select_candidates(dense_raw(np.random.default_rng(8), n=8000, clusters=80), 0.1, 3000)
    count, words = len(found), _driver.ceil_div(len(found), 64)
    mask = np.empty((count, words), np.uint64)
    run_kernel(host_kernels, "nms_mask", (words, words), (64,), count, words, host_polygons(host_kernels, found.rboxes),
               found.class_ids.astype(np.int32), int(agnostic), 0.5, mask)
    assert_masks_agree(mask, cpost.nms_mask_numpy(found.rboxes, found.class_ids, 0.5, agnostic), found.rboxes, 0.5)
    kept = cpost.order_kept(cpost.greedy_reduce(mask, count), found.scores, found.class_ids, agnostic)
    assert_same_detections(found.take(kept[:300]), nms(found, 0.5, agnostic), iou=0.5)


def test_kernel_sources_compile_with_nvrtc():
    """NVRTC needs no GPU: where cuda-python and its NVRTC library are installed, both modules compile."""
    try:
        archs = _driver.supported_archs()
    except Exception as exc:  # noqa: BLE001 - cuda-python or libnvrtc missing
        pytest.skip(f"needs cuda-python with the NVRTC library ({type(exc).__name__}: {exc})")
    for arch in (72, 87, 90):
        option, cubin = _driver.choose_arch(arch // 10, arch % 10, archs)
        assert _driver.compile_source(kernels.PREPROCESS_SOURCE, "pre.cu", option, cubin)
        assert _driver.compile_source(kernels.POSTPROCESS_SOURCE, "post.cu", option, cubin, cpost.COMPILE_OPTIONS)


# ---------------------------------------------------------------- the twins' host code behind a fake cuda-python
def test_preprocessor_host_code_behind_a_fake_cuda(fake_cuda):
    spec = PreprocessSpec(96, 128)
    rng = np.random.default_rng(12)
    images = [random_image(rng, *size) for size in [(1, 1), (300, 517), (517, 300), (96, 128)]]
    with cpre.CudaPreprocessor(spec, max_batch=len(images)) as pre:
        ptr, box = pre(images[1])
        assert ptr == pre.output.ptr and box == Letterbox.fit(300, 517, spec)
        assert np.abs(pre.download(1) - preprocess_batch(images[1:2], spec)[0]).max() <= GREY
        _, boxes = pre.run(images)
        want, want_boxes = preprocess_batch(images, spec)
        assert boxes == want_boxes and np.abs(pre.download(len(images)) - want).max() <= GREY
    assert not fake_cuda.memory  # everything freed


@pytest.mark.parametrize("agnostic", [False, True])
def test_postprocessor_host_code_behind_a_fake_cuda(fake_cuda, agnostic):
    raw = dense_raw(np.random.default_rng(13), n=3000, clusters=60)
    with cpost.CudaPostprocessor(len(raw), 15, max_candidates=700) as post:
        for conf, classes in [(0.1, None), (0.3, np.array([0, 3, 9])), (2.0, None)]:
            assert_same_detections(post.select(raw, conf, classes), select_candidates(raw, conf, 700, classes))
            got = post(raw, conf, 0.5, classes=classes, agnostic=agnostic)
            want = postprocess(raw, conf, 0.5, max_candidates=700, classes=classes, agnostic=agnostic)
            assert_same_detections(got, want, iou=0.5)
        assert {"select_keys", "bitonic_global", "bitonic_local", "gather_candidates", "nms_mask"} <= \
            set(fake_cuda.launches)
    assert not fake_cuda.memory


# ---------------------------------------------------------------- on the GPU (fixture gpu: conftest.py)


@pytest.mark.gpu
@pytest.mark.parametrize("spec", SPECS, ids=SPEC_IDS)
def test_gpu_preprocessor_matches_the_numpy_twin(gpu, spec):
    rng = np.random.default_rng(9)
    images = [random_image(rng, *size) for size in SIZES]
    with cpre.CudaPreprocessor(spec, max_batch=len(images)) as pre:
        for image in images:
            _, box = pre(image)
            want, boxes = preprocess_batch([image], spec)
            assert box == boxes[0] and np.abs(pre.download(1) - want).max() <= GREY
        pre.run(images[:4])
        assert np.abs(pre.download(4) - preprocess_batch(images[:4], spec)[0]).max() <= GREY


@pytest.mark.gpu
@pytest.mark.parametrize("conf, classes", [(0.25, None), (0.05, None), (0.5, None), (0.25, np.array([1, 4]))])
def test_gpu_candidates_match_select_candidates(gpu, conf, classes):
    raw = dense_raw(np.random.default_rng(10))
    with cpost.CudaPostprocessor(len(raw), raw.shape[1] - 5) as post:
        assert_same_detections(post.select(raw, conf, classes), select_candidates(raw, conf, 3000, classes))


@pytest.mark.gpu
@pytest.mark.parametrize("agnostic", [False, True])
def test_gpu_mask_and_postprocess_match_the_numpy_twin(gpu, agnostic):
    rng = np.random.default_rng(11)
    uniform = (rng.random((21504, 20)) * np.r_[[1024, 1024, 90, 90, 3], np.ones(15)]).astype(np.float32)
    with cpost.CudaPostprocessor(21504, 15) as post:
        for raw in (dense_raw(rng), uniform):
            for conf in (0.25, 0.5):
                found = select_candidates(raw, conf)
                want_mask = cpost.nms_mask_numpy(found.rboxes, found.class_ids, 0.5, agnostic)
                assert_masks_agree(post.mask(raw, conf, 0.5, agnostic=agnostic), want_mask, found.rboxes, 0.5)
                assert_same_detections(post(raw, conf, 0.5, agnostic=agnostic),
                                       postprocess(raw, conf, 0.5, agnostic=agnostic), iou=0.5)
        assert len(post(np.zeros((21504, 20), np.float32))) == 0
