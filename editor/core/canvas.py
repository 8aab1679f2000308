"""Extending the canvas (outpainting): the paddings asked for, the bigger canvas and its border.

An extension is four paddings in pixels, `(left, top, right, bottom)`. The original sits in the
new canvas at `(left, top)`, bit for bit; the border around it starts from the original's edge
pixels replicated outward and blurred more the farther they are from the photo, so that the
model sees the colours of the edge without the hard streaks a plain replicate draws.
Pure numpy and OpenCV.
"""
from __future__ import annotations

import re

import cv2
import numpy as np

from editor.core.errors import EditorError

Extend = tuple[int, int, int, int]  # left, top, right, bottom, in pixels
ASPECTS = ("1:1", "4:3", "3:2", "16:9", "9:16")  # offered on the page; any W:H is accepted
BLUR_REACH = 0.5  # the pre-fill is fully blurred this far out, as a share of the widest padding
_ROWS = 256  # rows blended at once
_NUMBER = r"\s*(\d+(?:\.\d+)?)\s*"


def parse_extend(text: str) -> Extend:
    """`"LEFT,TOP,RIGHT,BOTTOM"` in pixels, e.g. `"0,0,256,0"`."""
    parts = [part.strip() for part in str(text).split(",")]
    if len(parts) != 4 or not all(re.fullmatch(r"-?\d+", part) for part in parts):
        raise EditorError(f"the extension must be LEFT,TOP,RIGHT,BOTTOM in whole pixels, e.g. 0,0,256,0; got {text!r}")
    return check_extend(tuple(int(part) for part in parts))  # type: ignore[arg-type]


def check_extend(extend: tuple[int, ...]) -> Extend:
    """The four paddings, refused unless each is a non-negative whole number and one is above 0."""
    values = tuple(extend)
    if len(values) != 4 or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in values):
        raise EditorError(f"the extension must be four whole numbers of pixels (left, top, right, bottom), "
                          f"got {extend}")
    if any(v < 0 for v in values):
        raise EditorError(f"the extension cannot be negative (left, top, right, bottom), got {values}")
    if not any(values):
        raise EditorError("the extension is 0 on every side: give at least one side more than 0 pixels")
    left, top, right, bottom = (int(v) for v in values)
    return left, top, right, bottom


def parse_aspect(text: str) -> float:
    """`"W:H"` (e.g. 16:9, 2.39:1) as the ratio width / height."""
    match = re.fullmatch(f"{_NUMBER}:{_NUMBER}", str(text))
    if match is None or not float(match[1]) or not float(match[2]):
        raise EditorError(f"the aspect must be W:H with positive numbers, e.g. 16:9; got {text!r}")
    ratio = float(match[1]) / float(match[2])
    if not 1 / 100 <= ratio <= 100:
        raise EditorError(f"the aspect {text.strip()} is too extreme: at most 100:1 either way")
    return ratio


def extend_for_aspect(width: int, height: int, aspect: str) -> Extend:
    """The paddings that bring a `width` x `height` photo to `aspect` ("16:9") by growing only the
    dimension that is short for it (the width when the photo is too narrow, else the height), split
    evenly between its two sides (the odd pixel goes right or bottom), to the nearest whole pixel."""
    ratio = parse_aspect(aspect)
    if width / height < ratio:  # too narrow: grow the width
        total = round(height * ratio) - width
        extend = (total // 2, 0, total - total // 2, 0)
    else:  # too wide (or already there): grow the height
        total = round(width / ratio) - height
        extend = (0, total // 2, 0, total - total // 2)
    if not any(extend):
        raise EditorError(f"the photo ({width}x{height}) is already {aspect.strip()}: nothing to extend")
    return extend


def extended_size(width: int, height: int, extend: Extend) -> tuple[int, int]:
    left, top, right, bottom = extend
    return width + left + right, height + top + bottom


def original_box(width: int, height: int, extend: Extend) -> tuple[int, int, int, int]:
    """Where the original lies in the extended canvas: `(x0, y0, x1, y1)`, end exclusive."""
    left, top = extend[0], extend[1]
    return left, top, left + width, top + height


def border_mask(width: int, height: int, extend: Extend) -> np.ndarray:
    """`HxW uint8` on the extended canvas: 255 on the new border, 0 over the original."""
    canvas_w, canvas_h = extended_size(width, height, extend)
    mask = np.full((canvas_h, canvas_w), 255, np.uint8)
    x0, y0, x1, y1 = original_box(width, height, extend)
    mask[y0:y1, x0:x1] = 0
    return mask


def extend_canvas(image: np.ndarray, extend: Extend) -> np.ndarray:
    """The extended canvas: `image` exact at `(left, top)`, the border its edge replicated outward
    and blended into a blurred copy of itself with the distance from the photo."""
    left, top, right, bottom = check_extend(extend)
    canvas = cv2.copyMakeBorder(image, top, bottom, left, right, cv2.BORDER_REPLICATE)
    reach = max(1.0, BLUR_REACH * max(extend))
    blurred = _soft_blur(canvas, reach)
    height, width = image.shape[:2]
    box = original_box(width, height, extend)
    for start in range(0, canvas.shape[0], _ROWS):  # in bands: no float copy of a whole 50 MP canvas
        rows = slice(start, start + _ROWS)
        weight = np.minimum(_distance_to_box(canvas.shape[1], box, rows, canvas.shape[0]) / reach, 1.0)[..., None]
        mixed = canvas[rows] * (1.0 - weight) + blurred[rows] * weight
        canvas[rows] = np.clip(np.rint(mixed), 0, 255).astype(np.uint8)
    canvas[top:top + height, left:left + width] = image  # exact, whatever the float round trip did
    return canvas


def _soft_blur(image: np.ndarray, radius: float) -> np.ndarray:
    """A wide blur, cheap on a big canvas: blurred at a smaller size, then enlarged back."""
    height, width = image.shape[:2]
    shrink = max(1, int(radius // 16))
    small = cv2.resize(image, (max(1, width // shrink), max(1, height // shrink)), interpolation=cv2.INTER_AREA)
    small = cv2.GaussianBlur(small, (0, 0), sigmaX=max(0.5, radius / shrink / 2), borderType=cv2.BORDER_REPLICATE)
    return cv2.resize(small, (width, height), interpolation=cv2.INTER_LINEAR)


def _distance_to_box(width: int, box: tuple[int, int, int, int], rows: slice, height: int) -> np.ndarray:
    """The Euclidean distance of each pixel of `rows` to the box (0 inside), `hxW float32`."""
    x0, y0, x1, y1 = box
    xs, ys = np.arange(width), np.arange(height)[rows]
    dx = np.maximum(np.maximum(x0 - xs, xs - (x1 - 1)), 0).astype(np.float32)
    dy = np.maximum(np.maximum(y0 - ys, ys - (y1 - 1)), 0).astype(np.float32)
    return np.sqrt(dy[:, None] ** 2 + dx[None, :] ** 2)
