"""The training data set: fixed-size samples, class ids, dropping rules, references, real data."""
from __future__ import annotations

import numpy as np
import pytest

from cstf_edge._io import write_image
from cstf_edge.data.annotations import ImageLabels
from cstf_edge.data.augment import (
    Compose,
    HSVJitter,
    RandomFlip,
    RandomRot90,
    RandomRotate,
    default_train_augmentation,
    transform_polygons,
    warp_affine,
)
from cstf_edge.data.classes import DOTA8_CLASSES
from cstf_edge.data.dataset import OrientedDetectionDataset, TrainingSample, visible_objects
from cstf_edge.errors import DataError
from cstf_edge.geometry import canonicalize_rboxes, poly_to_rbox, rbox_to_poly

CLASSES = ("plane", "ship", "harbor")
# 100 x 150 (h x w) image; one box per colour channel, the middle one difficult.
BOXES = np.array(
    [[40.0, 30.0, 40.0, 20.0, 0.4], [100.0, 60.0, 36.0, 24.0, -0.8], [120.0, 25.0, 24.0, 20.0, 0.0]]
)


@pytest.fixture()
def labelled_image(tmp_path) -> ImageLabels:
    polygons = rbox_to_poly(BOXES)
    image = np.zeros((100, 150, 3), np.uint8)
    rows, cols = np.mgrid[0:100, 0:150] + 0.5
    for channel, box in enumerate(BOXES):
        # Pixel centres inside the rotated box, computed in the box frame.
        dx, dy = cols - box[0], rows - box[1]
        u = dx * np.cos(box[4]) + dy * np.sin(box[4])
        v = -dx * np.sin(box[4]) + dy * np.cos(box[4])
        image[..., channel][(np.abs(u) <= box[2] / 2) & (np.abs(v) <= box[3] / 2)] = 255
    path = write_image(tmp_path / "scene.png", image)
    return ImageLabels("scene", polygons, ["ship", "harbor", "plane"], [0, 1, 0], image_path=path)


def test_plain_sample_is_the_letterboxed_image_and_labels(labelled_image):
    dataset = OrientedDetectionDataset([labelled_image], CLASSES, image_shape=(128, 160))
    sample = dataset[0]
    assert isinstance(sample, TrainingSample) and len(dataset) == 1
    assert sample.image.shape == (128, 160, 3) and sample.image.dtype == np.uint8
    assert sample.rboxes.dtype == np.float32 and sample.rboxes.shape == (3, 5)
    np.testing.assert_array_equal(sample.class_ids, [1, 2, 0])
    assert sample.class_ids.dtype == np.int64
    np.testing.assert_array_equal(sample.difficult, [0, 1, 0])
    assert sample.image_id == "scene" and sample.original_shape == (100, 150) and sample.reference is None
    # 150 x 100 -> 160 x 107 (scale 160/150 in x, 107/100 in y), 10 rows of padding on top
    np.testing.assert_allclose(sample.transform, [[160 / 150, 0, 0], [0, 1.07, 10], [0, 0, 1]])
    expected = poly_to_rbox(transform_polygons(labelled_image.polygons, sample.transform))
    np.testing.assert_allclose(sample.rboxes, expected, rtol=1e-6)


def test_transform_maps_boxes_back_to_the_original(labelled_image):
    sample = OrientedDetectionDataset([labelled_image], CLASSES, image_shape=256)[0]
    back = transform_polygons(rbox_to_poly(sample.rboxes.astype(np.float64)), np.linalg.inv(sample.transform))
    # 150 x 100 -> 256 x 171: the axes scale by 1.7067 and 1.71, so a rotated rectangle becomes a slight
    # parallelogram whose enclosing box is a few hundredths of a pixel larger.
    np.testing.assert_allclose(poly_to_rbox(back), BOXES, atol=0.1)
    np.testing.assert_allclose(poly_to_rbox(back)[:, :2], BOXES[:, :2], atol=1e-3)


