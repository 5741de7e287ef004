"""The training data set: labelled images in, fixed-size augmented samples out (numpy + OpenCV only).

:class:`OrientedDetectionDataset` wraps a list of :class:`~cstf_edge.data.annotations.ImageLabels` (from
any reader: DOTA, YOLO-OBB, HRSC2016, SynthRS) whose ``image_path`` is set. ``dataset[i]`` returns a
:class:`TrainingSample`; a PyTorch ``DataLoader`` can wrap it as is (the trainer collates the arrays).

How a sample is made, in this order:

1. the image is read as uint8 BGR (``cstf_edge._io.read_image``);
2. it is letterboxed to the network size (``letterbox_for_training``: aspect kept, centred grey padding
   of value 114) - augmenting at network size keeps the cost per sample bounded;
3. the optional ``augment`` pipeline runs (``cstf_edge.data.augment``), moving the query and the reference
   identically and jittering their colours independently;
4. a final letterbox brings the result back to the network size if a step changed it (a quarter turn of
   a non-square input); it is a no-op otherwise;
5. objects whose box centre left the image, or whose box is thinner than ``min_box_size`` output pixels,
   are dropped; difficult objects are kept with their flag (the trainer decides).

Randomness: sample ``i`` of epoch ``e`` draws from ``numpy.random.default_rng([seed, e, i])``, so a
sample does not depend on which worker made it or in which order; call :meth:`set_epoch` each epoch.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from cstf_edge._io import read_image
from cstf_edge.data.annotations import ImageLabels
from cstf_edge.data.augment import PAD_VALUE, Augmentation, AugmentState, letterbox_for_training
from cstf_edge.errors import DataError
from cstf_edge.geometry import poly_to_rbox

log = logging.getLogger(__name__)

REFERENCE_SELF = "self"
UNKNOWN_CLASS_ID = -1


@dataclass
class TrainingSample:
    """One training example at the network size.

    ``image`` uint8 ``[H, W, 3]`` BGR; ``rboxes`` float32 ``[N, 5]`` canonical ``(cx, cy, w, h, angle)``
    in pixels of ``image``; ``class_ids`` int64 ``[N]`` (indices into the data set's ``class_names``);
    ``difficult`` int64 ``[N]``; ``transform`` float64 3x3 mapping original-image pixels to ``image``
    pixels (apply its inverse to predictions); ``original_shape`` ``(height, width)`` of the source
    image; ``reference`` the co-registered reference image (same shape as ``image``) or None.
    """

    image: np.ndarray
    rboxes: np.ndarray
    class_ids: np.ndarray
    difficult: np.ndarray
    image_id: str
    transform: np.ndarray
    original_shape: tuple[int, int]
    reference: np.ndarray | None = None


class OrientedDetectionDataset:
    """Augmented oriented-detection samples over labelled images (see the module docstring).

    ``class_names`` fixes the class ids. ``image_shape`` is the network input ``(height, width)`` (an int
    means square). ``reference``: None (no reference in the samples), ``"self"`` (the query is its own
    reference: an exact copy before augmentation, so it gets the same geometry and its own colours), or a
    mapping ``image_id -> path`` of co-registered reference images of the same size as their query.
    ``unknown_classes``: ``"raise"`` on a label whose class is not in ``class_names``, or ``"drop"``.
    """

    def __init__(
        self,
        labels: Sequence[ImageLabels],
        class_names: Sequence[str],
        *,
        image_shape: int | tuple[int, int] = 1024,
        augment: Augmentation | None = None,
        reference: str | Mapping[str, str | Path] | None = None,
        min_box_size: float = 2.0,
        seed: int | None = 0,
        unknown_classes: str = "raise",
        pad_value: int = PAD_VALUE,
    ) -> None:
        self.labels = list(labels)
        self.class_names = tuple(class_names)
        self.image_shape = image_shape
        self.augment = augment
        self.reference = _check_reference(reference)
        self.min_box_size = float(min_box_size)
        self.seed = seed
        self.pad_value = pad_value
        self.epoch = 0
        self._class_ids = _class_ids_per_image(self.labels, self.class_names, unknown_classes)
        _check_image_paths(self.labels)

    # -------------------------------------------------------------- constructors over the readers

    @classmethod
    def from_dota_dir(
        cls, root, class_names: Sequence[str], *, on_error: str = "raise", **options
    ) -> "OrientedDetectionDataset":
        """A data set over a DOTA folder (``images/`` + ``labelTxt/``); label files without an image
        (which ``load_dota_dir`` reports) are left out."""
        from cstf_edge.data.dota import load_dota_dir

        labels = [item for item in load_dota_dir(root, on_error=on_error) if item.image_path is not None]
        return cls(labels, class_names, **options)

    @classmethod
    def from_yolo_obb_dir(
        cls, images_dir, labels_dir, class_names: Sequence[str], *, on_error: str = "raise", **options
    ) -> "OrientedDetectionDataset":
        """A data set over an Ultralytics YOLO-OBB folder pair; ``class_names`` maps its integer ids."""
        from cstf_edge.data.yolo_obb import load_yolo_obb_dir

        labels = load_yolo_obb_dir(images_dir, labels_dir, class_names, on_error=on_error)
        return cls(labels, class_names, **options)

    @classmethod
    def from_hrsc_xmls(
        cls, xml_paths, class_names: Sequence[str] = ("ship",), **options
    ) -> "OrientedDetectionDataset":
        """A data set over HRSC2016 annotation files read class-agnostically (every object ``ship``);
        each file must lead to a readable image."""
        from cstf_edge.data.hrsc import read_hrsc_xml

        return cls([read_hrsc_xml(path) for path in xml_paths], class_names, **options)

    # -------------------------------------------------------------- sequence protocol

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> TrainingSample:
        if not -len(self) <= index < len(self):
            raise IndexError(f"sample {index} out of range for a data set of {len(self)} images")
        index = index % len(self)
        return self.sample(index, self.rng_for(index))

    def set_epoch(self, epoch: int) -> None:
        """Change the random draws of every sample (call once per epoch)."""
        self.epoch = int(epoch)

    def rng_for(self, index: int) -> np.random.Generator:
        """The generator of sample ``index`` in the current epoch (fresh entropy when ``seed`` is None)."""
        if self.seed is None:
            return np.random.default_rng()
        return np.random.default_rng([int(self.seed), self.epoch, int(index)])

    def sample(self, index: int, rng: np.random.Generator) -> TrainingSample:
        """Make sample ``index`` drawing from ``rng``."""
        labels = self.labels[index]
        image = read_image(labels.image_path)
        state = AugmentState(image, labels.polygons, reference=self._load_reference(labels, image))
        state = letterbox_for_training(state, self.image_shape, self.pad_value)
        if self.augment is not None:
            state = self.augment(state, rng)
        state = letterbox_for_training(state, self.image_shape, self.pad_value)
        rboxes = poly_to_rbox(state.polygons).reshape(-1, 5)
        keep = self._class_ids[index] != UNKNOWN_CLASS_ID
        keep &= visible_objects(rboxes, (state.height, state.width), self.min_box_size)
        return TrainingSample(
            image=state.image,
            rboxes=rboxes[keep].astype(np.float32),
            class_ids=self._class_ids[index][keep],
            difficult=labels.difficult[keep].copy(),
            image_id=labels.image_id,
            transform=state.transform,
            original_shape=(int(image.shape[0]), int(image.shape[1])),
            reference=state.reference,
        )

    def _load_reference(self, labels: ImageLabels, image: np.ndarray) -> np.ndarray | None:
        if self.reference is None:
            return None
        if self.reference == REFERENCE_SELF:
            return image.copy()
        if labels.image_id not in self.reference:
            raise DataError(
                f"no reference image for {labels.image_id!r} ({labels.image_path}); add it to the "
                "reference mapping or use reference='self'"
            )
        reference = read_image(self.reference[labels.image_id])
        if reference.shape[:2] != image.shape[:2]:
            raise DataError(
                f"reference {self.reference[labels.image_id]} is {reference.shape[1]}x{reference.shape[0]}, "
                f"query {labels.image_path} is {image.shape[1]}x{image.shape[0]}; the pair must be "
                "co-registered at the same size"
            )
        return reference


def visible_objects(rboxes: np.ndarray, image_shape: tuple[int, int], min_box_size: float) -> np.ndarray:
    """Mask of boxes ``[N, 5]`` whose centre lies inside an image of ``(height, width)`` and whose short
    side is at least ``min_box_size`` pixels."""
    height, width = image_shape
    cx, cy, short = rboxes[:, 0], rboxes[:, 1], rboxes[:, 3]
    inside = (cx >= 0) & (cx < width) & (cy >= 0) & (cy < height)
    return inside & (short >= min_box_size)


def _check_reference(reference):
    if reference is None or reference == REFERENCE_SELF or isinstance(reference, Mapping):
        return reference
    raise ValueError(
        f"reference must be None, {REFERENCE_SELF!r} or a mapping image_id -> reference path, "
        f"got {reference!r}"
    )


def _class_ids_per_image(
    labels: Sequence[ImageLabels], class_names: Sequence[str], unknown_classes: str
) -> list[np.ndarray]:
    if unknown_classes not in ("raise", "drop"):
        raise ValueError(f"unknown_classes must be 'raise' or 'drop', got {unknown_classes!r}")
    index_of = {name: i for i, name in enumerate(class_names)}
    ids_per_image = []
    for item in labels:
        ids = np.array([index_of.get(name, UNKNOWN_CLASS_ID) for name in item.classes], dtype=np.int64)
        unknown = sorted({name for name in item.classes if name not in index_of})
        if unknown and unknown_classes == "raise":
            raise DataError(
                f"{item.image_id} ({item.image_path}): classes {unknown} are not in the class list "
                f"{list(class_names)}; add them or pass unknown_classes='drop'"
            )
        if unknown:
            log.debug("%s: dropping objects of classes %s", item.image_id, unknown)
        ids_per_image.append(ids)
    return ids_per_image


def _check_image_paths(labels: Sequence[ImageLabels]) -> None:
    missing = [item.image_id for item in labels if item.image_path is None]
    if missing:
        raise DataError(
            f"{len(missing)} labelled images have no image_path (first: {missing[:3]}); a training data "
            "set needs the images, read them with a loader that finds them (e.g. load_dota_dir)"
        )
