"""Upscale x2 / x4 with tiny random Real-ESRGAN-shaped networks (spandrel's own architectures) loaded
through the registry: sizes, tiles without seams, the limit refused first, the Lanczos fallback said
as such, the command line, the page's edit, and sharp new backgrounds that keep the subject exact."""
from __future__ import annotations

import re
import threading
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest

from editor.build import build_engine, download_target, plan_backends
from editor.cli import main
from editor.core import masks
from editor.core.config import UpscalerConfig
from editor.core.errors import ConfigError, EditCancelled, EditorError, ModelUnavailableError
from editor.core.photo_io import load_image, read_png_metadata, save_png
from editor.engine import strategy
from editor.engine.ops import EditOptions, Engine
from editor.models import registry
from editor.models.base import LANCZOS_NAME
from editor.models.realesrgan import RealEsrganUpscaler
from tests.conftest import tiny_config
from tests.test_composite import random_photo
from tests.test_ui_handlers import OPTIONS, handlers_for, opened
from tests.tiny_upscaler import (  # noqa: F401
    STANDS_FOR, TEST_UPSCALER, load_upscaler, tiny_upscaler, tiny_upscaler_files, upscaler_context,
)

MODELS = ("realesrgan-x4plus", "realesrgan-x2plus", "realesr-general-x4v3")
Files = dict[str, dict[str, Path]]


class Recording:
    """An upscaler that counts the tiles it is given, then lets the real one enlarge them."""

    def __init__(self, inner: RealEsrganUpscaler) -> None:
        self.inner = inner
        self.tiles: list[tuple[int, int]] = []  # (width, height) of each

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)

    def upscale(self, image: np.ndarray) -> np.ndarray:
        self.tiles.append((image.shape[1], image.shape[0]))
        return self.inner.upscale(image)


def with_upscaler(engine: Engine, upscaler: object, max_pixels: int = 50_000_000,
                  config: UpscalerConfig = TEST_UPSCALER) -> Engine:
    return Engine(engine.segmenter, engine.inpainter, engine.backends, engine.defaults, engine.composite,
                  engine.erase_config, engine.detector, engine.limits, prefill=engine.prefill, eraser=engine.eraser,
                  eraser_config=engine.eraser_config, max_pixels=max_pixels, upscaler=upscaler,  # type: ignore[arg-type]
                  upscaler_config=config)


# --- the registry -----------------------------------------------------------------------------


def test_the_registry_names_each_release_file_with_its_published_sha256() -> None:
    for name in MODELS:
        entry = registry.get(name)
        assert entry.kind == "upscaler" and entry.backend == "realesrgan" and entry.licence == "BSD-3-Clause"
        assert entry.source is not None and re.fullmatch(r"[0-9a-f]{64}", entry.source.sha256 or "")
        assert entry.source.url == ("https://github.com/xinntao/Real-ESRGAN/releases/download/"
                                    f"{entry.source.url.split('/')[-2]}/{entry.source.filename}")
    assert registry.get("realesrgan-x2plus").options["scale"] == 2
    assert registry.get("realesrgan-x4plus").source.filename == "RealESRGAN_x4plus.pth"  # type: ignore[union-attr]
    lanczos = registry.get("lanczos")
    assert lanczos.builtin and lanczos.kind == "upscaler" and "plain resize" in lanczos.title
    assert registry.auto_order("upscaler", "cpu")[0] == "realesr-general-x4v3"
    assert registry.auto_order("upscaler", "cuda")[0] == "realesrgan-x4plus"
    assert registry.FALLBACK["upscaler"] == "lanczos"


def test_download_upscaler_fetches_the_devices_default_or_the_configured_one(empty_models_dir: Path) -> None:
    config = tiny_config(empty_models_dir)
    assert download_target("upscaler", config, "cpu").name == "realesr-general-x4v3"
    assert download_target("upscaler", config, "cuda").name == "realesrgan-x4plus"
    named = tiny_config(empty_models_dir, "upscaler.model=realesrgan-x2plus")
    assert download_target("upscaler", named, "cpu").name == "realesrgan-x2plus"
    with pytest.raises(ConfigError, match="built in"):
        download_target("lanczos", config, "cpu")