def test_augmented_boxes_sit_on_their_pixels_and_are_canonical(labelled_image):
    augment = Compose([RandomFlip("horizontal", 0.5), RandomRot90(0.7), RandomRotate(180.0, 1.0, 0)])
    dataset = OrientedDetectionDataset([labelled_image], CLASSES, image_shape=(160, 160), augment=augment)
    checked = 0
    for epoch in range(4):
        dataset.set_epoch(epoch)
        sample = dataset[0]
        np.testing.assert_allclose(canonicalize_rboxes(sample.rboxes), sample.rboxes, atol=1e-5)
        channel_of = {1: 0, 2: 1, 0: 2}  # class id -> colour channel it was drawn in
        for box, class_id in zip(sample.rboxes, sample.class_ids):
            bright = sample.image[..., channel_of[int(class_id)]] > 127
            rows, cols = np.nonzero(bright)
            if bright.sum() < 0.9 * box[2] * box[3]:
                continue  # partly rotated out of the frame: its centroid is not the box centre
            np.testing.assert_allclose([cols.mean() + 0.5, rows.mean() + 0.5], box[:2], atol=0.6)
            checked += 1
    assert checked >= 8


def test_same_seed_same_sample_and_epochs_differ(labelled_image):
    make = lambda: OrientedDetectionDataset(  # noqa: E731
        [labelled_image], CLASSES, image_shape=128, augment=default_train_augmentation(128), seed=3
    )
    first, second = make(), make()
    np.testing.assert_array_equal(first[0].image, second[0].image)
    np.testing.assert_array_equal(first[0].rboxes, second[0].rboxes)
    transforms = []
    for epoch in range(5):
        first.set_epoch(epoch)
        transforms.append(first[0].transform)
    assert any(not np.allclose(transforms[0], other) for other in transforms[1:])


def shift_by(dx: float, dy: float):
    affine = np.array([[1.0, 0.0, dx], [0.0, 1.0, dy], [0.0, 0.0, 1.0]])
    return lambda state, rng: warp_affine(state, affine, (state.height, state.width), border_value=0)


def test_objects_whose_centre_leaves_the_image_are_dropped(labelled_image):
    # Letterbox to 150 x 150 puts the image at rows 25..125; shift left by 45 px: box 0 (cx 40) leaves.
    dataset = OrientedDetectionDataset([labelled_image], CLASSES, image_shape=150, augment=shift_by(-45, 0))
    sample = dataset[0]
    np.testing.assert_array_equal(sample.class_ids, [2, 0])
    np.testing.assert_array_equal(sample.difficult, [1, 0])  # the difficult object stays, flagged
    np.testing.assert_allclose(sample.rboxes[:, 0], [55.0, 75.0], atol=1e-4)


def test_small_boxes_are_dropped(labelled_image):
    dataset = OrientedDetectionDataset([labelled_image], CLASSES, image_shape=(100, 150), min_box_size=21.0)
    np.testing.assert_array_equal(dataset[0].class_ids, [2])  # short sides 20, 24, 20


def test_visible_objects_rule():
    boxes = np.array([[5, 5, 10, 4, 0], [-0.1, 5, 10, 4, 0], [9.9, 9.9, 10, 1, 0], [5, 10, 10, 4, 0]], float)
    np.testing.assert_array_equal(visible_objects(boxes, (10, 10), 2.0), [True, False, False, False])


def test_reference_self_is_an_identical_geometric_copy(labelled_image):
    geometric = Compose([RandomFlip("vertical", 1.0), RandomRot90(1.0), RandomRotate(50.0, 1.0)])
    dataset = OrientedDetectionDataset(
        [labelled_image], CLASSES, image_shape=128, augment=geometric, reference="self"
    )
    sample = dataset[0]
    np.testing.assert_array_equal(sample.reference, sample.image)
    assert sample.reference is not sample.image


def test_reference_self_gets_its_own_colours(labelled_image):
    augment = Compose([RandomRotate(50.0, 1.0), HSVJitter(0.1, 0.7, 0.4)])
    dataset = OrientedDetectionDataset(
        [labelled_image], CLASSES, image_shape=128, augment=augment, reference="self"
    )
    sample = dataset[0]
    assert not np.array_equal(sample.reference, sample.image)
    gray = lambda img: img.astype(np.float64).sum(axis=2).ravel()  # noqa: E731
    assert np.corrcoef(gray(sample.reference), gray(sample.image))[0, 1] > 0.9


def test_reference_mapping_is_read_and_checked(labelled_image, tmp_path):
    reference = np.full((100, 150, 3), 50, np.uint8)
    path = write_image(tmp_path / "ref.png", reference)
    dataset = OrientedDetectionDataset(
        [labelled_image], CLASSES, image_shape=(100, 150), reference={"scene": path}
    )
    np.testing.assert_array_equal(dataset[0].reference, reference)
    wrong = write_image(tmp_path / "wrong.png", np.zeros((90, 150, 3), np.uint8))
    with pytest.raises(DataError, match="co-registered"):
        OrientedDetectionDataset([labelled_image], CLASSES, reference={"scene": wrong})[0]
    with pytest.raises(DataError, match="no reference image"):
        OrientedDetectionDataset([labelled_image], CLASSES, reference={})[0]


