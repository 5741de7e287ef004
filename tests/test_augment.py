"""Rotated-box-aware augmentations: labels stay glued to the pixels, exact steps are exact, draws repeat."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from cstf_edge.data.augment import (
    PAD_VALUE,
    AugmentState,
    Compose,
    HSVJitter,
    RandomFlip,
    RandomRot90,
    RandomRotate,
    ScaleJitter,
    default_train_augmentation,
    flip,
    letterbox_for_training,
    pixel_index_matrix,
    rot90,
    rotate,
    transform_polygons,
)
from cstf_edge.errors import DataError
from cstf_edge.geometry import canonicalize_rboxes, poly_to_rbox, rbox_to_poly

HEIGHT, WIDTH = 160, 200
# One box per colour channel, all well inside the image, short sides >= 30 px (edge blur stays small).
BOXES = np.array(
    [[60.0, 50.0, 60.0, 30.0, 0.3], [140.0, 105.0, 50.0, 34.0, -1.0], [150.0, 40.0, 30.0, 30.0, 0.2]]
)


def rasterize(polygon: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Boolean mask of a polygon given in label coordinates (pixel (i, j) centred at (j+0.5, i+0.5))."""
    mask = np.zeros(shape, np.uint8)
    corners = np.round((polygon - 0.5) * 16).astype(np.int32)
    cv2.fillPoly(mask, [corners], 255, lineType=cv2.LINE_8, shift=4)
    return mask > 0


def boxes_state(boxes: np.ndarray = BOXES, with_reference: bool = False) -> AugmentState:
    polygons = rbox_to_poly(boxes)
    image = np.zeros((HEIGHT, WIDTH, 3), np.uint8)
    for channel, polygon in enumerate(polygons):
        image[..., channel][rasterize(polygon, (HEIGHT, WIDTH))] = 255
    return AugmentState(image, polygons, reference=image.copy() if with_reference else None)


def assert_labels_cover_pixels(state: AugmentState, min_iou: float = 0.9, max_centre_error: float = 0.2):
    """Each channel's bright pixels match its polygon: mask IoU and the centroid of the bright pixels."""
    shape = state.image.shape[:2]
    for channel, polygon in enumerate(state.polygons):
        drawn = rasterize(polygon, shape)
        bright = state.image[..., channel] > 127
        iou = (drawn & bright).sum() / max((drawn | bright).sum(), 1)
        assert iou > min_iou, f"box {channel}: mask IoU {iou:.3f}"
        rows, cols = np.nonzero(bright)
        centroid = np.array([cols.mean() + 0.5, rows.mean() + 0.5])
        centre = poly_to_rbox(polygon)[:2]
        assert np.abs(centroid - centre).max() < max_centre_error, f"box {channel}: {centroid} vs {centre}"


GEOMETRIC_STEPS = {
    "flip-h": lambda s: flip(s, "horizontal"),
    "flip-v": lambda s: flip(s, "vertical"),
    "rot90-1": lambda s: rot90(s, 1),
    "rot90-2": lambda s: rot90(s, 2),
    "rot90-3": lambda s: rot90(s, 3),
    "rotate+30": lambda s: rotate(s, 30.0, border_value=0),
    "rotate-77": lambda s: rotate(s, -77.0, border_value=0),
    "letterbox-up": lambda s: letterbox_for_training(s, 300, pad_value=0),
    "letterbox-down": lambda s: letterbox_for_training(s, (100, 120), pad_value=0),
    "scale-pad": lambda s: ScaleJitter((260, 300), (1.3, 1.3), 0)(s, np.random.default_rng(3)),
    "scale-shrink": lambda s: ScaleJitter((160, 200), (0.8, 0.8), 0)(s, np.random.default_rng(4)),
}


@pytest.mark.parametrize("name", sorted(GEOMETRIC_STEPS))
def test_geometric_step_keeps_labels_on_pixels(name):
    state = GEOMETRIC_STEPS[name](boxes_state())
    assert_labels_cover_pixels(state)


def test_the_drawing_itself_matches_its_labels():
    assert_labels_cover_pixels(boxes_state(), min_iou=0.999, max_centre_error=0.05)


