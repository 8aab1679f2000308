"""The editing operations: fill, erase, replace background, multi-part selection; errors and metadata."""
from __future__ import annotations

import threading

import numpy as np
import pytest

from editor.core import masks
from editor.engine.ops import DOWNLOAD_HINT, EditOptions, Engine
from editor.core.errors import EditCancelled, EditorError, ModelUnavailableError, SelectionError
from editor.core.prompts import Prompts, SelectionPart
from editor.models.base import ImageRef, Segmentation

FAST = EditOptions(seed=4, steps=2)


def disc(height: int = 240, width: int = 320, cx: int = 160, cy: int = 120, r: int = 50) -> np.ndarray:
    yy, xx = np.mgrid[0:height, 0:width]
    return np.where((xx - cx) ** 2 + (yy - cy) ** 2 < r * r, 255, 0).astype(np.uint8)


def reach(engine: Engine) -> int:
    return engine.composite.grow + engine.composite.feather


def assert_outside_band_exact(engine: Engine, image: np.ndarray, mask: np.ndarray, out: np.ndarray) -> None:
    band = masks.grow(mask, reach(engine)) > 0
    assert out.shape == image.shape and out.dtype == np.uint8
    assert np.array_equal(out[~band], image[~band])


# --- refusing what cannot work -------------------------------------------------------------------


@pytest.mark.parametrize("prompt", ["", "   ", "\n\t"])
def test_fill_needs_a_prompt(sam_sd2_engine: Engine, photo: np.ndarray, prompt: str) -> None:
    with pytest.raises(EditorError, match="prompt"):
        sam_sd2_engine.fill(photo, disc(), prompt, FAST)
    with pytest.raises(EditorError, match="prompt"):
        sam_sd2_engine.replace_background(photo, disc(), prompt, FAST)


@pytest.mark.parametrize("engine_name", ["sam_sd2_engine", "fallback_engine"])
def test_empty_or_mis_sized_masks_are_selection_errors(request: pytest.FixtureRequest, photo: np.ndarray,
                                                       engine_name: str) -> None:
    engine: Engine = request.getfixturevalue(engine_name)
    empty = np.zeros(photo.shape[:2], np.uint8)
    wrong = np.full((120, 160), 255, np.uint8)
    three_d = np.full(photo.shape, 255, np.uint8)
    for mask in (empty, wrong, three_d, disc().T.copy()):
        with pytest.raises(SelectionError) as info:
            engine.erase(photo, mask, FAST)
        assert "\n" not in str(info.value)
        if engine.inpainter is not None:
            with pytest.raises(SelectionError):
                engine.fill(photo, mask, "grass", FAST)
            with pytest.raises(SelectionError):
                engine.replace_background(photo, mask, "grass", FAST)
    with pytest.raises(SelectionError, match="320x240"):
        engine.erase(photo, wrong, FAST)


def test_whole_photo_as_subject_leaves_no_background(sam_sd2_engine: Engine, photo: np.ndarray) -> None:
    with pytest.raises(EditorError, match="background"):
        sam_sd2_engine.replace_background(photo, np.full(photo.shape[:2], 255, np.uint8), "sea", FAST)


@pytest.mark.parametrize("options, word", [
    (EditOptions(steps=0), "steps"),
    (EditOptions(steps=101), "steps"),
    (EditOptions(strength=0.0), "strength"),
    (EditOptions(strength=1.5), "strength"),
    (EditOptions(guidance=-1.0), "guidance"),
    (EditOptions(num_images=0), "images"),
    (EditOptions(num_images=9), "images"),
    (EditOptions(seed=-1), "seed"),
    (EditOptions(steps=2, strength=0.3), "step"),
])
def test_bad_edit_options_are_refused_before_generating(sam_sd2_engine: Engine, photo: np.ndarray,
                                                        options: EditOptions, word: str) -> None:
    with pytest.raises(EditorError, match=word) as info:
        sam_sd2_engine.fill(photo, disc(), "grass", options)
    assert "\n" not in str(info.value)


def test_fill_and_background_without_a_model_name_the_download_command(fallback_engine: Engine,
                                                                        photo: np.ndarray) -> None:
    assert fallback_engine.inpainter is None
    for call in (lambda: fallback_engine.fill(photo, disc(), "grass", FAST),
                 lambda: fallback_engine.replace_background(photo, disc(), "a beach", FAST)):
        with pytest.raises(ModelUnavailableError) as info:
            call()
        message = str(info.value)
        assert DOWNLOAD_HINT in message and "python -m editor download inpaint" in message
        assert "\n" not in message


