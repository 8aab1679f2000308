"""The page's handlers with the tiny models: what a person sees after each step."""
from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import gradio as gr
import numpy as np
import pytest

from editor import masks
from editor.engine import Engine
from editor.imageio import load_image, read_png_metadata, save_png
from editor.ui_handlers import Handlers, canvas_view
from editor.uploads import upload_folder
from tests.conftest import tiny_config

ROOT = Path(__file__).resolve().parent.parent
CAT = ROOT / "assets" / "chelsea.png"
OPTIONS = dict(prompt="", negative="", steps=2, guidance=5.0, strength=1.0, seed=7, count=1)


def click_at(x: int, y: int) -> gr.SelectData:
    return gr.SelectData(None, {"index": [x, y], "value": None, "selected": True})


def handlers_for(engine: Engine, tmp_path: Path) -> Handlers:
    return Handlers(engine, tiny_config(tmp_path), [CAT], tmp_path / "work")


def opened(handlers: Handlers, path: Path = CAT):  # type: ignore[no-untyped-def]
    session = handlers.new_session()
    outputs = handlers.upload(session, {"path": str(path), "orig_name": path.name})
    return session, outputs


def test_upload_keeps_the_full_resolution_original_and_shows_it(fallback_engine: Engine, tmp_path: Path) -> None:
    handlers = handlers_for(fallback_engine, tmp_path)
    session, outputs = opened(handlers)
    status, canvas = outputs[0], outputs[1]
    assert np.array_equal(session.image, load_image(CAT, 10**8))
    assert np.array_equal(canvas, session.image), "no selection yet: the canvas is the photo itself"
    assert "451×300" in status
    assert handlers.prepare(session).startswith("Ready")


@pytest.fixture
def uploads() -> Iterator[Path]:
    """A folder in Gradio's upload cache, where the page's uploads land (others are refused)."""
    folder = Path(tempfile.mkdtemp(dir=upload_folder()))
    yield folder
    shutil.rmtree(folder)


def test_a_bad_upload_is_a_warning_and_keeps_the_photo(fallback_engine: Engine, tmp_path: Path,
                                                       uploads: Path) -> None:
    handlers = handlers_for(fallback_engine, tmp_path)
    session, _ = opened(handlers)
    before = session.image.copy()
    broken = uploads / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    outputs = handlers.upload(session, {"path": str(broken), "orig_name": "broken.png"})
    assert outputs[0].startswith("⚠️") and "broken.png" in outputs[0]
    assert np.array_equal(session.image, before)


def test_click_draws_the_selection_then_erase_undo_redo(fallback_engine: Engine, tmp_path: Path) -> None:
    handlers = handlers_for(fallback_engine, tmp_path)
    session, _ = opened(handlers)
    original = session.image.copy()
    status, canvas = handlers.click(session, "add", click_at(230, 150))
    assert status.startswith("Selected") and "%" in status
    assert canvas.shape == original.shape and not np.array_equal(canvas, original), "the selection is drawn"
    selected = session.selection_mask(fallback_engine.select) > 0
    assert selected[150, 230]

    outputs = handlers.edit("erase", session, **OPTIONS)
    assert "Erase done" in outputs[0] and "seed" in outputs[0]
    edited = session.image
    assert not np.array_equal(edited, original)
    reach = handlers.config.composite.grow + session.feather_px
    band = masks.grow(selected.astype(np.uint8) * 255, reach) > 0
    assert np.array_equal(edited[~band], original[~band]), "pixels outside the edit are exact"
    assert session.selection.is_empty, "the selection resets after an edit"
    assert len(outputs[2].value) == 2, "history shows the original and the edit"

    handlers.undo(session)
    assert np.array_equal(session.image, original)
    handlers.redo(session)
    assert np.array_equal(session.image, edited)


