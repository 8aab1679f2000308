"""Cut-out: the selection as an RGBA PNG (alpha = the grown, feathered selection), from the engine,
the CLI (`edit --mode cutout`) and the page's "Cut-out PNG" button."""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from editor import cli
from editor.core import composite, masks
from editor.core.errors import SelectionError
from editor.core.photo_io import encode_png, load_image, read_png_metadata, save_png
from editor.core.prompts import Prompts
from editor.engine.ops import EditOptions, Engine
from tests.test_browser import CAT, CHROMIUM, click_photo, wait_for_status
from tests.test_browser import app_url, page  # noqa: F401 - the app in a real browser, for the last test
from tests.test_cli import disc_mask, make_photo
from tests.test_composite import blob_mask, random_photo
from tests.test_ui_handlers import click_at, handlers_for, opened


def read_rgba(path: Path) -> np.ndarray:
    with Image.open(path) as img:
        assert img.format == "PNG" and img.mode == "RGBA"
        return np.asarray(img).copy()


# --- the pure function and the engine --------------------------------------------------------------


@pytest.mark.parametrize("seed", range(6))
def test_cutout_is_the_photo_with_the_alpha_as_given(seed: int) -> None:
    rng = np.random.default_rng(seed)
    height, width = (int(v) for v in rng.integers(1, 90, 2))
    image = random_photo(rng, height, width)
    alpha = rng.integers(0, 256, (height, width), dtype=np.uint8)
    rgba = composite.cutout(image, alpha)
    assert rgba.shape == (height, width, 4) and rgba.dtype == np.uint8
    assert np.array_equal(rgba[..., :3], image) and np.array_equal(rgba[..., 3], alpha)


def test_cutout_refuses_an_alpha_of_another_size() -> None:
    with pytest.raises(ValueError):
        composite.cutout(np.zeros((4, 5, 3), np.uint8), np.zeros((5, 4), np.uint8))


@pytest.mark.parametrize("grow, feather", [(0, 0), (4, 6), (-3, 2), (None, None)])
def test_engine_cutout_alpha_is_the_feathered_selection(fallback_engine: Engine, grow: int | None,
                                                        feather: int | None) -> None:
    photo = make_photo()
    disc = disc_mask()
    rgba = fallback_engine.cutout(photo, disc, EditOptions(grow=grow, feather=feather))
    grow_px = fallback_engine.composite.grow if grow is None else grow
    feather_px = fallback_engine.composite.feather if feather is None else feather
    assert rgba.shape == (240, 320, 4)
    assert np.array_equal(rgba[..., 3], composite.paste_alpha(disc, grow_px, feather_px))
    assert np.array_equal(rgba[..., :3], photo)
    assert rgba[120, 160, 3] == 255 and rgba[0, 0, 3] == 0


def test_engine_cutout_refuses_an_empty_selection(fallback_engine: Engine) -> None:
    photo = make_photo()
    with pytest.raises(SelectionError, match="empty"):
        fallback_engine.cutout(photo, np.zeros(photo.shape[:2], np.uint8))
    speck = np.zeros(photo.shape[:2], np.uint8)
    speck[10, 10] = 255
    with pytest.raises(SelectionError, match="shrinks to nothing"):
        fallback_engine.cutout(photo, speck, EditOptions(grow=-2, feather=0))


@pytest.mark.parametrize("seed", range(3))
def test_rgba_png_round_trip_is_lossless(tmp_path: Path, seed: int) -> None:
    rng = np.random.default_rng(seed)
    image = random_photo(rng, 37, 53)
    rgba = composite.cutout(image, composite.paste_alpha(blob_mask(rng, 37, 53, 12), 2, 5))
    with Image.open(io.BytesIO(encode_png(rgba))) as img:
        assert img.mode == "RGBA" and np.array_equal(np.asarray(img), rgba)
    save_png(rgba, tmp_path / "cut.png", {"mode": "cutout"}, compress_level=1)
    assert np.array_equal(read_rgba(tmp_path / "cut.png"), rgba)
    assert read_png_metadata(tmp_path / "cut.png")["mode"] == "cutout"


# --- the CLI -------------------------------------------------------------------------------------------


def test_cli_edit_cutout_writes_rgba_at_the_photo_size(tmp_path: Path, empty_models_dir: Path,
                                                       fallback_engine: Engine, capsys: pytest.CaptureFixture) -> None:
    photo = make_photo()
    Image.fromarray(photo).save(tmp_path / "photo.png")
    Image.fromarray(disc_mask()).save(tmp_path / "disc.png")
    sets = ["--set", f"models_dir={empty_models_dir}", "--set", "composite.grow=3", "--set", "composite.feather=5"]
    code = cli.main(["edit", str(tmp_path / "photo.png"), "-o", str(tmp_path / "cut.png"), "--mode", "cutout",
                     "--mask", str(tmp_path / "disc.png"), *sets])
    out = capsys.readouterr().out
    assert code == 0 and f"wrote {tmp_path / 'cut.png'} (RGBA cut-out, grow 3 px, soft edge 5 px)" in out
    rgba = read_rgba(tmp_path / "cut.png")
    assert rgba.shape == (240, 320, 4)
    assert np.array_equal(rgba[..., :3], photo)
    assert np.array_equal(rgba[..., 3], composite.paste_alpha(disc_mask(), 3, 5))
    assert read_png_metadata(tmp_path / "cut.png")["mode"] == "cutout"

    # A box selects with the same segmenter as the engine (GrabCut without weights); --invert cuts the rest out.
    code = cli.main(["edit", str(tmp_path / "photo.png"), "-o", str(tmp_path / "rest.png"), "--mode", "cutout",
                     "--box", "100,60,220,180", "--invert", *sets])
    assert code == 0
    selected = fallback_engine.select(photo, Prompts(box=(100, 60, 220, 180)))
    rest = read_rgba(tmp_path / "rest.png")
    assert np.array_equal(rest[..., 3], composite.paste_alpha(masks.invert(selected), 3, 5))


