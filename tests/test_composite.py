"""Compositing: crop around the edit, work at the model's size, paste back leaving the rest exact.

The end-to-end tests run the engine's real edit path with the tiny random SD2 pipeline.
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from editor.core import composite
from editor.core import masks
from editor.engine.ops import EditOptions, Engine

FAST = EditOptions(seed=3, steps=2)


def blob_mask(rng: np.random.Generator, height: int, width: int, max_radius: float) -> np.ndarray:
    """One to three random discs (never empty)."""
    yy, xx = np.ogrid[0:height, 0:width]
    mask = np.zeros((height, width), bool)
    for _ in range(rng.integers(1, 4)):
        cy, cx = rng.uniform(0, height), rng.uniform(0, width)
        r = rng.uniform(0.6, max_radius)
        mask |= (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
    if not mask.any():
        mask[int(rng.integers(0, height)), int(rng.integers(0, width))] = True
    return np.where(mask, 255, 0).astype(np.uint8)


def random_photo(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    return rng.integers(0, 256, (height, width, 3), dtype=np.uint8)


def assert_edit_is_local(image: np.ndarray, mask: np.ndarray, result: np.ndarray, reach: int) -> None:
    """Same shape; every pixel farther than `reach` from the mask bit-identical; the mask changed."""
    assert result.shape == image.shape and result.dtype == np.uint8
    band = masks.grow(mask, reach) > 0
    assert np.array_equal(result[~band], image[~band])
    inside = mask > 0
    assert (result[inside] != image[inside]).any(), "nothing inside the selection changed"


def with_composite(engine: Engine, **changes: object) -> Engine:
    """The same models behind different compositing settings."""
    return Engine(engine.segmenter, engine.inpainter, engine.backends, engine.defaults,
                  replace(engine.composite, **changes), engine.erase_config, prefill=engine.prefill)


# --- the full edit path on odd sizes -------------------------------------------------------------


@pytest.mark.parametrize("height, width, max_radius, seed", [
    (333, 1000, 60, 0),
    (1000, 333, 40, 1),
    (7, 7, 3, 2),
    (3000, 4000, 25, 3),
])
def test_fill_leaves_everything_outside_the_band_exact(sam_sd2_engine: Engine, height: int, width: int,
                                                        max_radius: float, seed: int) -> None:
    rng = np.random.default_rng(seed)
    image = random_photo(rng, height, width)
    mask = blob_mask(rng, height, width, max_radius)
    before_image, before_mask = image.copy(), mask.copy()
    result = sam_sd2_engine.fill(image, mask, "a red apple", FAST)
    reach = sam_sd2_engine.composite.grow + sam_sd2_engine.composite.feather
    assert len(result.images) == 1
    assert_edit_is_local(image, mask, result.images[0], reach)
    assert np.array_equal(image, before_image) and np.array_equal(mask, before_mask)  # inputs untouched


def test_fill_with_speckled_mask_on_tiny_image(sam_sd2_engine: Engine) -> None:
    rng = np.random.default_rng(11)
    image = random_photo(rng, 7, 7)
    mask = np.where(rng.random((7, 7)) < 0.2, 255, 0).astype(np.uint8)
    mask[3, 3] = 255
    result = sam_sd2_engine.fill(image, mask, "moss", FAST)
    assert_edit_is_local(image, mask, result.images[0], 16)


@pytest.mark.parametrize("grow, feather", [(0, 0), (3, 0), (0, 5), (2, 11)])
def test_band_follows_the_configured_grow_and_feather(sam_sd2_engine: Engine, grow: int, feather: int) -> None:
    engine = with_composite(sam_sd2_engine, grow=grow, feather=feather)
    rng = np.random.default_rng(grow * 10 + feather)
    image = random_photo(rng, 120, 170)
    mask = blob_mask(rng, 120, 170, 20)
    result = engine.fill(image, mask, "stones", FAST).images[0]
    assert_edit_is_local(image, mask, result, grow + feather)


def test_model_sees_a_crop_at_its_native_size_not_the_whole_photo(sam_sd2_engine: Engine,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    received: list[np.ndarray] = []
    plans: list[composite.CropPlan] = []
    inner = sam_sd2_engine.inpainter

    class Spy:
        description, model_name, native_size = inner.description, inner.model_name, inner.native_size

        def inpaint(self, image, mask, request, progress=None, cancel=None):  # type: ignore[no-untyped-def]
            received.append(image.copy())
            return inner.inpaint(image, mask, request, progress, cancel)

    real_plan = composite.plan_crop

    def recording_plan(*args, **kwargs):  # type: ignore[no-untyped-def]
        plans.append(real_plan(*args, **kwargs))
        return plans[-1]

    monkeypatch.setattr(composite, "plan_crop", recording_plan)
    engine = Engine(sam_sd2_engine.segmenter, Spy(), sam_sd2_engine.backends, sam_sd2_engine.defaults,
                    sam_sd2_engine.composite, sam_sd2_engine.erase_config, prefill=sam_sd2_engine.prefill)
    rng = np.random.default_rng(5)
    photo = random_photo(rng, 3000, 4000)
    mask = np.zeros((3000, 4000), np.uint8)
    mask[1200:1260, 2500:2540] = 255  # 40x60 pixels
    result = engine.fill(photo, mask, "a window", FAST)

    assert len(received) == 1 and len(plans) == 1
    work, plan = received[0], plans[0]
    assert max(work.shape[:2]) == inner.native_size
    assert work.shape[0] % 8 == 0 and work.shape[1] % 8 == 0
    crop_w, crop_h = plan.size
    assert crop_w * crop_h < photo.shape[0] * photo.shape[1] / 200  # a small region around the edit
    assert plan.x0 <= 2500 - 16 and plan.x1 >= 2540 + 16 and plan.y0 <= 1200 - 16 and plan.y1 >= 1260 + 16
    # What the model got is that crop of the photo, resized, with the crop's aspect.
    expected = composite.resize_image(plan.crop(photo), work.shape[1], work.shape[0])
    assert np.array_equal(work, expected)
    assert abs(work.shape[1] / work.shape[0] - crop_w / crop_h) < 0.1
    assert_edit_is_local(photo, mask, result.images[0], 16)


# --- background replacement ----------------------------------------------------------------------


def test_replace_background_keeps_every_subject_pixel(sam_sd2_engine: Engine, photo: np.ndarray) -> None:
    yy, xx = np.mgrid[0:photo.shape[0], 0:photo.shape[1]]
    subject = np.where((xx - 160) ** 2 + (yy - 120) ** 2 < 50**2, 255, 0).astype(np.uint8)
    before_photo, before_subject = photo.copy(), subject.copy()
    result = sam_sd2_engine.replace_background(photo, subject, "a beach at sunset", FAST)
    out = result.images[0]
    inside = subject > 0
    assert out.shape == photo.shape
    assert np.array_equal(out[inside], photo[inside])
    assert (out[~inside] != photo[~inside]).mean() > 0.5  # most of the background is new
    assert np.array_equal(result.mask, masks.invert(subject))
    assert np.array_equal(photo, before_photo) and np.array_equal(subject, before_subject)


def test_replace_background_on_odd_size_with_random_subject(sam_sd2_engine: Engine) -> None:
    rng = np.random.default_rng(21)
    image = random_photo(rng, 211, 97)
    subject = blob_mask(rng, 211, 97, 30)
    out = sam_sd2_engine.replace_background(image, subject, "fog", FAST).images[0]
    assert np.array_equal(out[subject > 0], image[subject > 0])
    assert (out[subject == 0] != image[subject == 0]).any()


# --- pure pieces ---------------------------------------------------------------------------------


def test_model_size_is_multiples_of_8_with_the_aspect_kept() -> None:
    rng = np.random.default_rng(0)
    sizes = [(1, 1), (7, 7), (1000, 333), (333, 1000), (4000, 3000), (10000, 10), (512, 512), (513, 511)]
    sizes += [(int(w), int(h)) for w, h in rng.integers(1, 5000, (200, 2))]
    for native in (256, 512, 1024):
        for width, height in sizes:
            w, h = composite.model_size(width, height, native)
            assert w % 8 == 0 and h % 8 == 0
            assert max(w, h) == native
            assert composite.MIN_MODEL_SIDE <= min(w, h)
            scale = native / max(width, height)
            for got, side in ((w, width), (h, height)):  # within rounding to 8, unless at the floor
                assert abs(got - side * scale) <= 4 or got == composite.MIN_MODEL_SIDE
    assert composite.model_size(1000, 500, 512) == (512, 256)
    assert composite.model_size(4000, 3000, 1024) == (1024, 768)


def test_plan_crop_contains_the_band_with_context_and_stays_in_the_image() -> None:
    rng = np.random.default_rng(1)
    for _ in range(50):
        height, width = (int(v) for v in rng.integers(1, 600, 2))
        band = blob_mask(rng, height, width, max(1.0, min(height, width) / 4))
        plan = composite.plan_crop(band, 512, 0.5, 32)
        x0, y0, x1, y1 = masks.bounding_box(band)
        assert 0 <= plan.x0 <= x0 and x1 <= plan.x1 <= width
        assert 0 <= plan.y0 <= y0 and y1 <= plan.y1 <= height
        assert plan.x0 == 0 or x0 - plan.x0 >= 32
        assert plan.x1 == width or plan.x1 - x1 >= 32
        assert plan.crop(band).sum() == band.sum()
        assert (plan.work_width, plan.work_height) == composite.model_size(*plan.size, 512)
    with pytest.raises(ValueError):
        composite.plan_crop(np.zeros((5, 5), np.uint8), 512, 0.5, 32)


def test_paste_back_copies_the_original_where_alpha_is_zero() -> None:
    rng = np.random.default_rng(2)
    original = random_photo(rng, 50, 60)
    band = np.zeros((50, 60), np.uint8)
    band[10:30, 20:45] = 255
    alpha = masks.feather(band, 4)
    plan = composite.plan_crop(alpha > 0, 256, 0.5, 8)
    patch = random_photo(rng, plan.size[1], plan.size[0])
    out = composite.paste_back(original, patch, plan, alpha)
    assert np.array_equal(out[alpha == 0], original[alpha == 0])
    full = plan.crop(alpha) == 255
    assert np.array_equal(plan.crop(out)[full], patch[full])
    soft = (alpha > 0) & (alpha < 255)
    lo = np.minimum(original, plan_to_full(patch, plan, original.shape))
    hi = np.maximum(original, plan_to_full(patch, plan, original.shape))
    assert ((out[soft] >= lo[soft]) & (out[soft] <= hi[soft])).all()  # a blend of the two
    assert not np.shares_memory(out, original)


def plan_to_full(patch: np.ndarray, plan: composite.CropPlan, shape: tuple[int, ...]) -> np.ndarray:
    full = np.zeros(shape, np.uint8)
    full[plan.y0:plan.y1, plan.x0:plan.x1] = patch
    return full


def test_paste_alpha_protects_the_subject() -> None:
    mask = np.zeros((20, 20), np.uint8)
    mask[:, :10] = 255
    protect = masks.invert(mask)
    alpha = composite.paste_alpha(mask, 2, 4, protect)
    assert (alpha[:, 10:] == 0).all() and (alpha[:, :10] == 255).all()


def test_match_color_removes_a_constant_colour_shift_in_the_ring() -> None:
    rng = np.random.default_rng(4)
    original = np.clip(rng.normal(120, 20, (80, 90, 3)), 0, 255).astype(np.uint8)
    edit = np.zeros((80, 90), np.uint8)
    edit[25:55, 30:60] = 255
    shift = np.array([25, -20, 12])
    drifted = np.clip(original.astype(int) + shift, 0, 255).astype(np.uint8)  # the model's tint
    drifted[edit > 0] = rng.integers(0, 256, (int((edit > 0).sum()), 3), dtype=np.uint8)
    ring = (masks.grow(edit, 8) > 0) & (edit == 0)
    before = np.abs(drifted[ring].astype(int) - original[ring]).mean()
    corrected = composite.match_color(drifted, original, edit, ring_px=8)
    after = np.abs(corrected[ring].astype(int) - original[ring]).mean()
    assert before > 15 and after < 2
    assert corrected.shape == drifted.shape and corrected.dtype == np.uint8


def test_match_color_leaves_the_patch_alone_without_a_ring() -> None:
    patch = np.full((6, 6, 3), 50, np.uint8)
    edit = np.full((6, 6), 255, np.uint8)
    assert np.array_equal(composite.match_color(patch, patch + 10, edit, 4), patch)


def test_resize_mask_keeps_thin_parts() -> None:
    mask = np.zeros((333, 1000), np.uint8)
    mask[100, 10:900] = 255  # one pixel high
    mask[200:210, 503] = 255  # one pixel wide
    small = composite.resize_mask(mask, 256, 88)
    assert set(np.unique(small)) == {0, 255}
    assert small[int(100 * 88 / 333)].any() or small[int(100 * 88 / 333) + 1].any()
    assert small[:, int(503 * 256 / 1000)].any() or small[:, int(503 * 256 / 1000) + 1].any()


def test_resize_image_same_size_is_a_copy() -> None:
    image = np.zeros((4, 4, 3), np.uint8)
    out = composite.resize_image(image, 4, 4)
    assert np.array_equal(out, image) and not np.shares_memory(out, image)
    assert composite.resize_image(np.zeros((30, 40, 3), np.uint8), 16, 8).shape == (8, 16, 3)

