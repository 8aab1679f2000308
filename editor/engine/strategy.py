"""The crop strategy shared by every image model: where to crop, at what size the model works,
padding to the model's multiple, and pasting back so that only the band changes; and the tiling
that lets an upscaling model enlarge a photo of any size (`upscale_tiled`).

A model is a callable on the work crop: `(HxWx3 uint8, HxW uint8 hole) -> [HxWx3 uint8, ...]`
of the same size (a diffusion model may return several variations). Every pixel outside the
paste weights (`alpha > 0`) is copied from the input, bit for bit. Pure numpy and OpenCV.
"""
from __future__ import annotations

import threading
from collections.abc import Callable

import cv2
import numpy as np

from editor.core import composite, masks
from editor.core.composite import CropPlan
from editor.core.errors import EditCancelled

Model = Callable[[np.ndarray, np.ndarray], list[np.ndarray]]
SingleModel = Callable[[np.ndarray, np.ndarray], np.ndarray]
Box = tuple[int, int, int, int]  # x0, y0, x1, y1 (exclusive)
Resize = Callable[[np.ndarray, int, int], np.ndarray]  # (image, width, height) -> image of that size
Enlarge = Callable[[np.ndarray], np.ndarray]  # an upscaling model on one tile: HxW -> (H*scale)x(W*scale)
TILE_ALIGN = 4  # tiles start on multiples of this: an unshuffling model (Real-ESRGAN x2plus) groups 2x2 pixels,
# spandrel pads its input to a multiple of 4, so the groups of a tile match those of the whole photo


def erase(image: np.ndarray, hole: np.ndarray, alpha: np.ndarray, model: SingleModel, multiple: int,
          max_side: int, margin_px: int) -> np.ndarray:
    """`image` with each region of `hole` refilled by `model` on a crop of its own, pasted through `alpha`.

    The model regenerates `hole` and every pixel `alpha` may paste (a feathered edge blends the
    model's pixels, never the input's with itself). Each crop is at the photo's resolution unless
    its longer side exceeds `max_side`.
    """
    hole = masks.from_bool((hole > 0) | (alpha > 0))
    result = image
    for plan in region_plans(hole, margin_px, max_side):  # the crops never overlap: each reads the input
        patch = run(plan.crop(image), plan.crop(hole), plan.work_width, plan.work_height,
                    lambda work, work_hole: [model(work, work_hole)], multiple)[0]
        result = composite.paste_back(result, patch, plan, alpha)
    return result.copy() if result is image else result


def region_plans(hole: np.ndarray, margin_px: int, max_side: int) -> list[CropPlan]:
    """One crop per connected region of `hole` with `margin_px` of context around it, clipped to the
    photo; regions whose crops would overlap share one crop, so each region lies in exactly one."""
    height, width = hole.shape
    boxes = [_expand(box, margin_px, width, height) for box in _component_boxes(hole)]
    return [CropPlan(x0, y0, x1, y1, *work_size(x1 - x0, y1 - y0, max_side))
            for x0, y0, x1, y1 in _merged(boxes, hole.shape)]


def work_size(width: int, height: int, max_side: int) -> tuple[int, int]:
    """The crop's own size when its longer side is at most `max_side`, else scaled (aspect kept) to fit."""
    longest = max(width, height)
    if longest <= max_side:
        return width, height
    scale = max_side / longest
    return max(1, round(width * scale)), max(1, round(height * scale))


def pad_to_multiple(array: np.ndarray, multiple: int) -> np.ndarray:
    """`array` grown at the bottom and right to sides that are multiples of `multiple`, by reflection
    (a constant border would be a hard edge the model continues); the mask pads the same way."""
    height, width = array.shape[:2]
    extra_h, extra_w = -height % multiple, -width % multiple
    if not extra_h and not extra_w:
        return array
    pad = ((0, extra_h), (0, extra_w)) + ((0, 0),) * (array.ndim - 2)
    return np.pad(array, pad, mode="reflect")


def run(crop: np.ndarray, hole: np.ndarray, work_width: int, work_height: int, model: Model,
        multiple: int, resize_back: Resize = composite.resize_image) -> list[np.ndarray]:
    """The model's outputs for a crop, back at the crop's size: resized to the work size, padded to
    the model's multiple, run, the padding cut off, resized back (`resize_back`: a plain resize, or
    an upscaling model's enlargement for a new background)."""
    height, width = crop.shape[:2]
    work = composite.resize_image(crop, work_width, work_height)
    work_hole = composite.resize_mask(hole, work_width, work_height)
    outputs = model(pad_to_multiple(work, multiple), pad_to_multiple(work_hole, multiple))
    return [resize_back(out[:work_height, :work_width], width, height) for out in outputs]