def test_unknown_classes_raise_or_drop(labelled_image):
    with pytest.raises(DataError, match="harbor"):
        OrientedDetectionDataset([labelled_image], ("plane", "ship"))
    sample = OrientedDetectionDataset([labelled_image], ("plane", "ship"), unknown_classes="drop")[0]
    np.testing.assert_array_equal(sample.class_ids, [1, 0])
    np.testing.assert_array_equal(sample.difficult, [0, 0])


def test_bad_construction_is_refused(labelled_image):
    no_image = ImageLabels.empty("lonely")
    with pytest.raises(DataError, match="image_path"):
        OrientedDetectionDataset([no_image], CLASSES)
    with pytest.raises(ValueError, match="reference"):
        OrientedDetectionDataset([labelled_image], CLASSES, reference="other")
    with pytest.raises(IndexError):
        OrientedDetectionDataset([labelled_image], CLASSES)[1]


def test_dataset_works_without_seed_and_for_empty_labels(tmp_path):
    path = write_image(tmp_path / "blank.png", np.zeros((40, 30, 3), np.uint8))
    dataset = OrientedDetectionDataset([ImageLabels.empty("blank", path)], CLASSES, image_shape=64, seed=None,
                                       augment=default_train_augmentation(64))
    sample = dataset[0]
    assert sample.rboxes.shape == (0, 5) and sample.class_ids.shape == (0,)
    assert sample.image.shape == (64, 64, 3)


def assert_centres_inside(sample: TrainingSample) -> None:
    """Box centres lie in the image (DOTA patch labels are not clipped: a box may cross the border)."""
    height, width = sample.image.shape[:2]
    assert len(sample.rboxes) > 0
    assert (sample.rboxes[:, 0] >= 0).all() and (sample.rboxes[:, 0] < width).all()
    assert (sample.rboxes[:, 1] >= 0).all() and (sample.rboxes[:, 1] < height).all()


def test_real_dota8_sample(shared_data):
    root = shared_data / "dota" / "dota8_yolo_obb"
    dataset = OrientedDetectionDataset.from_yolo_obb_dir(
        root / "images" / "train", root / "labels" / "train", DOTA8_CLASSES, image_shape=512
    )
    assert len(dataset) == 4
    sample = dataset[0]
    assert sample.image.shape == (512, 512, 3)
    assert_centres_inside(sample)
    assert set(sample.class_ids.tolist()) <= set(range(len(DOTA8_CLASSES)))
    np.testing.assert_allclose(sample.transform, [[0.5, 0, 0], [0, 0.5, 0], [0, 0, 1]])
    labels = dataset.labels[0]
    np.testing.assert_allclose(sample.rboxes[:, :4], labels.rboxes()[:, :4] / 2, rtol=1e-5, atol=1e-3)
    np.testing.assert_array_equal(sample.class_ids, [DOTA8_CLASSES.index(name) for name in labels.classes])


def test_real_dota8_augmented_sample_keeps_boxes_inside(shared_data):
    root = shared_data / "dota" / "dota8_yolo_obb"
    dataset = OrientedDetectionDataset.from_yolo_obb_dir(
        root / "images" / "val", root / "labels" / "val", DOTA8_CLASSES,
        image_shape=384, augment=default_train_augmentation(384, scale_range=(0.8, 1.0)), reference="self",
    )
    sample = dataset[1]
    assert sample.image.shape == sample.reference.shape == (384, 384, 3)
    assert_centres_inside(sample)
    assert (sample.rboxes[:, 3] >= dataset.min_box_size).all()


def test_real_hrsc_sample(shared_data):
    xml = shared_data / "hrsc2016" / "FullDataSet" / "Annotations" / "100000002.xml"
    sample = OrientedDetectionDataset.from_hrsc_xmls([xml], image_shape=256)[0]
    assert sample.image.shape == (256, 256, 3) and len(sample.rboxes) == 1
    np.testing.assert_array_equal(sample.class_ids, [0])
    assert_centres_inside(sample)
    corners = rbox_to_poly(sample.rboxes.astype(np.float64))
    assert corners.min() >= -1.0 and corners.max() <= 257.0  # the ship lies inside the picture