def test_scale_jitter_crop_keeps_visible_parts_on_pixels():
    state = ScaleJitter((120, 150), (1.5, 1.5), border_value=0)(boxes_state(), np.random.default_rng(0))
    assert state.image.shape == (120, 150, 3)
    for channel, polygon in enumerate(state.polygons):
        drawn = rasterize(polygon, state.image.shape[:2])
        bright = state.image[..., channel] > 127
        if drawn.sum() > 200:  # box still (partly) in view
            assert (drawn & bright).sum() / (drawn | bright).sum() > 0.9


def rbox_after(step, box) -> np.ndarray:
    state = step(AugmentState(np.zeros((120, 160, 3), np.uint8), rbox_to_poly(np.array([box]))))
    return poly_to_rbox(state.polygons)[0]


HALF_PI = np.pi / 2


@pytest.mark.parametrize(
    "step, box, expected",
    [
        (lambda s: flip(s, "horizontal"), [50, 40, 40, 16, 0.3], [110, 40, 40, 16, -0.3]),
        (lambda s: flip(s, "vertical"), [50, 40, 40, 16, 0.3], [50, 80, 40, 16, -0.3]),
        (lambda s: flip(s, "horizontal"), [50, 40, 40, 16, -HALF_PI], [110, 40, 40, 16, -HALF_PI]),
        (lambda s: rot90(s, 1), [50, 40, 40, 16, 0.3], [80, 50, 40, 16, 0.3 - HALF_PI]),
        (lambda s: rot90(s, 1), [50, 40, 40, 16, 0.0], [80, 50, 40, 16, -HALF_PI]),
        (lambda s: rot90(s, 2), [50, 40, 40, 16, 0.3], [110, 80, 40, 16, 0.3]),
        (lambda s: rot90(s, 3), [50, 40, 40, 16, 0.3], [40, 110, 40, 16, 0.3 - HALF_PI]),
        (lambda s: rot90(s, 1), [50, 40, 20, 20, 0.2], [80, 50, 20, 20, 0.2]),  # a square is its own turn
        (lambda s: rotate(s, 90.0), [80, 60, 40, 16, 0.3], [80, 60, 40, 16, 0.3 - HALF_PI]),
        # 160 x 120 -> 320 x 240: scale 2, 40 rows of padding on top
        (lambda s: letterbox_for_training(s, 320), [50, 40, 40, 16, 0.3], [100, 120, 80, 32, 0.3]),
    ],
)
def test_exact_steps_give_canonical_boxes_computed_by_hand(step, box, expected):
    result = rbox_after(step, box)
    np.testing.assert_allclose(result, expected, atol=1e-9)
    np.testing.assert_allclose(canonicalize_rboxes(result), result, atol=1e-12)


def test_rotate_moves_centre_and_angle_like_opencv():
    result = rbox_after(lambda s: rotate(s, 30.0), [120, 60, 40, 16, 0.3])
    theta = np.radians(30.0)
    dx, dy = 120 - 80, 60 - 60  # centre of a 160 x 120 image is (80, 60)
    cos, sin = np.cos(theta), np.sin(theta)
    expected_centre = [80 + dx * cos + dy * sin, 60 - dx * sin + dy * cos]
    np.testing.assert_allclose(result[:2], expected_centre, atol=1e-9)
    np.testing.assert_allclose(result[2:], [40, 16, 0.3 - theta], atol=1e-9)


def test_exact_chain_transform_reproduces_the_pixels():
    original = boxes_state()
    original.image[:] = np.random.default_rng(0).integers(0, 256, original.image.shape, dtype=np.uint8)
    state = rot90(flip(rot90(flip(original, "vertical"), 1), "horizontal"), 3)
    size = (state.width, state.height)
    matrix = pixel_index_matrix(state.transform)
    warped = cv2.warpAffine(original.image, matrix, size, flags=cv2.INTER_NEAREST)
    np.testing.assert_array_equal(warped, state.image)
    mapped = transform_polygons(original.polygons, state.transform)
    np.testing.assert_allclose(mapped, state.polygons, atol=1e-9)


def test_composed_transform_maps_original_labels_to_output_labels():
    original = boxes_state()
    state = default_train_augmentation((224, 256))(original, np.random.default_rng(7))
    assert state.image.shape == (224, 256, 3)
    mapped = transform_polygons(original.polygons, state.transform)
    np.testing.assert_allclose(mapped, state.polygons, atol=1e-9)


