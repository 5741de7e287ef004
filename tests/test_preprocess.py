"""The numpy preprocessing (cstf_edge.runtime.preprocess): channel order, scale, layout, the same bytes
whatever the input's memory layout."""
from __future__ import annotations

import numpy as np
import pytest

from cstf_edge.runtime.preprocess import PreprocessError, PreprocessSpec, preprocess_batch, to_tensor


def _reference(images: np.ndarray, scale: float, rgb: bool) -> np.ndarray:
    ordered = images[..., ::-1] if rgb else images
    return (ordered.transpose(0, 3, 1, 2).astype(np.float32) * np.float32(scale)).astype(np.float32)


@pytest.mark.parametrize("channels", ["RGB", "BGR"])
def test_to_tensor_gives_planes_in_order_times_scale(channels):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (2, 40, 56, 3), dtype=np.uint8)
    spec = PreprocessSpec(40, 56, channels=channels)
    out = to_tensor(images, spec)
    assert out.dtype == np.float32 and out.shape == (2, 3, 40, 56)
    np.testing.assert_array_equal(out, _reference(images, spec.scale, channels == "RGB"))
    first = 2 if channels == "RGB" else 0  # the plane the network sees first
    np.testing.assert_array_equal(out[1, 0], images[1, :, :, first] * np.float32(spec.scale))


def test_to_tensor_takes_a_non_contiguous_view_and_rejects_other_shapes():
    rng = np.random.default_rng(1)
    big = rng.integers(0, 256, (1, 64, 90, 3), dtype=np.uint8)
    view = big[:, ::2, 10:70]  # strided rows, offset columns
    np.testing.assert_array_equal(to_tensor(view), _reference(view, 1 / 255.0, True))
    with pytest.raises(PreprocessError, match="expected uint8"):
        to_tensor(big[0])


def test_preprocess_batch_letterboxes_then_scales():
    image = np.full((30, 60, 3), 255, np.uint8)
    spec = PreprocessSpec(64, 64)
    batch, boxes = preprocess_batch([image], spec)
    assert batch.shape == (1, 3, 64, 64) and boxes[0].new_w == 64 and boxes[0].new_h == 32
    assert batch[0, :, 32, 10].tolist() == [1.0, 1.0, 1.0]  # inside the image
    np.testing.assert_allclose(batch[0, :, 0, 0], spec.pad_value / 255.0, rtol=1e-6)  # the padding