# --- erase ------------------------------------------------------------------------------------------


def test_fallback_erase_removes_the_red_disc(fallback_engine: Engine, photo: np.ndarray) -> None:
    mask = disc(r=52)  # a little larger than the object, as a person would select it
    before = photo.copy()
    result = fallback_engine.erase(photo, mask, FAST)
    out = result.images[0]
    inside = disc() > 0
    red, green, blue = out[inside].astype(float).mean(axis=0)
    assert red < green + blue  # no longer red-dominant
    assert red < 180
    assert_outside_band_exact(fallback_engine, photo, mask, out)
    assert np.array_equal(photo, before)
    assert result.metadata["model"] == "opencv-telea" and result.metadata["mode"] == "erase"
    assert result.metadata["steps"] == "0"


def test_fallback_erase_on_a_large_photo_keeps_the_rest_exact(fallback_engine: Engine) -> None:
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, (1500, 2100, 3), dtype=np.uint8)
    mask = disc(1500, 2100, 1000, 700, 400)  # a hole of ~500k pixels
    out = fallback_engine.erase(image, mask).images[0]
    assert_outside_band_exact(fallback_engine, image, mask, out)
    assert (out[mask > 0] != image[mask > 0]).any()


def test_diffusion_erase(sam_sd2_engine: Engine, photo: np.ndarray) -> None:
    mask = disc(r=52)
    before = photo.copy()
    result = sam_sd2_engine.erase(photo, mask, FAST)
    out = result.images[0]
    assert_outside_band_exact(sam_sd2_engine, photo, mask, out)
    assert (out[mask > 0] != photo[mask > 0]).any()
    assert np.array_equal(photo, before)
    meta = result.metadata
    assert meta["mode"] == "erase"
    assert meta["prompt"] == sam_sd2_engine.erase_config.prompt
    assert meta["negative_prompt"] == sam_sd2_engine.erase_config.negative_prompt
    assert meta["strength"] == f"{sam_sd2_engine.erase_config.strength:g}"
    assert meta["model"] == sam_sd2_engine.inpainter.model_name


# --- results and metadata ---------------------------------------------------------------------------


def test_fill_metadata_describes_the_edit(sam_sd2_engine: Engine, photo: np.ndarray) -> None:
    options = EditOptions(negative_prompt="ugly", steps=3, guidance=5.0, strength=0.9, seed=1234)
    result = sam_sd2_engine.fill(photo, disc(), "  a bowl of tulips ", options)
    assert result.seed == 1234
    assert result.metadata == {
        "mode": "fill", "prompt": "a bowl of tulips", "negative_prompt": "ugly", "seed": "1234",
        "steps": "3", "guidance": "5", "strength": "0.9",
        "model": sam_sd2_engine.inpainter.model_name, "software": "photo-editor",
    }
    assert np.array_equal(result.mask, disc())


def test_defaults_come_from_the_config(sam_sd2_engine: Engine, photo: np.ndarray) -> None:
    meta = sam_sd2_engine.fill(photo, disc(), "tulips", EditOptions(seed=1)).metadata
    defaults = sam_sd2_engine.defaults
    assert meta["steps"] == str(defaults.steps)
    assert meta["negative_prompt"] == defaults.negative_prompt
    assert meta["guidance"] == f"{defaults.guidance:g}"


def test_random_seed_is_reported_and_reproduces_the_image(sam_sd2_engine: Engine, photo: np.ndarray) -> None:
    seeds = set()
    for _ in range(2):
        result = sam_sd2_engine.fill(photo, disc(), "tulips", EditOptions(steps=2))
        assert result.metadata["seed"] == str(result.seed) and 0 <= result.seed < 2**31
        seeds.add(result.seed)
    again = sam_sd2_engine.fill(photo, disc(), "tulips", EditOptions(steps=2, seed=result.seed))
    assert again.seed == result.seed
    assert np.array_equal(again.images[0], result.images[0])
    other = sam_sd2_engine.fill(photo, disc(), "tulips", EditOptions(steps=2, seed=result.seed + 1))
    assert not np.array_equal(other.images[0], result.images[0])


def test_background_metadata(sam_sd2_engine: Engine, photo: np.ndarray) -> None:
    result = sam_sd2_engine.replace_background(photo, disc(), "a beach", EditOptions(seed=9, steps=2))
    assert result.metadata["mode"] == "background" and result.metadata["prompt"] == "a beach"
    assert result.seed == 9