def test_same_seed_same_sample_and_seeds_differ():
    pipeline = default_train_augmentation((160, 200))
    first = pipeline(boxes_state(), np.random.default_rng(11))
    again = pipeline(boxes_state(), np.random.default_rng(11))
    np.testing.assert_array_equal(first.image, again.image)
    np.testing.assert_array_equal(first.polygons, again.polygons)
    others = [pipeline(boxes_state(), np.random.default_rng(seed)).transform for seed in range(12, 16)]
    assert any(not np.allclose(first.transform, other) for other in others)


def test_reference_gets_same_geometry_and_its_own_colours():
    geometric = Compose([RandomFlip("horizontal", 1.0), RandomRot90(1.0), RandomRotate(40.0, 1.0)])
    state = geometric(boxes_state(with_reference=True), np.random.default_rng(5))
    np.testing.assert_array_equal(state.reference, state.image)
    jittered = HSVJitter(0.05, 0.7, 0.4)(state, np.random.default_rng(5))
    assert not np.array_equal(jittered.reference, jittered.image)
    np.testing.assert_array_equal(jittered.polygons, state.polygons)
    np.testing.assert_array_equal(jittered.transform, state.transform)


def test_hsv_jitter_changes_colours_only():
    image = np.random.default_rng(1).integers(30, 220, (40, 50, 3), dtype=np.uint8)
    state = AugmentState(image, rbox_to_poly(BOXES[:1]))
    out = HSVJitter()(state, np.random.default_rng(2))
    assert out.image.shape == image.shape and out.image.dtype == np.uint8
    assert not np.array_equal(out.image, image)
    np.testing.assert_array_equal(out.polygons, state.polygons)


def test_letterbox_pads_centred_with_114():
    image = np.full((100, 200, 3), 7, np.uint8)
    state = letterbox_for_training(AugmentState(image, np.zeros((0, 4, 2))), (256, 256))
    assert state.image.shape == (256, 256, 3)
    # scale 1.28 -> 256 x 128 content, 64 rows of padding above and below
    assert (state.image[:64] == PAD_VALUE).all() and (state.image[-64:] == PAD_VALUE).all()
    assert (state.image[64:192] == 7).all()
    np.testing.assert_allclose(state.transform, [[1.28, 0, 0], [0, 1.28, 64], [0, 0, 1]])


def test_letterbox_without_upscaling_and_odd_padding():
    image = np.zeros((50, 81, 3), np.uint8)
    state = letterbox_for_training(AugmentState(image, np.zeros((0, 4, 2))), (64, 96), scale_up=False)
    np.testing.assert_allclose(state.transform, [[1, 0, 7], [0, 1, 7], [0, 0, 1]])
    assert (state.image[7:57, 7:88] == 0).all() and (state.image[:7] == PAD_VALUE).all()
    assert (state.image[:, 88:] == PAD_VALUE).all() and state.image.shape == (64, 96, 3)


def test_letterbox_to_the_same_shape_is_identity():
    state = boxes_state()
    out = letterbox_for_training(state, (HEIGHT, WIDTH))
    assert out.image is state.image
    np.testing.assert_array_equal(out.transform, np.eye(3))


def test_probability_zero_steps_do_nothing():
    state = boxes_state()
    pipeline = Compose([RandomFlip("vertical", 0.0), RandomRot90(0.0), RandomRotate(90.0, 0.0)])
    out = pipeline(state, np.random.default_rng(0))
    assert out.image is state.image


def test_invalid_inputs_raise_with_a_reason():
    with pytest.raises(DataError, match="same size"):
        reference = np.zeros((10, 12, 3), np.uint8)
        AugmentState(np.zeros((10, 10, 3), np.uint8), np.zeros((0, 8)), reference=reference)
    with pytest.raises(DataError, match="uint8"):
        AugmentState(np.zeros((10, 10, 3), np.float32), np.zeros((0, 8)))
    with pytest.raises(ValueError, match="probability"):
        RandomFlip("horizontal", 1.5)
    with pytest.raises(ValueError, match="horizontal"):
        RandomFlip("diagonal")
    with pytest.raises(ValueError, match="scale_range"):
        ScaleJitter(64, (0.0, 1.0))