# --- loading ----------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", list(STANDS_FOR))
def test_each_file_format_loads_through_the_registry_and_enlarges_by_its_factor(tiny_upscaler_files: Files,
                                                                                kind: str) -> None:
    name = STANDS_FOR[kind]
    image = random_photo(np.random.default_rng(1), 21, 30)
    outputs = []
    for path in tiny_upscaler_files[kind].values():
        upscaler = load_upscaler(path, name)
        assert isinstance(upscaler, RealEsrganUpscaler) and upscaler.model_name == name
        out = upscaler.upscale(image)
        assert upscaler.load_error is None and upscaler.scale == registry.get(name).options["scale"]
        assert out.shape == (21 * upscaler.scale, 30 * upscaler.scale, 3) and out.dtype == np.uint8
        outputs.append(out)
    assert np.array_equal(outputs[0], outputs[1]), ".safetensors and .pth hold the same weights"


def test_a_file_of_the_wrong_factor_or_kind_is_one_remembered_line(tiny_upscaler_files: Files, tmp_path: Path) -> None:
    import torch
    from safetensors.torch import save_file
    from spandrel.architectures.Compact import Compact

    wrong = load_upscaler(tiny_upscaler_files["rrdb-x2"]["pth"], "realesrgan-x4plus")
    with pytest.raises(EditorError):
        wrong.load()
    assert wrong.load_error is not None and "x2" in wrong.load_error and "\n" not in wrong.load_error
    torch.manual_seed(0)
    same_size = tmp_path / "restore.safetensors"  # spandrel knows it, but it enlarges nothing (x1)
    save_file({k: v.contiguous() for k, v in Compact(num_feat=8, num_conv=1, upscale=1).state_dict().items()},
              str(same_size))
    restorer = load_upscaler(same_size)
    with pytest.raises(EditorError):
        restorer.load()
    assert "not an x2 or x4" in (restorer.load_error or "") and "restore.safetensors" in (restorer.load_error or "")


def test_no_file_is_refused_at_once_with_the_download_command(tmp_path: Path) -> None:
    entry = registry.get("realesr-general-x4v3")
    with pytest.raises(ModelUnavailableError, match="python -m editor download realesr-general-x4v3"):
        registry.loader(entry)(entry, tmp_path / "missing.pth", upscaler_context())


# --- tiling -----------------------------------------------------------------------------------


@pytest.mark.parametrize("height, width", [(70, 93), (32, 32), (5, 131)])
def test_tiles_with_overlap_give_the_untiled_result(tiny_upscaler: RealEsrganUpscaler, height: int,
                                                    width: int) -> None:
    image = random_photo(np.random.default_rng(height), height, width)
    whole = tiny_upscaler.upscale(image)
    tiled = strategy.upscale_tiled(image, tiny_upscaler.upscale, 4, tile=16, overlap=8)
    assert tiled.shape == whole.shape
    assert np.abs(tiled.astype(int) - whole.astype(int)).max() <= 1, "a seam where tiles meet"
    without_context = strategy.upscale_tiled(image, tiny_upscaler.upscale, 4, tile=16, overlap=0)
    if max(height, width) > 16:
        assert np.abs(without_context.astype(int) - whole.astype(int)).max() > 1, "the overlap is what hides seams"
    half = strategy.upscale_tiled(image, tiny_upscaler.upscale, 4, tile=16, overlap=8, factor=2)
    shrunk = cv2.resize(whole, (width * 2, height * 2), interpolation=cv2.INTER_AREA)
    assert np.abs(half.astype(int) - shrunk.astype(int)).max() <= 1, "x2 from x4 per tile = the whole x4 shrunk"


def test_progress_counts_the_tiles_and_cancel_stops_between_them(fallback_engine: Engine,
                                                                 tiny_upscaler: RealEsrganUpscaler) -> None:
    recording = Recording(tiny_upscaler)
    engine = with_upscaler(fallback_engine, recording)
    image = random_photo(np.random.default_rng(2), 70, 93)  # 3 x 3 tiles of 32
    seen: list[tuple[int, int]] = []
    engine.upscale(image, 4, lambda done, total: seen.append((done, total)))
    assert seen == [(n, 9) for n in range(1, 10)] and len(recording.tiles) == 9
    assert all(w <= 32 + 2 * 8 and h <= 32 + 2 * 8 for w, h in recording.tiles)
    cancel = threading.Event()

    def cancel_after_two(done: int, total: int) -> None:
        if done == 2:
            cancel.set()

    recording.tiles.clear()
    with pytest.raises(EditCancelled):
        engine.upscale(image, 4, cancel_after_two, cancel)
    assert len(recording.tiles) == 2


