"""Drawing detections: rotated boxes in class colours with ``class score`` labels (OpenCV, no torch).

    image = draw_detections(bgr, result)              # a copy of the image with the boxes drawn
    image = render_scene(reader, result, max_side=4096)  # a large scene, downscaled, boxes drawn

Coordinates follow the continuous pixel convention (``cstf_edge.geometry.boxes``); OpenCV draws with pixel
centres at integers, so points are shifted by -0.5 and drawn with 4 fractional bits.
"""
from __future__ import annotations

import cv2
import numpy as np

from cstf_edge.runtime.detector import DetectionResult

# BGR, well apart in hue; class i gets PALETTE[i % len(PALETTE)].
PALETTE = (
    (56, 56, 255), (151, 157, 255), (31, 112, 255), (29, 178, 255), (49, 210, 207), (10, 249, 72),
    (23, 204, 146), (134, 219, 61), (52, 147, 26), (187, 212, 0), (168, 153, 44), (255, 194, 0),
    (147, 69, 52), (255, 115, 100), (236, 24, 0), (255, 56, 132), (133, 0, 82), (255, 56, 203),
)
DEFAULT_MAX_SIDE = 4096
_SHIFT = 4  # fractional bits of the drawing coordinates
_BLOCK = 2048  # window size when a scene is read block by block for its overview


def class_colour(class_id: int) -> tuple[int, int, int]:
    """The BGR colour of a class index."""
    return PALETTE[int(class_id) % len(PALETTE)]


def _label(image: np.ndarray, text: str, corner: np.ndarray, colour, scale: float, thickness: int) -> None:
    """``text`` on a filled box of ``colour`` whose lower-left corner is at ``corner``."""
    (width, height), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)
    x = int(np.clip(corner[0], 0, max(0, image.shape[1] - width)))
    y = int(np.clip(corner[1], height + base, image.shape[0]))
    cv2.rectangle(image, (x, y - height - base), (x + width, y), colour, -1)
    cv2.putText(image, text, (x, y - base), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), thickness,
                cv2.LINE_AA)


def draw_detections(image: np.ndarray, result: DetectionResult, scale: float = 1.0, labels: bool = True,
                    thickness: int | None = None, min_score: float = 0.0) -> np.ndarray:
    """A copy of uint8 BGR ``image`` with ``result``'s boxes of score ``min_score`` or more drawn; ``scale`` maps
    result pixels to image pixels (for a downscaled overview)."""
    canvas = np.ascontiguousarray(image).copy()
    side = max(canvas.shape[:2])
    thickness = thickness or max(1, round(side / 800))
    font = max(0.35, side / 2500)
    polygons = result.polygons * scale - 0.5
    for polygon, score, class_id in zip(polygons, result.scores, result.class_ids):
        if score < min_score:
            continue
        colour = class_colour(class_id)
        points = np.round(polygon * (1 << _SHIFT)).astype(np.int32).reshape(-1, 1, 2)
        cv2.polylines(canvas, [points], True, colour, thickness, cv2.LINE_AA, shift=_SHIFT)
        if labels:
            top = polygon[np.argmin(polygon[:, 1])]
            _label(canvas, f"{result.class_names[class_id]} {score:.2f}", top, colour, font, max(1, thickness // 2))
    return canvas


def overview(reader, max_side: int = DEFAULT_MAX_SIDE) -> tuple[np.ndarray, float]:
    """The whole scene of a window reader downscaled to at most ``max_side`` px, and the scale used.
    Read block by block (or through the reader's own ``overview``), never whole at full resolution."""
    scale = min(1.0, max_side / max(reader.width, reader.height))
    if hasattr(reader, "overview"):
        image = reader.overview(max_side)
        return image, image.shape[1] / reader.width
    if scale == 1.0:
        return reader.read(0, 0, reader.width, reader.height), 1.0
    out_w, out_h = max(1, round(reader.width * scale)), max(1, round(reader.height * scale))
    canvas = np.zeros((out_h, out_w, 3), np.uint8)
    for up in range(0, reader.height, _BLOCK):
        for left in range(0, reader.width, _BLOCK):
            x0, y0 = round(left * scale), round(up * scale)
            x1 = round(min(left + _BLOCK, reader.width) * scale)
            y1 = round(min(up + _BLOCK, reader.height) * scale)
            if x1 > x0 and y1 > y0:
                block = reader.read(left, up, _BLOCK, _BLOCK)
                canvas[y0:y1, x0:x1] = cv2.resize(block, (x1 - x0, y1 - y0), interpolation=cv2.INTER_AREA)
    return canvas, scale


def render_scene(scene, result: DetectionResult, max_side: int = DEFAULT_MAX_SIDE,
                 min_score: float = 0.0) -> np.ndarray:
    """``scene`` (uint8 BGR array or window reader) with ``result``'s boxes of score ``min_score`` or more
    drawn, at most ``max_side`` px."""
    if isinstance(scene, np.ndarray):
        scale = min(1.0, max_side / max(scene.shape[:2]))
        image = scene if scale == 1.0 else cv2.resize(
            scene, (max(1, round(scene.shape[1] * scale)), max(1, round(scene.shape[0] * scale))),
            interpolation=cv2.INTER_AREA)
        scale = image.shape[1] / scene.shape[1]
    else:
        image, scale = overview(scene, max_side)
    return draw_detections(image, result, scale, min_score=min_score)