# --------------------------------------------------------------------------- tiled upscaling


def tile_boxes(width: int, height: int, tile: int) -> list[Box]:
    """The cores a photo is cut into: `tile` px squares (smaller at the right and bottom), row by row,
    each starting on a multiple of TILE_ALIGN."""
    side = _aligned(tile)
    return [(x, y, min(x + side, width), min(y + side, height))
            for y in range(0, height, side) for x in range(0, width, side)]


def upscale_tiled(image: np.ndarray, model: Enlarge, scale: int, tile: int, overlap: int, factor: int | None = None,
                  progress: Callable[[int, int], None] | None = None,
                  cancel: threading.Event | None = None) -> np.ndarray:
    """`image` (`HxWx3 uint8`) enlarged `factor` times (default: the model's `scale`) by `model`, one tile at a time.

    Each tile is the core (`tile` px) with `overlap` px (both rounded up to multiples of TILE_ALIGN) of the photo around it as context; the
    model's output is cropped back to the core and placed, so that the result equals one run over
    the whole photo (within floating point) when the overlap covers the model's receptive field.
    A `factor` below `scale` (x4 model, x2 asked) shrinks each core's output by area averaging,
    which on whole blocks is the same as shrinking the whole result, without holding it at x4.
    `progress(done, total)` follows the tiles; `cancel` is checked before each (EditCancelled).
    """
    factor = scale if factor is None else factor
    if scale % factor:
        raise ValueError(f"a x{scale} model cannot give x{factor} by whole blocks")
    height, width = image.shape[:2]
    margin, boxes = overlap + (-overlap % TILE_ALIGN), tile_boxes(width, height, tile)
    out = np.empty((height * factor, width * factor, 3), np.uint8)
    for done, (x0, y0, x1, y1) in enumerate(boxes):
        if cancel is not None and cancel.is_set():
            raise EditCancelled("upscale cancelled")
        cx0, cy0 = max(0, x0 - margin), max(0, y0 - margin)
        cx1, cy1 = min(width, x1 + margin), min(height, y1 + margin)
        enlarged = model(np.ascontiguousarray(image[cy0:cy1, cx0:cx1]))
        core = enlarged[(y0 - cy0) * scale: (y1 - cy0) * scale, (x0 - cx0) * scale: (x1 - cx0) * scale]
        if factor != scale:
            core = cv2.resize(core, ((x1 - x0) * factor, (y1 - y0) * factor), interpolation=cv2.INTER_AREA)
        out[y0 * factor: y1 * factor, x0 * factor: x1 * factor] = core
        if progress is not None:
            progress(done + 1, len(boxes))
    return out


def _aligned(pixels: int) -> int:
    """A tile side: `pixels` rounded up to a multiple of TILE_ALIGN (at least one)."""
    return max(TILE_ALIGN, pixels + (-pixels % TILE_ALIGN))


def _component_boxes(hole: np.ndarray) -> list[Box]:
    count, _, stats, _ = cv2.connectedComponentsWithStats((hole > 0).astype(np.uint8), connectivity=8)
    return [(int(x), int(y), int(x + w), int(y + h)) for x, y, w, h, _ in stats[1:count]]


def _expand(box: Box, margin: int, width: int, height: int) -> Box:
    x0, y0, x1, y1 = box
    return max(0, x0 - margin), max(0, y0 - margin), min(width, x1 + margin), min(height, y1 + margin)


def _merged(boxes: list[Box], shape: tuple[int, int]) -> list[Box]:
    """Overlapping boxes joined into their bounding box until none overlap. Painted on a grid, so
    hundreds of specks cost a few image passes rather than a pairwise loop."""
    while True:
        canvas = np.zeros(shape, np.uint8)
        for x0, y0, x1, y1 in boxes:
            canvas[y0:y1, x0:x1] = 255
        joined = _component_boxes(canvas)
        if len(joined) == len(boxes):
            return sorted(joined, key=lambda box: (box[1], box[0]))
        boxes = joined


# --- outpainting: the new border, piece by piece --------------------------------------------


