"""Mask operations on `HxW uint8` masks (255 = selected). Pure numpy and OpenCV."""
from __future__ import annotations

import math
from collections.abc import Sequence

import cv2
import numpy as np

from editor.core.errors import SelectionError

LINE_SHIFT = 4  # OpenCV's fixed-point bits: a stroke's centre line lands to 1/16 pixel


def binary(mask: np.ndarray) -> np.ndarray:
    """A bool mask, or a soft 0..255 one cut at half, as a strict 0/255 uint8 mask."""
    mask = np.asarray(mask)
    return from_bool(mask if mask.dtype == bool else mask > 127)


def from_bool(selected: np.ndarray) -> np.ndarray:
    """True as 255, False as 0, in one uint8 pass (np.where with ints makes an int64 copy first)."""
    return np.multiply(selected, 255, dtype=np.uint8)


def is_empty(mask: np.ndarray) -> bool:
    return not np.any(mask)


def require_selection(mask: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """The mask as 0/255, checked against the image's `(H, W)`; refuse an empty one."""
    if mask.ndim != 2 or mask.shape != shape:
        raise SelectionError(
            f"the mask is {_size(mask.shape)} but the image is {_size(shape)}"
        )
    mask = binary(mask)
    if is_empty(mask):
        raise SelectionError("the selection is empty: click the object you mean first")
    return mask


def invert(mask: np.ndarray) -> np.ndarray:
    return from_bool(mask == 0)


def union(*masks: np.ndarray) -> np.ndarray:
    return from_bool(np.logical_or.reduce([m > 0 for m in masks]))


def subtract(mask: np.ndarray, other: np.ndarray) -> np.ndarray:
    return from_bool((mask > 0) & (other == 0))


def intersect(mask: np.ndarray, other: np.ndarray) -> np.ndarray:
    return from_bool((mask > 0) & (other > 0))


def grow(mask: np.ndarray, pixels: int) -> np.ndarray:
    """Every pixel within `pixels` (Euclidean) of the mask; negative values shrink."""
    if pixels == 0:
        return binary(mask)
    if pixels < 0:
        return shrink(mask, -pixels)
    near = _distance_near(mask, pixels)
    if near is None:
        return binary(mask)
    distance, window = near
    grown = np.zeros(mask.shape, np.uint8)
    grown[window] = from_bool(distance <= pixels)
    return grown


def shrink(mask: np.ndarray, pixels: int) -> np.ndarray:
    """Pixels of the mask at least `pixels` + 1 away from everything outside it."""
    if pixels <= 0:
        return grow(mask, -pixels)
    return invert(grow(invert(mask), pixels))


def feather(mask: np.ndarray, pixels: int) -> np.ndarray:
    """A soft edge: 255 inside, falling linearly to 0 over `pixels` outside the mask.

    The ramp is bounded: nothing farther than `pixels` from the mask is touched, so the
    region a feathered paste can change is exactly `grow(mask, pixels)`.
    """
    if pixels <= 0:
        return binary(mask)
    near = _distance_near(mask, pixels)
    if near is None:
        return binary(mask)
    distance, window = near
    ramp = np.where(distance <= pixels, 1.0 - distance / (pixels + 1), 0.0)
    feathered = np.zeros(mask.shape, np.uint8)
    feathered[window] = np.rint(ramp * 255).astype(np.uint8)
    return feathered


def _distance_near(mask: np.ndarray, reach: int) -> tuple[np.ndarray, tuple[slice, slice]] | None:
    """The Euclidean distance to the mask over the window holding every pixel within `reach`
    of it, and that window; None for an empty mask.

    Every mask pixel lies in the window, so the distances are exactly the full image's, while a
    small selection in a large photo costs a small window, not the whole photo.
    """
    box = bounding_box(mask)
    if box is None:
        return None
    height, width = mask.shape
    x0, y0, x1, y1 = box
    pad = reach + 1
    window = (slice(max(0, y0 - pad), min(height, y1 + pad)), slice(max(0, x0 - pad), min(width, x1 + pad)))
    outside = from_bool(mask[window] == 0)
    return cv2.distanceTransform(outside, cv2.DIST_L2, cv2.DIST_MASK_PRECISE), window


def stroke(shape: tuple[int, int], points: Sequence[tuple[float, float]], radius: float) -> np.ndarray:
    """A brush stroke at full resolution: every pixel within `radius` of the line through `points`
    ((x, y) in pixel coordinates, sub-pixel), round at its ends and corners as a brush paints."""
    height, width = shape
    xy = np.asarray(points, float).reshape(-1, 2)
    xy = np.clip(xy, 0, [width - 1, height - 1])
    line = np.zeros(shape, np.uint8)
    fixed = np.round(xy * (1 << LINE_SHIFT)).astype(np.int32).reshape(-1, 1, 2)
    cv2.polylines(line, [fixed], isClosed=False, color=255, thickness=1, lineType=cv2.LINE_8, shift=LINE_SHIFT)
    ends = np.round(xy).astype(int)
    line[ends[:, 1], ends[:, 0]] = 255  # a dab (one point) draws no line
    near = _distance_near(line, math.ceil(radius))
    painted = np.zeros(shape, np.uint8)
    if near is not None:
        distance, window = near
        painted[window] = from_bool(distance <= radius)
    return painted


def fill_holes(mask: np.ndarray, max_area: int | None = None) -> np.ndarray:
    """Fill enclosed gaps (not reachable from the border); only those up to `max_area` when given."""
    count, labels, stats, _ = cv2.connectedComponentsWithStats((mask == 0).astype(np.uint8), connectivity=4)
    height, width = mask.shape
    x, y, w, h, area = (stats[:, i] for i in range(5))
    enclosed = (x > 0) & (y > 0) & (x + w < width) & (y + h < height)
    if max_area is not None:
        enclosed &= area <= max_area
    enclosed[0] = False  # label 0 is the selection itself
    return from_bool((mask > 0) | enclosed[labels])


def remove_specks(mask: np.ndarray, min_area: int) -> np.ndarray:
    """Drop separate pieces of the selection smaller than `min_area` pixels."""
    count, labels, stats, _ = cv2.connectedComponentsWithStats((mask > 0).astype(np.uint8), connectivity=8)
    keep = np.zeros(count, dtype=bool)
    keep[1:] = stats[1:, cv2.CC_STAT_AREA] >= min_area
    return from_bool(keep[labels])


def bounding_box(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    """(x0, y0, x1, y1) with x1, y1 exclusive, or None for an empty mask."""
    rows = np.flatnonzero(np.any(mask > 0, axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(np.any(mask > 0, axis=0))
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


def refine(mask: np.ndarray, grow_px: int = 0, feather_px: int = 0) -> np.ndarray:
    """The selection a person adjusted with the grow and feather sliders."""
    return feather(grow(mask, grow_px), feather_px)


def _size(shape: tuple[int, ...]) -> str:
    return f"{shape[1]}x{shape[0]}" if len(shape) >= 2 else str(shape)
