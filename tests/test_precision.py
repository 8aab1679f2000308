"""Precise selection and quick retries: a dragged box, the undo and redo keys, Generate again, Use this seed."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from editor.core.display import display_scale
from editor.core.errors import EditorError
from editor.engine.ops import Engine
from tests.test_ui_handlers import OPTIONS, click_at, handlers_for, opened, uploads  # noqa: F401 - fixture

BOX = (150, 80, 330, 240)  # around the cat's head in chelsea.png (full resolution = display here)
FILL = dict(OPTIONS, prompt="a red hat")


def test_a_dragged_box_selects_inside_it_in_either_direction(fallback_engine: Engine, tmp_path: Path) -> None:
    handlers = handlers_for(fallback_engine, tmp_path)
    session, _ = opened(handlers)
    x0, y0, x1, y1 = BOX
    status, _canvas = handlers.drag_box(session, json.dumps([x1, y1, x0, y0]))  # dragged up and to the left
    assert session.selection.current.prompts.box == (x0, y0, x1, y1)
    mask = session.selection_mask(fallback_engine.select) > 0
    assert mask.any() and not status.startswith("⚠️")
    outside = np.ones_like(mask)
    outside[y0:y1 + 1, x0:x1 + 1] = False
    assert not mask[outside].any(), "nothing outside the dragged box is selected"


def test_a_dragged_box_maps_from_the_scaled_display_and_is_clamped(fallback_engine: Engine, tmp_path: Path,
                                                                   uploads: Path) -> None:
    from editor.core.photo_io import save_png

    handlers = handlers_for(fallback_engine, tmp_path)
    big = np.zeros((1500, 2560, 3), np.uint8)
    big[600:900, 1100:1500] = (220, 30, 30)
    save_png(big, uploads / "big.png")
    session, _ = opened(handlers, uploads / "big.png")
    assert display_scale(2560, 1500) == 0.5
    handlers.drag_box(session, json.dumps([540, 290, 760, 460]))
    assert session.selection.current.prompts.box == (1080.5, 580.5, 1520.5, 920.5)  # pixel centres
    handlers.drag_box(session, json.dumps([-50, -50, 100, 2000]))  # past the photo's edges
    assert session.selection.current.prompts.box == (0.0, 0.0, 200.5, 1499.0)


@pytest.mark.parametrize("dragged", ["", "[1, 2, 3]", "not json", '["a", 1, 2, 3]', "[0, 0, 1, 1]"])
def test_a_bad_or_thin_dragged_box_is_one_line_and_changes_nothing(fallback_engine: Engine, tmp_path: Path,
                                                                   dragged: str) -> None:
    handlers = handlers_for(fallback_engine, tmp_path)
    session, _ = opened(handlers)
    handlers.click(session, "add", click_at(230, 150))
    before = session.selection
    with pytest.raises(EditorError) as error:
        handlers.drag_box(session, dragged)
    assert "\n" not in str(error.value)
    assert session.selection == before


def test_the_undo_key_takes_back_selection_steps_then_edits_and_redo_brings_them_back(
        fallback_engine: Engine, tmp_path: Path) -> None:
    handlers = handlers_for(fallback_engine, tmp_path)
    session, _ = opened(handlers)
    original = session.image.copy()
    handlers.click(session, "add", click_at(230, 150))
    handlers.edit("erase", session, **OPTIONS)
    erased = session.image.copy()
    handlers.click(session, "add", click_at(40, 40))
    clicked = session.selection
    status = handlers.undo_key(session)[0]
    assert "Selection step undone" in status and session.version.number != 0, "the click first, not the edit"
    undone = handlers.undo_key(session)
    assert len(undone) == 8 and "Back to" in undone[0] and np.array_equal(session.image, original)
    assert "Forward to" in handlers.redo_key(session)[0] and np.array_equal(session.image, erased)
    session.click(50, 50, "add")
    session.undo_click()
    assert "Selection step redone" in handlers.redo_key(session)[0]
    assert session.selection.current.prompts.points[-1] == (50, 50)
    assert clicked != session.selection


def test_a_new_selection_step_ends_what_redo_could_bring_back(fallback_engine: Engine, tmp_path: Path) -> None:
    handlers = handlers_for(fallback_engine, tmp_path)
    session, _ = opened(handlers)
    session.click(230, 150, "add")
    session.click(100, 100, "add")
    session.undo_click()
    assert session.can_redo_click
    session.click(300, 200, "remove")
    assert not session.can_redo_click
    with pytest.raises(EditorError, match="no selection step to redo"):
        session.redo_click()


def test_generate_again_makes_a_sibling_with_a_new_seed_on_the_kept_selection(sam_sd2_engine: Engine,
                                                                              tmp_path: Path) -> None:
    handlers = handlers_for(sam_sd2_engine, tmp_path)
    session, _ = opened(handlers)
    original = session.image.copy()
    handlers.click(session, "add", click_at(230, 150))
    handlers.edit("fill", session, **FILL)
    first = session.version
    mask = session.preview_mask(sam_sd2_engine.select) > 0  # what the paste-back may change
    extend = dict(aspect=None, left=None, top=None, right=None, bottom=None)
    handlers.again(session, *FILL.values(), generative=False, **extend)
    second = session.version
    assert second.parent == first.parent == session.versions[0].number, "a sibling of the first fill, both from the original"
    assert second.metadata["mode"] == "fill" and second.metadata["seed"] != first.metadata["seed"]
    assert np.array_equal(session.image[~mask], original[~mask]), "from the original, exact outside the edit"
    assert not np.array_equal(session.image, session.image_of(first.number))
    status, seed = handlers.use_seed(session)
    assert seed == int(second.metadata["seed"]) and str(seed) in status
    handlers.goto(session, _index_of(session, first.parent))
    handlers.click(session, "add", click_at(230, 150))  # a history move clears the selection: the same click
    handlers.edit("fill", session, **dict(FILL, seed=seed))
    assert np.array_equal(session.image, session.image_of(second.number)), "Use this seed makes it again"


def test_generate_again_and_use_this_seed_refuse_without_an_edit(fallback_engine: Engine, tmp_path: Path) -> None:
    handlers = handlers_for(fallback_engine, tmp_path)
    session, _ = opened(handlers)
    extend = dict(aspect=None, left=None, top=None, right=None, bottom=None)
    with pytest.raises(EditorError, match="nothing to generate again"):
        handlers.again(session, *OPTIONS.values(), generative=False, **extend)
    with pytest.raises(EditorError, match="not made with a seed"):
        handlers.use_seed(session)


def _index_of(session, number: int):  # type: ignore[no-untyped-def]
    import gradio as gr

    index = [version.number for version in session.versions].index(number)
    return gr.SelectData(None, {"index": index, "value": None, "selected": True})
