"""Honest controls: what a model that is missing turns off, Cancel, progress, uploads, the kept selection."""
from __future__ import annotations

import json
from pathlib import Path

import gradio as gr
import numpy as np
import pytest

from tests.test_browser import CHROMIUM, app_url, page, wait_for_session  # noqa: F401 - fixtures

from editor.engine.ops import Engine
from editor.ui.handlers import (
    CONTROL_OUTPUTS,
    NEEDS_DETECTOR,
    NEEDS_INPAINTER,
    Handlers,
    guard,
    missing_models,
    plain_markdown,
    step_count,
)
from tests.conftest import tiny_config
from tests.test_ui_handlers import OPTIONS, click_at, handlers_for, opened

INPAINT_COMMAND = "python -m editor download inpainter"
DETECTOR_COMMAND = "python -m editor download detector"


def test_without_models_their_controls_are_off_with_the_download_command(fallback_engine: Engine,
                                                                         tmp_path: Path) -> None:
    handlers = handlers_for(fallback_engine, tmp_path)
    missing = missing_models(fallback_engine)
    assert set(missing) == {"inpainter", "detector"}
    outputs = handlers.controls()
    updates = dict(zip(NEEDS_INPAINTER + NEEDS_DETECTOR, outputs[:-1]))
    tips = json.loads(outputs[-1])
    for elem_id in NEEDS_INPAINTER:
        assert updates[elem_id].interactive is False, elem_id
        assert INPAINT_COMMAND in tips[elem_id] and "`" not in tips[elem_id]
    for elem_id in ("select-by-name", "select-text"):
        assert updates[elem_id].interactive is False, elem_id
    for elem_id in NEEDS_DETECTOR:
        assert DETECTOR_COMMAND in tips[elem_id] and "`" not in tips[elem_id]
    assert "drop" not in [value for _, value in updates["click-mode"].choices], "no found box to drop"
    assert len(updates["select-text"].placeholder) <= 40, "the placeholder fits its box"


def test_with_an_inpainting_model_its_controls_are_on(sam_sd2_engine: Engine, tmp_path: Path) -> None:
    handlers = handlers_for(sam_sd2_engine, tmp_path)
    outputs = handlers.controls()
    updates = dict(zip(NEEDS_INPAINTER + NEEDS_DETECTOR, outputs[:-1]))
    tips = json.loads(outputs[-1])
    assert all(updates[elem_id].interactive for elem_id in NEEDS_INPAINTER)
    assert all(tips[elem_id] == "" for elem_id in NEEDS_INPAINTER)
    assert updates["select-by-name"].interactive is False, "no detector in this engine"


def test_messages_show_no_raw_backticks(fallback_engine: Engine, tmp_path: Path) -> None:
    assert plain_markdown("run `python -m editor download detector` now") == f"run {DETECTOR_COMMAND} now"
    handlers = handlers_for(fallback_engine, tmp_path)
    session, _ = opened(handlers)
    status, _canvas = guard(handlers.select_by_name, 2)(session, "cat")
    assert DETECTOR_COMMAND in status and "`" not in status


@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's Chromium")
def test_the_page_shows_missing_models_controls_off_with_tooltips(page) -> None:  # type: ignore[no-untyped-def]
    page.locator("#fill[title]").wait_for(state="attached", timeout=60_000)  # the load event's script ran
    for accordion in ("Options: negative prompt", "Extend canvas: a wider"):
        page.get_by_text(accordion).click()
    for elem_id in ("fill", "background", "outpaint", "select-by-name"):
        button = page.locator(f"#{elem_id}")
        assert button.is_disabled(), elem_id
        command = DETECTOR_COMMAND if elem_id == "select-by-name" else INPAINT_COMMAND
        assert command in (button.get_attribute("title") or ""), elem_id
    assert page.locator("#generative-erase input").is_disabled()
    assert INPAINT_COMMAND in (page.locator("#generative-erase input").get_attribute("title") or "")
    box = page.locator("#select-text textarea, #select-text input").first
    assert box.is_disabled()
    assert box.evaluate("(e) => e.scrollWidth <= e.clientWidth"), "the placeholder is not cut off"
    assert page.get_by_label("Drop a found box").count() == 0
    assert "`" not in page.locator("#backends").inner_text()


def test_progress_counts_one_to_the_steps_asked_for() -> None:
    assert step_count(1, 99, 100) == (1, 100), "strength 0.99 runs 99 of 100 steps: still counted to 100"
    assert step_count(99, 99, 100) == (100, 100)
    assert step_count(396, 396, 100) == (400, 400), "an outpaint's four border pieces, one after the other"
    assert step_count(1, 2, 2) == (1, 2) and step_count(2, 2, 2) == (2, 2)


class Recorder:
    """Stands in for gr.Progress: keeps what the edit reported."""

    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def __call__(self, progress: object, desc: str = "", unit: str = "") -> None:
        if isinstance(progress, tuple):
            self.calls.append(progress)


def test_a_fill_counts_its_steps_from_one_to_n(sam_sd2_engine: Engine, tmp_path: Path) -> None:
    handlers = handlers_for(sam_sd2_engine, tmp_path)
    session, _ = opened(handlers)
    handlers.click(session, "add", click_at(230, 150))
    progress = Recorder()
    handlers.edit("fill", session, **{**OPTIONS, "prompt": "a dog", "steps": 4, "strength": 0.9},
                  progress=progress)  # type: ignore[arg-type]
    assert progress.calls[0][0] >= 1 and progress.calls[-1] == (4, 4), progress.calls


