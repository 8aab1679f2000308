"""The crop strategy: one crop per region, the photo's own resolution up to a limit, padding to the
model's multiple, and nothing outside the band changed, whatever the size, aspect and mask."""
from __future__ import annotations

import numpy as np
import pytest

from editor.core import composite, masks
from editor.engine import strategy
from tests.test_composite import blob_mask, random_photo


class NoiseModel:
    """Repaints the whole work image (hole or not) with noise: the worst a model can do. Records
    every call and checks the strategy's side of the contract: sizes are multiples of `multiple`."""

    def __init__(self, multiple: int, seed: int = 0) -> None:
        self.multiple = multiple
        self.calls: list[tuple[int, int]] = []  # (width, height) of each work image
        self._rng = np.random.default_rng(seed)

    def __call__(self, image: np.ndarray, hole: np.ndarray) -> np.ndarray:
        height, width = image.shape[:2]
        assert hole.shape == (height, width) and image.dtype == np.uint8 and image.shape[2] == 3
        assert height % self.multiple == 0 and width % self.multiple == 0
        assert set(np.unique(hole)) <= {0, 255}
        self.calls.append((width, height))
        return self._rng.integers(0, 256, image.shape, dtype=np.uint8)


def disc(height: int, width: int, cx: int, cy: int, r: int) -> np.ndarray:
    yy, xx = np.ogrid[0:height, 0:width]
    return masks.from_bool((xx - cx) ** 2 + (yy - cy) ** 2 < r * r)


def erase(image: np.ndarray, mask: np.ndarray, model: NoiseModel, max_side: int = 256, margin: int = 16,
          grow: int = 3, feather: int = 4) -> tuple[np.ndarray, np.ndarray]:
    alpha = composite.paste_alpha(mask, grow, feather)
    return strategy.erase(image, mask, alpha, model, model.multiple, max_side, margin), alpha


@pytest.mark.parametrize("seed", range(40))
def test_any_size_aspect_and_mask_changes_nothing_outside_the_band(seed: int) -> None:
    rng = np.random.default_rng(seed)
    height, width = (int(v) for v in rng.integers(1, 400, 2))
    if seed % 5 == 0:  # extreme aspect ratios
        height, width = (1, int(rng.integers(50, 900))) if seed % 10 else (int(rng.integers(50, 900)), 2)
    image = random_photo(rng, height, width)
    mask = blob_mask(rng, height, width, max_radius=max(2.0, min(height, width) / 3))
    model = NoiseModel(multiple=int(rng.choice([1, 8, 16])), seed=seed)
    max_side = int(rng.integers(16, 300))
    before = image.copy()
    out, alpha = erase(image, mask, model, max_side=max_side, margin=int(rng.integers(0, 40)),
                       grow=int(rng.integers(0, 6)), feather=int(rng.integers(0, 6)))
    band = alpha > 0
    assert out.shape == image.shape and out.dtype == np.uint8
    assert np.array_equal(out[~band], image[~band]), "a pixel outside the band changed"
    assert np.array_equal(image, before), "the input was written to"
    assert model.calls and all(max(w, h) <= max_side + model.multiple - 1 for w, h in model.calls)


def test_each_separate_region_gets_its_own_crop_at_the_photos_resolution() -> None:
    image = random_photo(np.random.default_rng(1), 300, 500)
    mask = masks.union(disc(300, 500, 60, 60, 20), disc(300, 500, 420, 220, 25))
    model = NoiseModel(multiple=8)
    out, alpha = erase(image, mask, model, max_side=512, margin=16)
    plans = strategy.region_plans(masks.binary(alpha > 0), 16, 512)
    assert len(plans) == 2 and len(model.calls) == 2
    for plan, (width, height) in zip(plans, model.calls):
        assert (plan.work_width, plan.work_height) == plan.size, "a small crop is not resized"
        assert width == -(-plan.size[0] // 8) * 8 and height == -(-plan.size[1] // 8) * 8, "padded to the multiple"
        assert plan.size[0] < 120 and plan.size[1] < 120, "the crop is around its region, not the photo"
    assert not np.array_equal(out, image)


def test_regions_whose_margins_overlap_share_one_crop() -> None:
    mask = masks.union(disc(200, 300, 100, 100, 10), disc(200, 300, 140, 100, 10))
    assert len(strategy.region_plans(mask, 30, 512)) == 1
    assert len(strategy.region_plans(mask, 5, 512)) == 2


def test_merged_crops_never_overlap_and_hold_every_region() -> None:
    rng = np.random.default_rng(7)
    mask = masks.from_bool(rng.random((240, 320)) > 0.995)  # a few hundred specks
    plans = strategy.region_plans(mask, 12, 4096)
    covered = np.zeros(mask.shape, np.int32)
    for plan in plans:
        covered[plan.y0:plan.y1, plan.x0:plan.x1] += 1
    assert covered.max() == 1, "two crops overlap"
    assert covered[mask > 0].min() == 1, "a selected pixel lies in no crop"


def test_a_crop_above_max_side_is_resized_down_for_the_model_and_back() -> None:
    image = random_photo(np.random.default_rng(2), 120, 1000)
    mask = np.zeros((120, 1000), np.uint8)
    mask[50:70, 100:900] = 255  # a wide stroke: its crop is about 850 px long
    model = NoiseModel(multiple=8)
    out, alpha = erase(image, mask, model, max_side=200, margin=20)
    (width, height), = model.calls
    assert width == 200 and height % 8 == 0 and height < 60
    band = alpha > 0
    assert np.array_equal(out[~band], image[~band])
    assert (out[mask > 0] != image[mask > 0]).any()


@pytest.mark.parametrize("width, height, max_side, expected", [
    (300, 200, 1024, (300, 200)),
    (1024, 10, 1024, (1024, 10)),
    (2048, 1000, 1024, (1024, 500)),
    (5000, 3, 1000, (1000, 1)),
])
def test_work_size(width: int, height: int, max_side: int, expected: tuple[int, int]) -> None:
    assert strategy.work_size(width, height, max_side) == expected


@pytest.mark.parametrize("shape, multiple", [((1, 1, 3), 8), ((5, 9), 8), ((16, 24, 3), 8), ((3, 7), 1)])
def test_padding_reaches_the_multiple_by_reflection_and_keeps_the_original_corner(shape: tuple[int, ...],
                                                                                   multiple: int) -> None:
    array = np.random.default_rng(3).integers(0, 256, shape, dtype=np.uint8)
    padded = strategy.pad_to_multiple(array, multiple)
    assert padded.shape[0] % multiple == 0 and padded.shape[1] % multiple == 0
    assert padded.shape[0] < shape[0] + multiple and padded.shape[1] < shape[1] + multiple
    assert np.array_equal(padded[: shape[0], : shape[1]], array)
    if shape[1] > 1 and padded.shape[1] > shape[1]:
        assert np.array_equal(padded[: shape[0], shape[1]], array[:, shape[1] - 2]), "reflected, not repeated"
