"""Full-resolution compositing: crop around the edit, resize for the model, paste back exactly.

The model never sees the whole photo for a small edit, and every pixel outside the pasted
band (the mask grown, then feathered) is copied from the input bit for bit.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from editor.core import masks

MIN_MODEL_SIDE = 64  # the short side given to the model, for extreme aspect ratios


@dataclass(frozen=True)
class CropPlan:
    """A region of the photo, `[y0:y1, x0:x1]`, and the size the model works at."""

    x0: int
    y0: int
    x1: int
    y1: int
    work_width: int
    work_height: int

    @property
    def size(self) -> tuple[int, int]:
        return self.x1 - self.x0, self.y1 - self.y0

    def crop(self, array: np.ndarray) -> np.ndarray:
        return array[self.y0 : self.y1, self.x0 : self.x1]


def plan_crop(
    band: np.ndarray, native_size: int, context: float, min_context_px: int
) -> CropPlan:
    """The region around `band` (the pixels the edit may change), with context on every side.

    The model's working size keeps the crop's aspect, puts its long side at `native_size`,
    and rounds both sides to multiples of 8, as the Stable Diffusion VAE needs.
    """
    box = masks.bounding_box(band)
    if box is None:
        raise ValueError("plan_crop needs a non-empty band")
    height, width = band.shape
    x0, y0, x1, y1 = box
    pad_x = max(int(round((x1 - x0) * context)), min_context_px)
    pad_y = max(int(round((y1 - y0) * context)), min_context_px)
    x0, x1 = max(0, x0 - pad_x), min(width, x1 + pad_x)
    y0, y1 = max(0, y0 - pad_y), min(height, y1 + pad_y)
    work_w, work_h = model_size(x1 - x0, y1 - y0, native_size)
    return CropPlan(x0, y0, x1, y1, work_w, work_h)


def model_size(width: int, height: int, native_size: int) -> tuple[int, int]:
    """Aspect-kept size with the long side at `native_size`, both sides multiples of 8."""
    scale = native_size / max(width, height)
    def side(n: int) -> int:
        return max(MIN_MODEL_SIDE, min(native_size, int(round(n * scale / 8)) * 8))
    return side(width), side(height)


def resize_image(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """Area averaging when shrinking (no aliasing), Lanczos when enlarging."""
    if image.shape[1] == width and image.shape[0] == height:
        return image.copy()
    shrinking = width * height < image.shape[0] * image.shape[1]
    return cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LANCZOS4)


def resize_mask(mask: np.ndarray, width: int, height: int) -> np.ndarray:
    """Resize a mask without losing thin parts: any coverage counts as selected."""
    if mask.shape[1] == width and mask.shape[0] == height:
        return masks.binary(mask)
    resized = cv2.resize(mask, (width, height), interpolation=cv2.INTER_AREA)
    return np.where(resized > 0, 255, 0).astype(np.uint8)


def paste_alpha(mask: np.ndarray, grow_px: int, feather_px: int, protect: np.ndarray | None = None) -> np.ndarray:
    """The blend weights for pasting back: the mask grown then feathered, zero where protected."""
    alpha = masks.feather(masks.grow(mask, grow_px), feather_px)
    if protect is not None:
        alpha = np.where(protect > 0, 0, alpha).astype(np.uint8)
    return alpha


def cutout(image: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """The photo (`HxWx3 uint8`) with `alpha` (`HxW uint8`, e.g. `paste_alpha` of the selection) as
    its transparency: `HxWx4 uint8` RGBA. The colours are the photo's everywhere, under transparent
    pixels too, so nothing is lost."""
    if image.ndim != 3 or image.shape[2] != 3 or alpha.shape != image.shape[:2]:
        raise ValueError(f"cutout needs an HxWx3 image and an HxW alpha, got {image.shape} and {alpha.shape}")
    return np.dstack([image, alpha]).astype(np.uint8, copy=False)


def paste_back(original: np.ndarray, patch: np.ndarray, plan: CropPlan, alpha: np.ndarray) -> np.ndarray:
    """A copy of `original` with `patch` (crop-sized) blended in through `alpha` (full-size).

    Where alpha is 0 the original is copied, not recomputed, so those pixels stay exact.
    """
    result = original.copy()
    region = plan.crop(result)
    weight = plan.crop(alpha)
    changed = weight > 0
    a = weight[changed].astype(np.float32)[:, None] / 255.0
    blended = patch[changed].astype(np.float32) * a + region[changed].astype(np.float32) * (1.0 - a)
    region[changed] = np.clip(np.rint(blended), 0, 255).astype(np.uint8)
    return result


def match_color(patch: np.ndarray, original: np.ndarray, edit_mask: np.ndarray, ring_px: int) -> np.ndarray:
    """Shift the patch's colours so a ring around the edit matches the original there.

    The model's output often drifts in brightness or tint (the VAE round trip alone shifts
    it); a per-channel mean and spread correction measured on the untouched ring removes
    the visible seam. All arrays are crop-sized; `edit_mask` marks what the model changed.
    """
    ring = (masks.grow(edit_mask, ring_px) > 0) & ~(edit_mask > 0)
    if ring.sum() < 16:
        return patch
    source = patch[ring].astype(np.float32)
    target = original[ring].astype(np.float32)
    src_mean, src_std = source.mean(axis=0), source.std(axis=0) + 1e-3
    dst_mean, dst_std = target.mean(axis=0), target.std(axis=0) + 1e-3
    gain = np.clip(dst_std / src_std, 0.5, 2.0)
    corrected = (patch.astype(np.float32) - src_mean) * gain + dst_mean
    return np.clip(np.rint(corrected), 0, 255).astype(np.uint8)