def test_download_is_the_full_resolution_png_with_metadata(sam_sd2_engine: Engine, tmp_path: Path) -> None:
    handlers = handlers_for(sam_sd2_engine, tmp_path)
    session, _ = opened(handlers)
    handlers.click(session, "add", click_at(230, 150))
    outputs = handlers.edit("fill", session, **{**OPTIONS, "prompt": "a dog"})
    path = outputs[4].value
    path = path["path"] if isinstance(path, dict) else path
    assert np.array_equal(load_image(path, 10**8), session.image)
    metadata = read_png_metadata(path)
    assert metadata["mode"] == "fill" and metadata["prompt"] == "a dog" and metadata["seed"] == "7"


def test_variations_appear_and_the_chosen_one_continues(sam_sd2_engine: Engine, tmp_path: Path) -> None:
    handlers = handlers_for(sam_sd2_engine, tmp_path)
    session, _ = opened(handlers)
    handlers.click(session, "add", click_at(230, 150))
    handlers.edit("fill", session, **{**OPTIONS, "prompt": "a dog", "count": 2, "seed": 3})
    first = session.image.copy()
    assert session.variations is not None and len(session.variations.images) == 2
    handlers.choose_variation(session, gr.SelectData(None, {"index": 1, "value": None}))
    assert not np.array_equal(session.image, first)
    assert np.array_equal(session.image, session.variations.images[1])


@pytest.mark.parametrize("mode, prompt, message", [
    ("fill", "", "needs a prompt"),
    ("erase", "", "selection is empty"),
])
def test_edit_errors_are_one_line_warnings_and_the_session_survives(
        fallback_engine: Engine, tmp_path: Path, mode: str, prompt: str, message: str) -> None:
    from editor.ui_handlers import guard

    handlers = handlers_for(fallback_engine, tmp_path)
    session, _ = opened(handlers)
    if mode == "fill":
        handlers.click(session, "add", click_at(230, 150))
    before = session.image.copy()
    outputs = guard(lambda *a: handlers.edit(mode, *a, **{**OPTIONS, "prompt": prompt}), 8)(session)
    assert outputs[0].startswith("⚠️") and message in outputs[0] and "\n" not in outputs[0]
    assert np.array_equal(session.image, before) and len(session.versions) == 1
    assert session.edits_pending == 0
    handlers.click(session, "add", click_at(230, 150))
    handlers.edit("erase", session, **OPTIONS)
    assert len(session.versions) == 2, "the session keeps working after the error"


def test_fill_without_a_model_names_the_download_command(fallback_engine: Engine, tmp_path: Path) -> None:
    from editor.ui_handlers import guard

    handlers = handlers_for(fallback_engine, tmp_path)
    session, _ = opened(handlers)
    handlers.click(session, "add", click_at(230, 150))
    outputs = guard(lambda s: handlers.edit("fill", s, **{**OPTIONS, "prompt": "a dog"}), 8)(session)
    assert "python -m editor download inpaint" in outputs[0]
    assert session.selection.current.prompts.points, "the selection is kept for another try"


def test_cancel_stops_a_running_edit(sam_sd2_engine: Engine, tmp_path: Path) -> None:
    handlers = handlers_for(sam_sd2_engine, tmp_path)
    session, _ = opened(handlers)
    handlers.click(session, "add", click_at(230, 150))
    handlers.begin_edit(session)
    assert handlers.cancel(session).startswith("Cancelling")
    from editor.errors import EditCancelled

    with pytest.raises(EditCancelled):
        handlers.edit("fill", session, **{**OPTIONS, "prompt": "a dog", "steps": 4})
    assert len(session.versions) == 1 and not session.cancel.is_set(), "ready for the next edit"