def test_variations_each_keep_the_rest_exact(sam_sd2_engine: Engine, photo: np.ndarray) -> None:
    result = sam_sd2_engine.fill(photo, disc(r=20), "a flower", EditOptions(seed=5, steps=2, num_images=2))
    assert len(result.images) == 2
    for out in result.images:
        assert_outside_band_exact(sam_sd2_engine, photo, disc(r=20), out)
    assert not np.array_equal(result.images[0], result.images[1])


def test_progress_and_cancel_through_the_engine(sam_sd2_engine: Engine, photo: np.ndarray) -> None:
    calls: list[tuple[int, int]] = []
    sam_sd2_engine.fill(photo, disc(), "tulips", EditOptions(seed=1, steps=3, strength=1.0),
                        progress=lambda d, t: calls.append((d, t)))
    assert calls == [(1, 3), (2, 3), (3, 3)]
    cancel = threading.Event()
    cancel.set()
    before = photo.copy()
    with pytest.raises(EditCancelled):
        sam_sd2_engine.fill(photo, disc(), "tulips", EditOptions(seed=1, steps=3), cancel=cancel)
    assert np.array_equal(photo, before)


# --- selection ---------------------------------------------------------------------------------------


def test_select_does_not_modify_the_photo(sam_sd2_engine: Engine, fallback_engine: Engine, photo: np.ndarray) -> None:
    before = photo.copy()
    for engine in (sam_sd2_engine, fallback_engine):
        mask = engine.select(photo, Prompts().add_point(160, 120))
        assert mask.shape == photo.shape[:2] and mask.dtype == np.uint8
    assert np.array_equal(photo, before)


class BoxSegmenter:
    """A stand-in segmenter: a box prompt selects exactly that box."""

    description = "boxes"

    def prepare(self, image: np.ndarray) -> ImageRef:
        return ImageRef("box", image.shape[1], image.shape[0])

    def segment(self, ref: ImageRef, prompts: Prompts, previous: np.ndarray | None = None) -> Segmentation:
        x0, y0, x1, y1 = (int(v) for v in prompts.box)
        mask = np.zeros((ref.height, ref.width), np.uint8)
        mask[y0:y1, x0:x1] = 255
        return Segmentation(mask)


def test_select_parts_adds_and_subtracts(fallback_engine: Engine, photo: np.ndarray) -> None:
    engine = Engine(BoxSegmenter(), None, fallback_engine.backends, fallback_engine.defaults,
                    fallback_engine.composite, fallback_engine.erase_config, prefill=fallback_engine.prefill)
    a, b, c = Prompts(box=(10, 10, 50, 50)), Prompts(box=(40, 40, 90, 90)), Prompts(box=(0, 0, 45, 20))
    combined = engine.select_parts(photo, [SelectionPart(a), SelectionPart(b), SelectionPart(c, subtract=True),
                                           SelectionPart(Prompts())])
    expected = np.zeros(photo.shape[:2], bool)
    expected[10:50, 10:50] = expected[40:90, 40:90] = True
    expected[0:20, 0:45] = False
    assert np.array_equal(combined > 0, expected) and set(np.unique(combined).tolist()) == {0, 255}
    assert masks.is_empty(engine.select_parts(photo, []))
    # Parts apply in order: a subtraction only removes what was added before it.
    later = engine.select_parts(photo, [SelectionPart(c, subtract=True), SelectionPart(a)])
    assert np.array_equal(later, engine.select(photo, a))
    with pytest.raises(SelectionError):  # every part's prompts are validated
        engine.select_parts(photo, [SelectionPart(Prompts(box=(0, 0, 999, 10)))])


def test_grabcut_gives_the_same_mask_for_the_same_prompts(fallback_engine: Engine, photo: np.ndarray) -> None:
    """OpenCV seeds GrabCut from a per-thread random state: without a fixed seed the same click
    gives different masks depending on what ran before (another user's click, another thread)."""
    prompts = [Prompts().add_point(160, 120), Prompts(box=(100, 60, 160, 180)), Prompts(box=(90, 50, 230, 190))]
    first = [fallback_engine.select(photo, p) for p in prompts]
    for _ in range(2):
        assert all(np.array_equal(fallback_engine.select(photo, p), m) for p, m in zip(prompts, first))
    results: list[list[np.ndarray]] = []
    worker = threading.Thread(target=lambda: results.append([fallback_engine.select(photo, p) for p in prompts]))
    worker.start()
    worker.join()
    assert all(np.array_equal(m, f) for m, f in zip(results[0], first))
