"""Classical fallbacks that need no model weights: GrabCut selection, OpenCV inpainting, a Lanczos resize."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np

from editor.core import composite, masks
from editor.core.errors import ConfigError
from editor.core.prompts import Prompts
from editor.models.base import LANCZOS_NAME, ImageExpired, ImageRef, Segmentation
from editor.models.embedding_cache import ImageKeys, RecentImages

if TYPE_CHECKING:
    from editor.models.registry import LoadContext, ModelEntry

GRABCUT_SIDE = 640  # GrabCut runs on a copy this size at most; its mask is scaled back
GRABCUT_ITERATIONS = 5
GRABCUT_SEED = 0  # GrabCut's GMM start is random (OpenCV's per-thread RNG): seed it, same prompts give the same mask
POINT_RADIUS_FRACTION = 0.01  # a click marks a small disc as certain, not a single pixel
INPAINT_MAX_PIXELS = 1_000_000  # larger holes are filled on a smaller copy (Telea is slow)
TELEA_MAX_SIDE = 4096  # the crop strategy resizes a larger crop; Telea shrinks big holes itself


def grabcut(image: np.ndarray, prompts: Prompts) -> np.ndarray:
    """Select the object the prompts point at; returns an `HxW uint8` mask (255 = selected).

    A box bounds the object; without one, a box around the positive points with a generous
    margin does. Positive clicks are certain foreground, negative clicks certain background.
    Only the pieces connected to a positive click (or inside the box) are kept.
    """
    height, width = image.shape[:2]
    scale = min(1.0, GRABCUT_SIDE / max(height, width))
    small = cv2.resize(image, (max(1, round(width * scale)), max(1, round(height * scale))), interpolation=cv2.INTER_AREA) if scale < 1 else image
    sh, sw = small.shape[:2]
    trimap = _trimap(prompts, sw, sh, scale)
    if (trimap == cv2.GC_FGD).any() or (trimap == cv2.GC_PR_FGD).any():
        if min(sh, sw) >= 2 and (trimap != cv2.GC_BGD).sum() < trimap.size:
            bgd, fgd = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
            cv2.setRNGSeed(GRABCUT_SEED)
            cv2.grabCut(cv2.cvtColor(small, cv2.COLOR_RGB2BGR), trimap, None, bgd, fgd, GRABCUT_ITERATIONS, cv2.GC_INIT_WITH_MASK)
    selected = np.where((trimap == cv2.GC_FGD) | (trimap == cv2.GC_PR_FGD), 255, 0).astype(np.uint8)
    selected = _keep_prompted_pieces(selected, prompts, scale)
    if scale < 1:
        selected = cv2.resize(selected, (width, height), interpolation=cv2.INTER_LINEAR)
    return masks.binary(selected)


def _trimap(prompts: Prompts, width: int, height: int, scale: float) -> np.ndarray:
    trimap = np.full((height, width), cv2.GC_BGD, np.uint8)
    x0, y0, x1, y1 = _object_region(prompts, width, height, scale)
    trimap[y0:y1, x0:x1] = cv2.GC_PR_FGD
    radius = max(1, int(round(max(width, height) * POINT_RADIUS_FRACTION)))
    for (x, y), label in zip(prompts.points, prompts.labels):
        value = cv2.GC_FGD if label == 1 else cv2.GC_BGD
        cv2.circle(trimap, (int(x * scale), int(y * scale)), radius, int(value), -1)
    return trimap


def _object_region(prompts: Prompts, width: int, height: int, scale: float) -> tuple[int, int, int, int]:
    if prompts.box is not None:
        bx0, by0, bx1, by1 = (v * scale for v in prompts.box)
    else:
        xs = [x * scale for (x, _), label in zip(prompts.points, prompts.labels) if label == 1]
        ys = [y * scale for (_, y), label in zip(prompts.points, prompts.labels) if label == 1]
        margin = 0.25 * max(width, height)
        bx0, by0, bx1, by1 = min(xs) - margin, min(ys) - margin, max(xs) + margin, max(ys) + margin
    return (max(0, int(bx0)), max(0, int(by0)), min(width, int(np.ceil(bx1))), min(height, int(np.ceil(by1))))


def _keep_prompted_pieces(selected: np.ndarray, prompts: Prompts, scale: float) -> np.ndarray:
    count, labels = cv2.connectedComponents((selected > 0).astype(np.uint8), connectivity=8)
    if count <= 2:
        return selected
    keep = np.zeros(count, dtype=bool)
    for (x, y), label in zip(prompts.points, prompts.labels):
        if label == 1:
            keep[labels[min(int(y * scale), labels.shape[0] - 1), min(int(x * scale), labels.shape[1] - 1)]] = True
    if prompts.box is not None and not keep[1:].any():
        keep[:] = True
    keep[0] = False
    return np.where(keep[labels], 255, 0).astype(np.uint8)


class GrabCutSegmenter:
    """Selection without weights: OpenCV's GrabCut from the same prompts as SAM.

    GrabCut has no per-image precomputation: `prepare` only names the image and keeps a weak
    reference to it, which `segment` selects on. Also the fallback of a model that failed to load.
    """

    description = "grabcut (no SAM checkpoint)"
    load_error = None  # nothing to load, nothing to fail

    def __init__(self) -> None:
        self._keys = ImageKeys()
        self._images = RecentImages()

    def load(self) -> None:
        pass  # nothing to load

    def prepare(self, image: np.ndarray) -> ImageRef:
        key = self._keys(image)
        self._images.put(key, image)
        return ImageRef(key, image.shape[1], image.shape[0])

    def segment(self, ref: ImageRef, prompts: Prompts, previous: np.ndarray | None = None) -> Segmentation:
        """GrabCut's mask for the validated prompts (it has no logits to refine: `previous` is unused)."""
        image = self._images.get(ref.key)
        if image is None:
            raise ImageExpired("the photo is no longer held for selection: prepare it again")
        return Segmentation(grabcut(image, prompts))


