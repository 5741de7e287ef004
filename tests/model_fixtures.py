"""A tiny DOTA-layout set of bright rotated rectangles for the model and training tests."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from cstf_edge._io import write_image
from cstf_edge.data.annotations import ImageLabels
from cstf_edge.data.dota import write_dota_labels
from cstf_edge.geometry import rbox_to_poly

TINY_CLASSES = ("bar", "block")


def make_tiny_dota(root: Path, count: int = 16, size: int = 128, seed: int = 0) -> Path:
    """``count`` grey-noise images with 1-3 objects: long bright bars (class 0), squarish blocks (1)."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True, exist_ok=True)
    for index in range(count):
        image = rng.integers(20, 60, size=(size, size, 3), dtype=np.uint8)
        rboxes, classes = [], []
        for _ in range(int(rng.integers(1, 4))):
            kind = int(rng.integers(0, 2))
            long_side = rng.uniform(0.25, 0.45) * size
            short = long_side * (rng.uniform(0.2, 0.35) if kind == 0 else rng.uniform(0.8, 1.0))
            centre = rng.uniform(0.25, 0.75, size=2) * size
            rboxes.append([centre[0], centre[1], long_side, short, rng.uniform(-np.pi / 2, np.pi / 2)])
            classes.append(TINY_CLASSES[kind])
        polys = rbox_to_poly(np.array(rboxes))
        for poly, name in zip(polys, classes):
            colour = (230, 230, 230) if name == "bar" else (60, 200, 240)
            cv2.fillPoly(image, [np.round(poly).astype(np.int32)], colour)
        image_id = f"tiny_{index:03d}"
        write_image(root / "images" / f"{image_id}.png", image)
        write_dota_labels(root / "labelTxt" / f"{image_id}.txt",
                          ImageLabels(image_id, polys, classes, np.zeros(len(classes), dtype=np.int64)))
    return root