def test_cli_cutout_needs_a_selection(tmp_path: Path, empty_models_dir: Path, capsys: pytest.CaptureFixture) -> None:
    Image.fromarray(make_photo()).save(tmp_path / "photo.png")
    code = cli.main(["edit", str(tmp_path / "photo.png"), "-o", str(tmp_path / "cut.png"), "--mode", "cutout",
                     "--set", f"models_dir={empty_models_dir}"])
    err = capsys.readouterr().err
    assert code == 1 and err.startswith("error: give --mask, --text QUERY") and len(err.splitlines()) == 1
    assert not (tmp_path / "cut.png").exists()


# --- the page --------------------------------------------------------------------------------------------


def test_page_cutout_follows_the_selection(fallback_engine: Engine, tmp_path: Path) -> None:
    handlers = handlers_for(fallback_engine, tmp_path)
    session, _ = opened(handlers)
    off = handlers.cutout(session)
    assert off.value is None and off.interactive is False, "nothing selected: the button is off"

    handlers.click(session, "add", click_at(230, 150))
    first = Path(_path(handlers.cutout(session)))
    rgba = read_rgba(first)
    selection = session.selection_mask(fallback_engine.select)
    assert np.array_equal(rgba[..., :3], session.image), "full resolution, the photo's own pixels"
    assert np.array_equal(rgba[..., 3], composite.paste_alpha(selection, session.grow_px, session.feather_px))
    assert Path(_path(handlers.cutout(session))) == first, "the same selection: the same file, not encoded again"

    handlers.refine(session, 0, 0)  # the grow and soft-edge sliders
    sharp = Path(_path(handlers.cutout(session)))
    assert sharp != first
    kept = handlers.sessions.folder(session.id) / "cutouts"
    assert len(list(kept.glob("*.png"))) == 1, "one cut-out PNG per session, not one per selection"
    assert np.array_equal(read_rgba(sharp)[..., 3], masks.binary(selection))

    handlers.clear(session)
    cleared = handlers.cutout(session)
    assert cleared.value is None and cleared.interactive is False


def test_page_cutout_is_remade_on_each_canvas_change_outside_the_model_queue(fallback_engine: Engine,
                                                                             tmp_path: Path) -> None:
    from editor.core.config import load_config
    from editor.ui.page import build_ui

    demo = build_ui(fallback_engine, load_config(None, [f"server.sessions_dir={tmp_path}"]))
    canvas = next(block for block in demo.blocks.values() if getattr(block, "elem_id", None) == "canvas")
    button = next(block for block in demo.blocks.values() if getattr(block, "elem_id", None) == "cutout")
    assert button.label == "⬇ Cut-out PNG" and button.interactive is False
    (cutout,) = [fn for fn in demo.fns.values() if fn.name == "cutout"]
    assert [(target[0], target[1]) for target in cutout.targets] == [(canvas._id, "change")]
    assert [block._id for block in cutout.outputs] == [button._id]
    assert cutout.concurrency_id != "gpu"


def _path(button: object) -> str:
    value = button.value  # type: ignore[attr-defined]
    return value["path"] if isinstance(value, dict) else value


@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's Chromium: apt-get install chromium")
def test_browser_cutout_button_follows_the_selection(page) -> None:  # type: ignore[no-untyped-def]
    """In a real browser: a change of the canvas made by the server triggers the cut-out (the wiring
    rests on that), and the button downloads the RGBA PNG."""
    button = page.locator("#cutout")
    page.locator("#canvas input[type=file]").set_input_files(str(CAT))
    wait_for_status(page, "Ready")
    assert button.is_disabled(), "nothing selected yet"
    original = load_image(CAT, 10**8)
    click_photo(page, 230, 150, original.shape[1], original.shape[0])
    wait_for_status(page, "Selected")
    page.wait_for_function("() => !document.querySelector('#cutout').disabled", timeout=60_000)
    with page.expect_download() as download:
        button.click()
    with Image.open(download.value.path()) as img:
        assert img.mode == "RGBA" and img.size == original.shape[1::-1]
        rgba = np.asarray(img)
    assert np.array_equal(rgba[..., :3], original)
    assert rgba[150, 230, 3] == 255 and rgba[0, 0, 3] == 0
    page.locator("#clear").click()
    page.wait_for_function("() => document.querySelector('#cutout').disabled", timeout=60_000)