def test_two_sessions_never_see_each_other(fallback_engine: Engine, tmp_path: Path) -> None:
    handlers = handlers_for(fallback_engine, tmp_path)
    coffee = ROOT / "assets" / "coffee.png"
    alice, _ = opened(handlers, CAT)
    bob, _ = opened(handlers, coffee)
    handlers.click(alice, "add", click_at(230, 150))
    handlers.edit("erase", alice, **OPTIONS)
    assert len(alice.versions) == 2 and len(bob.versions) == 1
    assert bob.selection.is_empty
    assert np.array_equal(bob.image, load_image(coffee, 10**8))


def test_big_photos_are_shown_scaled_and_clicks_map_back(fallback_engine: Engine, tmp_path: Path,
                                                         uploads: Path) -> None:
    handlers = handlers_for(fallback_engine, tmp_path)
    big = np.zeros((1500, 2560, 3), np.uint8)
    big[600:900, 1100:1500] = (220, 30, 30)
    path = uploads / "big.png"
    save_png(big, path)
    session, outputs = opened(handlers, path)
    assert outputs[1].shape == (750, 1280, 3)
    handlers.click(session, "add", click_at(650, 375))  # the red block's centre on the display copy
    x, y = session.selection.current.prompts.points[0]
    assert abs(x - 1300) <= 2 and abs(y - 750) <= 2
    assert canvas_view(session, None).shape == (750, 1280, 3)


def test_grow_and_soft_edge_sliders_show_on_the_canvas(fallback_engine: Engine, tmp_path: Path) -> None:
    handlers = handlers_for(fallback_engine, tmp_path)
    session, _ = opened(handlers)
    original = session.image.copy()
    handlers.refine(session, 0, 0)
    _, plain = handlers.click(session, "add", click_at(230, 150))
    selected = session.selection_mask(fallback_engine.select)
    ring = (masks.grow(selected, 12) > 0) & ~(masks.grow(selected, 4) > 0)  # beyond the outline
    assert np.array_equal(plain[ring], original[ring]), "no grow, no soft edge: nothing drawn around"
    _, grown = handlers.refine(session, 10, 6)
    assert np.any(grown[ring] != original[ring]), "the grown selection and its soft edge are drawn"
    far = ~(masks.grow(selected, 10 + 6 + 4) > 0)
    assert np.array_equal(grown[far], original[far])
    assert np.array_equal(session.edit_mask(fallback_engine.select), masks.grow(selected, 10))


def test_select_by_name_draws_the_named_boxes_and_clicks_refine(empty_models_dir: Path, tiny_sam_path: Path,
                                                               tiny_detector_dir: Path, tmp_path: Path) -> None:
    from editor.backends import build_engine

    engine = build_engine(tiny_config(empty_models_dir, f"sam.checkpoint={tiny_sam_path}",
                                      f"detector.model={tiny_detector_dir}", "detector.box_threshold=0",
                                      "detector.text_threshold=0", "detector.max_detections=3"), show_progress=False)
    handlers = handlers_for(engine, tmp_path)
    session, _ = opened(handlers)
    status, canvas = handlers.select_by_name(session, "Cat, dog")
    detected = [part for part in session.selection.parts if part.label]
    assert len(detected) == 3 and status.startswith("Found 3: ")
    for part in detected:
        assert part.label in status and part.label.split()[0] in ("cat", "dog")
    assert np.array_equal(canvas, canvas_view(session, session.selection_mask(engine.select)))
    assert not np.array_equal(canvas, canvas_view(session, None)), "the selection is drawn"
    photo_only = session.image.copy()
    handlers.undo_click(session)
    assert session.selection.is_empty and np.array_equal(session.image, photo_only)


def test_select_by_name_without_the_detector_says_how_to_get_it(fallback_engine: Engine, tmp_path: Path) -> None:
    from editor.ui_handlers import guard

    handlers = handlers_for(fallback_engine, tmp_path)
    session, _ = opened(handlers)
    status, canvas = guard(handlers.select_by_name, 2)(session, "cat")
    assert status.startswith("⚠️") and "python -m editor download detector" in status
    assert session.selection.is_empty
