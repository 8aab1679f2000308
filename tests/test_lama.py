"""Erasing with LaMa (random weights, the real architecture) loaded by path through the registry:
both file formats, several photo sizes, one crop per object, and a broken file falling back."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from editor.core import masks
from editor.core.errors import ModelLoadError, ModelUnavailableError
from editor.build import build_engine
from editor.engine.ops import EditOptions, Engine
from editor.models import registry
from editor.models.lama import LamaEraser
from tests.conftest import tiny_config
from tests.test_composite import random_photo
from tests.tiny_lama import TEST_ERASER, lama_context, load_lama, tiny_lama, tiny_lama_files  # noqa: F401

FAST = EditOptions(seed=1, steps=2)


class Recording:
    """An eraser that records the size of each image it is given, then lets LaMa erase it."""

    def __init__(self, eraser: LamaEraser) -> None:
        self.inner = eraser
        self.sizes: list[tuple[int, int]] = []  # (width, height)

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)

    def erase(self, image: np.ndarray, mask: np.ndarray) -> np.ndarray:
        self.sizes.append((image.shape[1], image.shape[0]))
        return self.inner.erase(image, mask)


def with_eraser(engine: Engine, eraser: object, inpainter: object = None) -> Engine:
    return Engine(engine.segmenter, inpainter, engine.backends, engine.defaults,  # type: ignore[arg-type]
                  engine.composite, engine.erase_config, prefill=engine.prefill, eraser=eraser,  # type: ignore[arg-type]
                  eraser_config=TEST_ERASER)


def disc(height: int, width: int, cx: int, cy: int, r: int) -> np.ndarray:
    yy, xx = np.ogrid[0:height, 0:width]
    return masks.from_bool((xx - cx) ** 2 + (yy - cy) ** 2 < r * r)


def assert_erased_within_the_band(engine: Engine, image: np.ndarray, mask: np.ndarray, out: np.ndarray) -> None:
    band = engine.paste_band(mask) > 0
    assert out.shape == image.shape and out.dtype == np.uint8
    assert np.array_equal(out[~band], image[~band]), "a pixel outside the band changed"
    assert (out[mask > 0] != image[mask > 0]).any(), "nothing was erased"


def test_both_file_formats_load_through_the_registry_with_the_same_weights(tiny_lama_files: dict[str, Path],
                                                                           tiny_lama: LamaEraser) -> None:
    from_pt = load_lama(tiny_lama_files["pt"])
    assert isinstance(from_pt, LamaEraser) and from_pt.description == "lama (cpu)"
    assert from_pt.multiple == 8 and from_pt.max_side == TEST_ERASER.max_side
    rng = np.random.default_rng(0)
    image, hole = random_photo(rng, 48, 64), disc(48, 64, 30, 20, 9)
    out = tiny_lama.erase(image, hole)
    assert np.array_equal(from_pt.erase(image, hole), out)
    assert from_pt.load_error is None and tiny_lama.load_error is None
    keep = hole == 0
    assert np.array_equal(out[keep], image[keep]), "LaMa keeps the pixels outside its hole"
    assert (out[~keep] != image[~keep]).any()


@pytest.mark.parametrize("height, width, cx, cy, r", [
    (40, 56, 28, 20, 8),  # smaller than one crop's margin
    (97, 131, 70, 41, 15),  # odd sides
    (333, 250, 120, 200, 30),
])
def test_lama_erase_is_exact_outside_the_band_at_several_sizes(fallback_engine: Engine, tiny_lama: LamaEraser,
                                                               height: int, width: int, cx: int, cy: int,
                                                               r: int) -> None:
    recording = Recording(tiny_lama)
    engine = with_eraser(fallback_engine, recording)
    image, mask = random_photo(np.random.default_rng(height), height, width), disc(height, width, cx, cy, r)
    before = image.copy()
    result = engine.erase(image, mask, FAST)
    assert_erased_within_the_band(engine, image, mask, result.images[0])
    assert np.array_equal(image, before)
    assert result.metadata["model"] == "lama" and result.metadata["mode"] == "erase"
    (width_seen, height_seen), = recording.sizes
    assert width_seen % 8 == 0 and height_seen % 8 == 0 and max(width_seen, height_seen) <= TEST_ERASER.max_side


def test_a_wide_crop_above_max_side_is_erased_on_a_smaller_copy(fallback_engine: Engine,
                                                               tiny_lama: LamaEraser) -> None:
    recording = Recording(tiny_lama)
    engine = with_eraser(fallback_engine, recording)
    height, width = 60, 420
    image = random_photo(np.random.default_rng(3), height, width)
    mask = np.zeros((height, width), np.uint8)
    mask[24:36, 40:380] = 255  # a wire across the photo
    result = engine.erase(image, mask, FAST)
    assert_erased_within_the_band(engine, image, mask, result.images[0])
    (width_seen, height_seen), = recording.sizes
    assert width_seen == TEST_ERASER.max_side and height_seen < height


def test_two_separate_objects_are_erased_on_two_crops(fallback_engine: Engine, tiny_lama: LamaEraser) -> None:
    recording = Recording(tiny_lama)
    engine = with_eraser(fallback_engine, recording)
    height, width = 120, 300
    image = random_photo(np.random.default_rng(4), height, width)
    mask = masks.union(disc(height, width, 40, 40, 10), disc(height, width, 250, 80, 12))
    result = engine.erase(image, mask, FAST)
    assert_erased_within_the_band(engine, image, mask, result.images[0])
    assert len(recording.sizes) == 2
    assert all(w < width // 2 and h < height for w, h in recording.sizes), "each crop is around one object"


def lama_settings(*settings: str) -> tuple[str, ...]:
    return (*settings, f"eraser.margin_px={TEST_ERASER.margin_px}", f"eraser.max_side={TEST_ERASER.max_side}",
            f"eraser.grow_px={TEST_ERASER.grow_px}")


def test_a_lama_file_in_the_settings_is_named_and_erases_and_generative_erase_stays_available(
        tiny_sam_path: Path, tiny_sd2_dir: Path, tiny_lama_files: dict[str, Path], empty_models_dir: Path,
        photo: np.ndarray) -> None:
    lama_file = tiny_lama_files["safetensors"]
    engine = build_engine(tiny_config(empty_models_dir, *lama_settings(
        f"segmenter.model={tiny_sam_path}", f"inpaint.model={tiny_sd2_dir}", f"eraser.model={lama_file}")),
        show_progress=False)
    status = engine.status()
    assert status.eraser.startswith("LaMa") and str(lama_file) in status.eraser and status.errors == ()
    mask = disc(240, 320, 160, 120, 52)
    assert engine.erase(photo, mask, FAST).metadata["model"] == "lama"
    generative = engine.erase(photo, mask, replace(FAST, generative=True))
    assert generative.metadata["model"] == engine.inpainter.model_name
    assert generative.metadata["prompt"] == engine.erase_config.prompt
    assert_erased_within_the_band(engine, photo, mask, generative.images[0])


def test_generative_erase_without_an_inpainting_model_says_how_to_get_one(fallback_engine: Engine,
                                                                          tiny_lama: LamaEraser,
                                                                          photo: np.ndarray) -> None:
    engine = with_eraser(fallback_engine, tiny_lama)
    with pytest.raises(ModelUnavailableError, match="python -m editor download inpaint"):
        engine.erase(photo, disc(240, 320, 160, 120, 52), replace(FAST, generative=True))


def test_a_broken_file_is_one_remembered_line_and_erase_falls_back_to_opencv(empty_models_dir: Path,
                                                                             tmp_path: Path,
                                                                             photo: np.ndarray) -> None:
    broken = tmp_path / "big-lama.safetensors"
    broken.write_bytes(b"\x00" * 100)
    engine = build_engine(tiny_config(empty_models_dir, *lama_settings(f"eraser.model={broken}")),
                          show_progress=False)  # the weights load at first use
    eraser = engine.eraser
    assert isinstance(eraser, LamaEraser) and engine.status().eraser.startswith("LaMa") and eraser.load_error is None
    mask = disc(240, 320, 160, 120, 52)
    for _ in range(2):
        result = engine.erase(photo, mask, FAST)
        assert result.metadata["model"] == "opencv-telea"
        assert_erased_within_the_band(engine, photo, mask, result.images[0])
    error = eraser.load_error
    assert error and "\n" not in error and "big-lama.safetensors" in error
    assert engine.status().eraser == "opencv-telea (lama failed to load)" and len(engine.status().errors) == 1
    engine.warm_up()  # raises nothing, tries nothing again
    assert eraser.load_error == error


def test_no_file_is_refused_at_once_with_the_download_command(tmp_path: Path) -> None:
    entry = registry.get("lama")
    with pytest.raises(ModelUnavailableError, match="python -m editor download lama"):
        registry.loader(entry)(entry, tmp_path / "missing.pt", lama_context())
    with pytest.raises(ModelUnavailableError):
        registry.loader(entry)(entry, None, lama_context())


def test_a_file_of_another_architecture_is_named_in_the_error(tmp_path: Path, fallback_engine: Engine,
                                                              photo: np.ndarray) -> None:
    import torch
    from safetensors.torch import save_file
    from spandrel.architectures.DAT import DAT  # an upscaler: spandrel knows it, but it is not LaMa

    torch.manual_seed(0)
    path = tmp_path / "upscaler.safetensors"
    save_file({k: v.contiguous() for k, v in DAT(embed_dim=12, depth=[1], num_heads=[2], split_size=[2, 4]).state_dict().items()},
              str(path))
    eraser = load_lama(path)
    result = with_eraser(fallback_engine, eraser).erase(photo, disc(240, 320, 160, 120, 52), FAST)
    assert result.metadata["model"] == "opencv-telea"
    assert eraser.load_error is not None and "not LaMa" in eraser.load_error and "upscaler.safetensors" in eraser.load_error


def test_the_built_in_models_load_through_the_registry(photo: np.ndarray) -> None:
    from editor.models.opencv import OpenCvEraser

    entry = registry.get("opencv")
    eraser = registry.loader(entry)(entry, None, lama_context())
    assert isinstance(eraser, OpenCvEraser) and eraser.model_name == "opencv-telea" and eraser.load_error is None
    hole = disc(240, 320, 160, 120, 52)
    out = eraser.erase(photo, hole)
    assert np.array_equal(out[hole == 0], photo[hole == 0]) and (out[hole > 0] != photo[hole > 0]).any()
    grabcut = registry.get("grabcut")
    assert registry.loader(grabcut)(grabcut, None, lama_context()).description.startswith("grabcut")
