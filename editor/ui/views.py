"""Drawing the selection over the photo for the page: tint, outline, point markers, boxes and their names.

Pure numpy and OpenCV. Works on the display copy of the photo (`HxWx3 uint8`), which is the
full-resolution photo scaled down by `scale` when it is large; coordinates given here are
display pixels. Nothing here is ever fed back into an edit.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import cv2
import numpy as np

from editor.core.prompts import Box, Point

TINT = (30, 144, 255)  # the selection's colour
TINT_OPACITY = 0.45
OUTLINE = (255, 255, 255)
OUTLINE_SHADOW = (10, 30, 90)  # a dark ring outside the white one, visible on light photos too
BOX = (250, 204, 21)
MARKER_COLORS = {"add": (34, 197, 94), "remove": (239, 68, 68), "cut": (249, 115, 22)}

MarkerKind = Literal["add", "remove", "cut"]  # object point, not-object point, point of a subtracted object


@dataclass(frozen=True)
class Marker:
    x: float
    y: float
    kind: MarkerKind


def downscale(image: np.ndarray, scale: float) -> np.ndarray:
    """The display copy of an image or a soft mask."""
    if scale >= 1.0:
        return image
    height, width = image.shape[:2]
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA)


def to_original(x: float, y: float, scale: float, width: int, height: int) -> tuple[float, float]:
    """A click on the display copy (pixel index) as a point in the original's pixel grid."""
    ox, oy = (x + 0.5) / scale - 0.5, (y + 0.5) / scale - 0.5
    return min(max(ox, 0.0), width - 1.0), min(max(oy, 0.0), height - 1.0)


def to_display(point: Point, scale: float) -> Point:
    return (point[0] + 0.5) * scale - 0.5, (point[1] + 0.5) * scale - 0.5


def draw(
    image: np.ndarray,
    mask: np.ndarray | None,
    markers: list[Marker] = (),  # type: ignore[assignment]
    boxes: list[Box] = (),  # type: ignore[assignment]
    pending_corner: Point | None = None,
    box_labels: list[str] = (),  # type: ignore[assignment]
) -> np.ndarray:
    """The photo with the selection drawn: a translucent tint weighted by the (soft) mask,
    an outline on its edge, the boxes (named by `box_labels`, "" for none), the pending box
    corner and the point markers on top."""
    out = image.copy()
    size = _mark_size(image.shape)
    if mask is not None and np.any(mask):
        out = _tint(out, mask)
        _outline(out, mask > 127, max(1, size // 4))
    for box in boxes:
        _box(out, box, max(1, size // 4))
    for box, label in zip(boxes, box_labels):
        if label:
            _label(out, box, label, size)
    if pending_corner is not None:
        _corner(out, pending_corner, size)
    for marker in markers:
        _marker(out, marker, size)
    return out


def _mark_size(shape: tuple[int, ...]) -> int:
    """Marker radius in pixels, readable on small and large displays alike."""
    return int(np.clip(min(shape[:2]) / 60, 4, 14))


def _tint(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    alpha = (mask.astype(np.float32) / 255.0 * TINT_OPACITY)[..., None]
    tinted = image.astype(np.float32) * (1 - alpha) + np.array(TINT, np.float32) * alpha
    return np.rint(tinted).astype(np.uint8)


def _outline(image: np.ndarray, selected: np.ndarray, width: int) -> None:
    """A white line along the inside of the edge and a dark one along the outside."""
    binary = selected.astype(np.uint8)
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * width + 1, 2 * width + 1))
    inner = (binary > 0) & (cv2.erode(binary, kernel, borderType=cv2.BORDER_REPLICATE) == 0)
    outer = (cv2.dilate(binary, kernel) > 0) & (binary == 0)
    image[outer] = OUTLINE_SHADOW
    image[inner] = OUTLINE


def _box(image: np.ndarray, box: Box, width: int) -> None:
    x1, y1, x2, y2 = (int(round(v)) for v in box)
    cv2.rectangle(image, (x1, y1), (x2, y2), (0, 0, 0), width + 2, cv2.LINE_AA)
    cv2.rectangle(image, (x1, y1), (x2, y2), BOX, width, cv2.LINE_AA)


def _label(image: np.ndarray, box: Box, text: str, size: int) -> None:
    """The box's name on a dark tag at its top-left corner, inside the photo."""
    font, scale, thickness = cv2.FONT_HERSHEY_SIMPLEX, max(0.35, size / 22), 1
    (width, height), baseline = cv2.getTextSize(text, font, scale, thickness)
    x = int(np.clip(round(box[0]), 0, max(0, image.shape[1] - width - 4)))
    y = int(np.clip(round(box[1]) - height - baseline - 4, 0, max(0, image.shape[0] - height - baseline - 4)))
    cv2.rectangle(image, (x, y), (x + width + 4, y + height + baseline + 4), (0, 0, 0), -1)
    cv2.putText(image, text, (x + 2, y + height + 2), font, scale, BOX, thickness, cv2.LINE_AA)


def _corner(image: np.ndarray, point: Point, size: int) -> None:
    """The first corner of a box being drawn: a cross-hair."""
    x, y = int(round(point[0])), int(round(point[1]))
    for color, thickness in (((0, 0, 0), 4), (BOX, 2)):
        cv2.line(image, (x - 2 * size, y), (x + 2 * size, y), color, thickness, cv2.LINE_AA)
        cv2.line(image, (x, y - 2 * size), (x, y + 2 * size), color, thickness, cv2.LINE_AA)


def _marker(image: np.ndarray, marker: Marker, size: int) -> None:
    """A filled disc in the marker's colour with a white ring and a white + or - sign."""
    center = (int(round(marker.x)), int(round(marker.y)))
    cv2.circle(image, center, size + 2, (255, 255, 255), -1, cv2.LINE_AA)
    cv2.circle(image, center, size, MARKER_COLORS[marker.kind], -1, cv2.LINE_AA)
    arm = max(2, size // 2)
    thickness = max(1, size // 4)
    x, y = center
    cv2.line(image, (x - arm, y), (x + arm, y), (255, 255, 255), thickness, cv2.LINE_AA)
    if marker.kind != "remove":
        cv2.line(image, (x, y - arm), (x, y + arm), (255, 255, 255), thickness, cv2.LINE_AA)