def border_pieces(canvas_size: tuple[int, int], inner: Box, native_size: int, overlap: int) -> list[CropPlan]:
    """Crops of at most `native_size` a side that together hold every pixel of the canvas outside
    `inner` (the original, `x0, y0, x1, y1`), in the order to generate them: nearest the original
    first, then row by row, so that each piece sees the original and the pieces before it.

    The crops lie on a grid that overlaps by at least `overlap` pixels (at most half a crop), and
    every crop holds border pixels that no earlier one holds; each works at its model size.
    """
    width, height = canvas_size
    side_w, side_h = min(native_size, width), min(native_size, height)
    boxes = [(x, y, x + side_w, y + side_h) for y in _starts(height, side_h, overlap)
             for x in _starts(width, side_w, overlap)]
    boxes.sort(key=lambda box: (_gap(box, inner), box[1], box[0]))
    covered = np.zeros((height, width), bool)
    covered[inner[1]:inner[3], inner[0]:inner[2]] = True
    plans = []
    for x0, y0, x1, y1 in boxes:
        if covered[y0:y1, x0:x1].all():
            continue
        covered[y0:y1, x0:x1] = True
        plans.append(CropPlan(x0, y0, x1, y1, *composite.model_size(x1 - x0, y1 - y0, native_size)))
    return plans


def fill_border(canvas: np.ndarray, border: np.ndarray, pieces: list[CropPlan], model: SingleModel,
                blend_px: int, multiple: int, ring_px: int = 0) -> np.ndarray:
    """`canvas` with its `border` (255) repainted by `model`, one piece after another.

    Each piece repaints the border pixels no earlier piece did, and a band of `blend_px` over the
    earlier ones through which it blends in (pieces must overlap by more than that). Pixels
    outside `border` are copied, never blended. With `ring_px`, each piece's colours are matched
    to what surrounds it (the original and the earlier pieces).
    """
    result = canvas.copy()
    done = np.zeros(border.shape, bool)
    for plan in pieces:
        crop_border = plan.crop(border) > 0
        todo = crop_border & ~plan.crop(done)
        if not todo.any():
            continue
        # Worked out on the crop: the band beyond the crop is never pasted anyway.
        alpha = composite.paste_alpha(masks.from_bool(todo), 0, blend_px, protect=masks.from_bool(~crop_border))
        hole = masks.binary(alpha > 0)
        crop = plan.crop(result)
        patch = run(crop, hole, plan.work_width, plan.work_height, lambda work, work_hole: [model(work, work_hole)],
                    multiple)[0]
        if ring_px:
            patch = composite.match_color(patch, crop, hole, ring_px)
        whole = CropPlan(0, 0, crop.shape[1], crop.shape[0], crop.shape[1], crop.shape[0])
        result[plan.y0:plan.y1, plan.x0:plan.x1] = composite.paste_back(crop, patch, whole, alpha)
        plan.crop(done)[todo] = True
    return result


def soft_seam(prefilled: np.ndarray, painted: np.ndarray, inner: Box, feather_px: int) -> np.ndarray:
    """`painted` with its border fading into `prefilled` over the `feather_px` pixels next to `inner`
    (the original): soft on the border side only, the original copied exactly. Changes `painted`.

    Only a ring around the original is worked on (farther out the border is painted's), so a big
    canvas costs no canvas-sized float arrays.
    """
    height, width = painted.shape[:2]
    x0, y0, x1, y1 = inner
    reach = 2 * feather_px + 2  # the fade's width, and the shrunk border's edge it is measured from
    ring = CropPlan(max(0, x0 - reach), max(0, y0 - reach), min(width, x1 + reach), min(height, y1 + reach), 0, 0)
    rw, rh = ring.size
    border = np.full((rh, rw), 255, np.uint8)
    border[y0 - ring.y0:y1 - ring.y0, x0 - ring.x0:x1 - ring.x0] = 0
    # Shrunk, then feathered back out: 255 deep in the border, fading to the original's edge, 0 over it.
    alpha = composite.paste_alpha(border, -feather_px, feather_px, protect=masks.invert(border))
    whole = CropPlan(0, 0, rw, rh, rw, rh)
    painted[ring.y0:ring.y1, ring.x0:ring.x1] = composite.paste_back(ring.crop(prefilled), ring.crop(painted), whole,
                                                                     alpha)
    return painted


def _starts(length: int, side: int, overlap: int) -> list[int]:
    """Evenly spaced starts of crops of `side` along `length`, neighbours overlapping by `overlap` or more."""
    if side >= length:
        return [0]
    overlap = min(overlap, side // 2)
    count = -(-(length - overlap) // (side - overlap))
    return [round(i * (length - side) / (count - 1)) for i in range(count)]


def _gap(box: Box, inner: Box) -> float:
    """How far `box` lies from `inner` (0 when they touch or overlap)."""
    dx = max(0, inner[0] - box[2], box[0] - inner[2])
    dy = max(0, inner[1] - box[3], box[1] - inner[3])
    return float(np.hypot(dx, dy))
