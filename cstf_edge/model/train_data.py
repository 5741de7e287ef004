"""The bridge from the PyTorch-free training data set (``cstf_edge.data.dataset``) to a torch DataLoader,
and where a run's data lives (:func:`resolve_data`: DOTA / HRSC2016 folders, train/val folders, TOML)."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from cstf_edge.data.annotations import ImageLabels
from cstf_edge.data.dataset import OrientedDetectionDataset, TrainingSample
from cstf_edge.data.labelled import data_layout, load_labelled_dir  # noqa: F401 (re-exported)
from cstf_edge.errors import DataError
from cstf_edge.model.loss import Targets


@dataclass
class Batch:
    """Collated samples: uint8 ``images [B, H, W, 3]`` BGR, padded :class:`Targets`, optional uint8
    ``references``, and the image ids."""

    images: torch.Tensor
    targets: Targets
    references: torch.Tensor | None
    image_ids: list[str]

    def pin_memory(self) -> "Batch":
        refs = None if self.references is None else self.references.pin_memory()
        targets = Targets(self.targets.boxes.pin_memory(), self.targets.labels.pin_memory(),
                          self.targets.valid.pin_memory())
        return Batch(self.images.pin_memory(), targets, refs, self.image_ids)


def collate_samples(samples: list[TrainingSample]) -> Batch:
    """Stack images; pad boxes/labels to the most objects in the batch (``valid`` marks real ones)."""
    count = max((len(s.rboxes) for s in samples), default=0)
    boxes = np.zeros((len(samples), count, 5), dtype=np.float32)
    labels = np.zeros((len(samples), count), dtype=np.int64)
    valid = np.zeros((len(samples), count), dtype=bool)
    for row, sample in enumerate(samples):
        n = len(sample.rboxes)
        boxes[row, :n], labels[row, :n], valid[row, :n] = sample.rboxes, sample.class_ids, True
    images = torch.from_numpy(np.stack([s.image for s in samples]))
    has_refs = all(s.reference is not None for s in samples)
    refs = torch.from_numpy(np.stack([s.reference for s in samples])) if has_refs else None
    targets = Targets(torch.from_numpy(boxes), torch.from_numpy(labels), torch.from_numpy(valid))
    return Batch(images, targets, refs, [s.image_id for s in samples])


def data_fingerprint(dataset: OrientedDetectionDataset) -> str:
    """SHA-256 over image ids, class names and label geometry: which data a run trained on."""
    digest = hashlib.sha256()
    digest.update("\n".join(dataset.class_names).encode())
    for labels in dataset.labels:
        digest.update(labels.image_id.encode())
        digest.update(np.ascontiguousarray(labels.polygons, dtype=np.float64).tobytes())
        digest.update("\n".join(labels.classes).encode())
    return digest.hexdigest()


def seed_worker(worker_id: int) -> None:
    """DataLoader worker init: samples draw from their own seeded generators (``dataset.rng_for``), so
    only numpy's global generator needs a fixed state for any stray use."""
    np.random.seed(torch.initial_seed() % 2**32)


# ---------------------------------------------------------------------------------------- data layouts

@dataclass(frozen=True)
class DataSpec:
    """Where a run's data lives: a training folder, an optional validation folder, and the class list
    when the data names one (a TOML file's ``classes``, or ``("ship",)`` for HRSC2016)."""

    train: Path
    val: Path | None = None
    class_names: tuple[str, ...] | None = None


def resolve_data(data, val=None) -> DataSpec:
    """The :class:`DataSpec` of ``data``: a labelled folder (DOTA or HRSC2016 layout), a folder holding
    ``train/`` (and ``val/``) in such a layout, or a TOML file ``train = "..."``, ``val = "..."``,
    ``classes = [...]`` (paths relative to the file). ``val`` overrides the validation folder."""
    path = Path(data)
    if path.is_file() and path.suffix.lower() == ".toml":
        spec = _spec_from_toml(path)
    elif data_layout(path):
        spec = DataSpec(path)
    elif path.is_dir() and data_layout(path / "train"):
        spec = DataSpec(path / "train", path / "val" if data_layout(path / "val") else None)
    else:
        raise DataError(
            f"{path}: not a data set; expected a folder with images/ + labelTxt/ (DOTA), AllImages/ + "
            "Annotations/ (HRSC2016), a folder with train/ (and val/) in one of those layouts, or a .toml file")
    if val is not None:
        spec = DataSpec(spec.train, Path(val), spec.class_names)
    if spec.class_names is None and data_layout(spec.train) == "hrsc":
        spec = DataSpec(spec.train, spec.val, ("ship",))
    for folder in (spec.train, spec.val):
        if folder is not None and not data_layout(folder):
            raise DataError(f"{folder}: expected images/ + labelTxt/ (DOTA) or AllImages/ + Annotations/ (HRSC2016)")
    return spec


def _spec_from_toml(path: Path) -> DataSpec:
    import tomllib

    try:
        table = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: not valid TOML ({exc})") from None
    if not isinstance(table.get("train"), str):
        raise DataError(f'{path}: needs train = "<folder>" (and optionally val = "<folder>", classes = [...])')
    classes = table.get("classes")
    if classes is not None and (not isinstance(classes, list) or not all(isinstance(c, str) for c in classes)):
        raise DataError(f'{path}: classes must be a list of names, e.g. classes = ["plane", "ship"]')
    val = table.get("val")
    return DataSpec(path.parent / table["train"], None if val is None else path.parent / val,
                    tuple(classes) if classes else None)


def modality_references(root, modality: str, labels: list[ImageLabels]) -> dict[str, Path]:
    """``image_id -> path`` of the co-registered ``modality`` images of a SynthRS-layout folder
    (``root/<modality>/images``, same ids as ``root/images``); every image of ``labels`` must have one."""
    from cstf_edge.data.dota import find_images

    folder = Path(root) / modality / "images"
    if not folder.is_dir():
        raise DataError(f"{folder}: no such folder; --reference-modality {modality} needs the {modality} images "
                        f"there (e.g. cstf-edge synth OUT --modalities optical,{modality})")
    found = find_images(folder)
    missing = [item.image_id for item in labels if item.image_id not in found]
    if missing:
        raise DataError(f"{folder}: no {modality} image for {len(missing)} image(s) (first: {missing[:3]})")
    return {item.image_id: found[item.image_id] for item in labels}