def inpaint(image: np.ndarray, mask: np.ndarray, radius: int = 5) -> np.ndarray:
    """Fill the masked pixels from their surroundings (Telea); pixels outside stay exact.

    Large images are filled on a smaller copy; the fill is smooth, so scaling it up
    loses nothing, and only the masked pixels take it.
    """
    height, width = mask.shape
    hole = masks.binary(mask)
    if not hole.any():
        return image.copy()
    scale = min(1.0, (INPAINT_MAX_PIXELS / (height * width)) ** 0.5)
    if scale < 1:
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        small_image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
        small_hole = cv2.resize(hole, size, interpolation=cv2.INTER_AREA)
        small_hole = np.where(small_hole > 0, 255, 0).astype(np.uint8)
        filled = cv2.resize(_telea(small_image, small_hole, radius), (width, height), interpolation=cv2.INTER_LINEAR)
    else:
        filled = _telea(image, hole, radius)
    return np.where(hole[:, :, None] > 0, filled, image)


def _telea(image: np.ndarray, hole: np.ndarray, radius: int) -> np.ndarray:
    bgr = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    return cv2.cvtColor(cv2.inpaint(bgr, hole, radius, cv2.INPAINT_TELEA), cv2.COLOR_BGR2RGB)


class OpenCvEraser:
    """The `Eraser` without weights: Telea's fill from the hole's border. Always available, so it is
    the engine's last fallback and the classical pre-fill of generative erase."""

    description = "opencv-telea"
    model_name = "opencv-telea"
    load_error: str | None = None
    multiple = 1
    max_side = TELEA_MAX_SIDE

    def load(self) -> None:
        """Nothing to load."""

    def erase(self, image: np.ndarray, mask: np.ndarray) -> np.ndarray:
        return inpaint(image, mask)


class LanczosUpscaler:
    """The `Upscaler` without weights: OpenCV's Lanczos resize. It invents no detail; it is announced as a
    plain resize wherever it runs (the engine falls back to the same resize without an upscaling model)."""

    description = "lanczos: a plain resize, no upscaling model"
    model_name = LANCZOS_NAME
    load_error: str | None = None
    tile = 4096  # a resize needs no tiles; this only bounds what one call is given

    def __init__(self, scale: int = 4) -> None:
        self.scale = scale

    def load(self) -> None:
        """Nothing to load."""

    def upscale(self, image: np.ndarray) -> np.ndarray:
        height, width = image.shape[:2]
        return composite.resize_image(image, width * self.scale, height * self.scale)


def load(entry: ModelEntry, path: Path | None, context: LoadContext) -> Any:
    """The built-in models of the registry: OpenCV Telea (eraser), GrabCut (segmenter), Lanczos (upscaler)."""
    if entry.kind == "upscaler":
        return LanczosUpscaler()
    if entry.kind == "eraser":
        return OpenCvEraser()
    if entry.kind == "segmenter":
        segmenter = GrabCutSegmenter()
        segmenter.description = context.description or segmenter.description
        return segmenter
    raise ConfigError(f"{entry.name} ({entry.kind}) is not an OpenCV model")
