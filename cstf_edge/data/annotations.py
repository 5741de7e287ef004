"""The in-memory record of one image's oriented-object labels, shared by every reader and writer."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cstf_edge.geometry import as_polygons, poly_to_rbox


@dataclass
class ImageLabels:
    """Labels of one image.

    ``polygons`` ``[N, 4, 2]`` float64 corners as the source wrote them (DOTA order); ``classes`` the N
    class names; ``difficult`` ``[N]`` int flags (DOTA: 0, 1, or 2 for objects cut by a patch border);
    ``meta`` holds header fields such as ``imagesource`` and ``gsd``.
    """

    image_id: str
    polygons: np.ndarray
    classes: list[str]
    difficult: np.ndarray
    image_path: Path | None = None
    meta: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.polygons = as_polygons(self.polygons).reshape(-1, 4, 2)
        self.difficult = np.asarray(self.difficult, dtype=np.int64).reshape(-1)
        self.classes = list(self.classes)
        n = len(self.polygons)
        if len(self.classes) != n or len(self.difficult) != n:
            raise ValueError(
                f"{self.image_id}: {n} polygons, {len(self.classes)} classes, "
                f"{len(self.difficult)} difficult flags; they must agree"
            )

    def __len__(self) -> int:
        return len(self.polygons)

    def rboxes(self) -> np.ndarray:
        """Canonical rotated boxes ``[N, 5]`` (minimum-area rectangles of the polygons)."""
        return poly_to_rbox(self.polygons).reshape(-1, 5)

    @classmethod
    def empty(cls, image_id: str, image_path: Path | None = None) -> "ImageLabels":
        return cls(image_id, np.zeros((0, 4, 2)), [], np.zeros(0, dtype=np.int64), image_path)
