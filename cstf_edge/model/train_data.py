"""The bridge from the PyTorch-free training data set (``cstf_edge.data.dataset``) to a torch DataLoader."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import torch

from cstf_edge.data.dataset import OrientedDetectionDataset, TrainingSample
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