# --- the engine -------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["compact-x4", "rrdb-x2"])
@pytest.mark.parametrize("factor", [2, 4])
def test_upscale_gives_the_factor_asked_with_an_x2_or_x4_model(fallback_engine: Engine, tiny_upscaler_files: Files,
                                                               kind: str, factor: int) -> None:
    upscaler = load_upscaler(tiny_upscaler_files[kind]["safetensors"], STANDS_FOR[kind])
    engine = with_upscaler(fallback_engine, upscaler)
    image = random_photo(np.random.default_rng(3), 45, 61)
    before = image.copy()
    result = engine.upscale(image, factor)
    (out,) = result.images
    assert out.shape == (45 * factor, 61 * factor, 3) and out.dtype == np.uint8
    assert result.metadata["model"] == STANDS_FOR[kind] and result.metadata["mode"] == "upscale"
    assert result.metadata["scale"] == str(factor) and np.array_equal(image, before)
    lanczos = cv2.resize(image, (61 * factor, 45 * factor), interpolation=cv2.INTER_LANCZOS4)
    assert not np.array_equal(out, lanczos), "the model enlarged it, not a resize"


def test_a_result_over_max_image_pixels_is_refused_before_any_work(fallback_engine: Engine,
                                                                   tiny_upscaler: RealEsrganUpscaler) -> None:
    recording = Recording(tiny_upscaler)
    engine = with_upscaler(fallback_engine, recording, max_pixels=100 * 100)
    image = random_photo(np.random.default_rng(4), 40, 60)
    with pytest.raises(EditorError) as refused:
        engine.upscale(image, 4)
    message = str(refused.value)
    assert "over max_image_pixels" in message and "240x160" in message and "\n" not in message
    assert recording.tiles == [], "refused before the model saw a tile"
    assert engine.upscale(image, 2).images[0].shape == (80, 120, 3), "x2 fits"
    with pytest.raises(EditorError, match="2 or 4"):
        engine.upscale(image, 3)


def test_without_a_model_upscale_is_a_lanczos_resize_and_says_so(fallback_engine: Engine) -> None:
    image = random_photo(np.random.default_rng(5), 30, 40)
    result = fallback_engine.upscale(image, 2)
    assert result.metadata["model"] == LANCZOS_NAME
    assert np.array_equal(result.images[0], cv2.resize(image, (80, 60), interpolation=cv2.INTER_LANCZOS4))
    line = fallback_engine.status().upscaler
    assert line.startswith("lanczos: a plain resize") and "python -m editor download upscaler" in line


def test_a_broken_file_falls_back_to_lanczos_with_the_reason_in_the_status(empty_models_dir: Path,
                                                                           tmp_path: Path) -> None:
    broken = tmp_path / "RealESRGAN_x4plus.pth"
    broken.write_bytes(b"\x00" * 100)
    engine = build_engine(tiny_config(empty_models_dir, f"upscaler.model={broken}"), show_progress=False)
    assert isinstance(engine.upscaler, RealEsrganUpscaler) and str(broken) in engine.status().upscaler
    image = random_photo(np.random.default_rng(6), 30, 40)
    for _ in range(2):
        assert engine.upscale(image, 2).metadata["model"] == LANCZOS_NAME
    status = engine.status()
    assert status.upscaler == "lanczos: a plain resize (RealESRGAN_x4plus.pth failed to load)"
    (error,) = status.errors
    assert "RealESRGAN_x4plus.pth" in error and error.endswith("Upscale is a plain Lanczos resize")


def test_a_local_file_in_the_settings_is_recognised_as_an_upscaler(empty_models_dir: Path,
                                                                  tiny_upscaler_files: Files) -> None:
    path = tiny_upscaler_files["rrdb-x2"]["safetensors"]
    config = tiny_config(empty_models_dir, f"upscaler.model={path}", "upscaler.tile=32")
    plan = plan_backends(config)
    assert plan.upscaler.local and plan.upscaler.entry is not None and plan.upscaler.entry.backend == "realesrgan"
    engine = build_engine(config, show_progress=False)
    assert str(path) in engine.status().upscaler and "tiles of 32 px" in engine.status().upscaler
    result = engine.upscale(random_photo(np.random.default_rng(7), 20, 24), 4)
    assert result.images[0].shape == (80, 96, 3) and result.metadata["model"] == path.name
    with pytest.raises(ConfigError, match="is an eraser, not an upscaler"):
        plan_backends(tiny_config(empty_models_dir, "upscaler.model=lama"))
    with pytest.raises(ConfigError, match="upscaler.tile"):
        tiny_config(empty_models_dir, "upscaler.tile=0")


# --- sharp new backgrounds ----------------------------------------------------------------------