def test_cancel_says_cancelled_without_a_warning(sam_sd2_engine: Engine, tmp_path: Path) -> None:
    handlers = handlers_for(sam_sd2_engine, tmp_path)
    session, _ = opened(handlers)
    handlers.click(session, "add", click_at(230, 150))
    handlers.begin_edit(session)
    assert handlers.cancel(session) == "Cancelled."
    held = session.cancel  # what a running edit holds
    outputs = guard(lambda s: handlers.edit("fill", s, **{**OPTIONS, "prompt": "a dog"}), 8)(session)
    assert outputs[0] == "Cancelled.", "a cancel is what the person asked for, not a warning"
    handlers.edit_ended(session)
    assert held.is_set(), "an edit still in its last step stops there"
    assert not session.cancel.is_set() and len(session.versions) == 1, "the next edit runs"


def test_cancel_drops_the_queued_edits(fallback_engine: Engine, tmp_path: Path) -> None:
    from editor.ui.page import build_ui

    demo = build_ui(fallback_engine, tiny_config(tmp_path))
    config = demo.get_config_file()
    cancelling = [d for d in config["dependencies"] if d["cancels"]]
    assert len(cancelling) == 1, "Cancel, and nothing else, drops edits"
    edits = [d for d in config["dependencies"] if d["id"] in cancelling[0]["cancels"]]
    assert len(edits) == 8, "fill, erase, background, Enter in the prompt, Generate again, outpaint, upscale ×2 and ×4"
    assert all(d["trigger_after"] is not None and len(d["outputs"]) == 8 for d in edits), \
        "the model's step of each edit (after its quick begin step), not the begin step"


def test_a_failed_upload_leaves_the_status_saying_so(fallback_engine: Engine, tmp_path: Path) -> None:
    handlers = handlers_for(fallback_engine, tmp_path)
    session, _ = opened(handlers)
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    status = handlers._open(session, str(text), "notes")[0]
    assert status.startswith("⚠️")
    assert handlers.prepare(session, status) is not None and not str(handlers.prepare(session, status)).startswith(
        "Ready"), "the warning stays on the status line"
    assert handlers.prepare(session, "Opened").startswith("Ready")


def test_the_canvas_clear_button_clears_the_photo(fallback_engine: Engine, tmp_path: Path) -> None:
    handlers = handlers_for(fallback_engine, tmp_path)
    session, _ = opened(handlers)
    handlers.click(session, "add", click_at(230, 150))
    assert "history" in handlers.canvas_cleared(session)
    assert not session.has_image
    status, _canvas = guard(handlers.invert, 2)(session)
    assert status.startswith("⚠️") and "upload a photo" in status, "Invert brings back no tinted photo"
    again = handlers.sessions.get(session.id)  # saved as such: a reload shows no photo either
    assert again is not None and not again.has_image and len(again.versions) == 1
    handlers.goto(session, gr.SelectData(None, {"index": 0, "value": None, "selected": True}))
    assert session.has_image and session.selection.is_empty


def test_enter_in_the_prompt_runs_the_last_used_action(fallback_engine: Engine, tmp_path: Path) -> None:
    """Without a prompt or a model each action refuses in its own words: they say which one ran."""
    handlers = handlers_for(fallback_engine, tmp_path)
    session, _ = opened(handlers)
    options = {**OPTIONS, "generative": False}
    extend = dict(aspect="none", left=0, top=0, right=16, bottom=0)
    enter = guard(lambda s: handlers.edit_last(s, **options, **extend), 8)
    assert enter(session)[0].startswith("⚠️ Fill needs a prompt"), "Fill until another action was used"
    guard(lambda s: handlers.edit("background", s, **options), 8)(session)
    assert enter(session)[0].startswith("⚠️ Replace background needs a prompt")
    guard(lambda s: handlers.outpaint(s, **options, **extend), 8)(session)
    assert enter(session)[0].startswith("⚠️ outpaint needs an inpainting model")
    guard(lambda s: handlers.edit("erase", s, **options), 8)(session)
    assert enter(session)[0].startswith("⚠️ outpaint"), "Erase takes no prompt: Enter repeats the last prompted one"


def test_the_selection_is_kept_after_an_edit_and_reset_by_a_size_change(fallback_engine: Engine,
                                                                        tmp_path: Path) -> None:
    handlers = handlers_for(fallback_engine, tmp_path)
    session, _ = opened(handlers)
    handlers.click(session, "add", click_at(230, 150))
    area = session.selection_mask(fallback_engine.select)
    outputs = handlers.edit("erase", session, **OPTIONS)
    assert outputs[0].startswith("Erase done")
    kept = session.selection_mask(fallback_engine.select)
    assert np.array_equal(kept, area), "the same area stays selected, though its object was erased"
    second = handlers.edit("erase", session, **{**OPTIONS, "seed": 8})  # another try, no new selection
    assert second[0].startswith("Erase done") and len(session.versions) == 3
    handlers.undo(session)
    assert session.selection.is_empty, "history moves reset the selection, as before"
    handlers.click(session, "add", click_at(230, 150))
    handlers.edit("upscale-2", session, **OPTIONS)
    assert session.image.shape[1] == 902 and session.selection.is_empty, "a new size resets it"