def test_a_background_generated_small_is_enlarged_by_the_upscaler_and_the_subject_stays_exact(
        tiny_sd2_dir: Path, tiny_upscaler_files: Files, empty_models_dir: Path) -> None:
    path = tiny_upscaler_files["compact-x4"]["safetensors"]
    settings = (f"inpaint.model={tiny_sd2_dir}", f"upscaler.model={path}", "upscaler.tile=64", "upscaler.overlap=8")
    sharp = build_engine(tiny_config(empty_models_dir, *settings), show_progress=False)
    plain = build_engine(tiny_config(empty_models_dir, *settings, "composite.upscale_background=off"),
                         show_progress=False)
    height, width = 300, 420  # larger than the tiny model's work size: its background is enlarged
    image = random_photo(np.random.default_rng(8), height, width)
    yy, xx = np.mgrid[0:height, 0:width]
    subject = masks.from_bool((xx - 200) ** 2 + (yy - 150) ** 2 < 60**2)
    options = EditOptions(seed=5, steps=2)
    upscaled = sharp.replace_background(image, subject, "a beach", options)
    resized = plain.replace_background(image, subject, "a beach", options)
    assert upscaled.metadata["background_upscaler"] == path.name
    assert "background_upscaler" not in resized.metadata
    inside = subject > 0
    for result in (upscaled, resized):
        assert np.array_equal(result.images[0][inside], image[inside]), "the subject is kept bit for bit"
    assert not np.array_equal(upscaled.images[0][~inside], resized.images[0][~inside])


# --- the command line and the page ----------------------------------------------------------------


def test_cli_edit_mode_upscale_writes_the_larger_photo_and_refuses_a_selection(
        tiny_upscaler_files: Files, empty_models_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    photo = tmp_path / "photo.png"
    save_png(random_photo(np.random.default_rng(9), 30, 40), photo)
    out = tmp_path / "big.png"
    settings = ["--set", "device=cpu", "--set", f"models_dir={empty_models_dir}", "--set", "auto_download=false",
                "--set", "upscaler.tile=32"]
    model = ["--set", f"upscaler.model={tiny_upscaler_files['compact-x4']['pth']}"]
    assert main(["edit", str(photo), "-o", str(out), "--mode", "upscale", "--scale", "2", *settings, *model]) == 0
    assert load_image(out, 10**8).shape == (60, 80, 3)
    assert read_png_metadata(out)["model"] == "compact-x4.pth"
    assert "wrote" in capsys.readouterr().out
    assert main(["edit", str(photo), "-o", str(out), "--mode", "upscale", "--scale", "4", *settings]) == 0
    printed = capsys.readouterr().out
    assert "plain Lanczos resize" in printed and "python -m editor download upscaler" in printed
    assert read_png_metadata(out)["model"] == LANCZOS_NAME
    for extra, expected in ((["--point", "5,5"], "takes no selection"), ([], "needs --scale 2 or 4")):
        scale = [] if not extra else ["--scale", "2"]
        assert main(["edit", str(photo), "-o", str(out), "--mode", "upscale", *scale, *extra, *settings]) == 1
        error = capsys.readouterr().err
        assert expected in error and error.count("\n") == 1


def test_the_page_upscales_as_an_edit_that_undo_takes_back(fallback_engine: Engine, tiny_upscaler: RealEsrganUpscaler,
                                                          tmp_path: Path) -> None:
    handlers = handlers_for(with_upscaler(fallback_engine, tiny_upscaler, config=UpscalerConfig(tile=128)), tmp_path)
    session, _ = opened(handlers)
    original = session.image.copy()
    outputs = handlers.edit("upscale-2", session, **OPTIONS)
    height, width = original.shape[:2]
    assert session.image.shape == (height * 2, width * 2, 3)
    assert "Upscale ×2 done" in outputs[0] and "realesr-general-x4v3" in outputs[0] and f"{width * 2}×" in outputs[0]
    assert len(session.versions) == 2 and session.version.label == "upscale ×2"
    assert session.version.metadata["model"] == "realesr-general-x4v3"
    handlers.undo(session)
    assert np.array_equal(session.image, original)
    handlers.redo(session)
    assert session.image.shape == (height * 2, width * 2, 3)


def test_the_page_says_when_upscale_was_a_plain_resize(fallback_engine: Engine, tmp_path: Path) -> None:
    handlers = handlers_for(fallback_engine, tmp_path)
    session, _ = opened(handlers)
    outputs = handlers.edit("upscale-4", session, **OPTIONS)
    assert "plain Lanczos resize" in outputs[0] and "python -m editor download upscaler" in outputs[0]
    assert session.image.shape[1] == 4 * 451
