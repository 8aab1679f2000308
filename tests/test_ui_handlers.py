"""The page's handlers with the tiny models: what a person sees after each step."""
from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import gradio as gr
import numpy as np
import pytest

from editor.core import masks
from editor.engine.ops import Engine
from editor.core.errors import EditorError
from editor.core.photo_io import load_image, read_png_metadata, save_png
from editor.session.store import SessionStore
from editor.ui.handlers import Handlers, canvas_view
from editor.ui.uploads import upload_folder
from tests.conftest import tiny_config

ROOT = Path(__file__).resolve().parent.parent
CAT = ROOT / "assets" / "chelsea.png"
OPTIONS = dict(prompt="", negative="", steps=2, guidance=5.0, strength=1.0, seed=7, count=1)


def click_at(x: int, y: int) -> gr.SelectData:
    return gr.SelectData(None, {"index": [x, y], "value": None, "selected": True})


def handlers_for(engine: Engine, tmp_path: Path) -> Handlers:
    store = SessionStore(tmp_path / "sessions", 256 * 2**20, 3600.0)
    return Handlers(engine, tiny_config(tmp_path), [CAT], store)


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
    upload_folder().mkdir(parents=True, exist_ok=True)  # made by Gradio's first upload, which may not have been
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
    kept = session.selection_mask(fallback_engine.select) > 0
    assert np.array_equal(kept, selected), "the same area stays selected after an edit, for another try"
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
    assert outputs[4].value is None, "the PNG is made after the edit, outside the model's queue"
    path = handlers.download(session).value
    path = path["path"] if isinstance(path, dict) else path
    assert np.array_equal(load_image(path, 10**8), session.image)
    metadata = read_png_metadata(path)
    assert metadata["mode"] == "fill" and metadata["prompt"] == "a dog" and metadata["seed"] == "7"
    handlers.click(session, "add", click_at(100, 100))
    handlers.edit("erase", session, **OPTIONS)
    newer = handlers.download(session).value
    newer = Path(newer["path"] if isinstance(newer, dict) else newer)
    assert np.array_equal(load_image(newer, 10**8), session.image)
    kept = handlers.sessions.folder(session.id) / "downloads"
    assert [p.name for p in kept.glob("*.png")] == [newer.name], "one full-size PNG per session, not one per edit"


def test_variations_appear_and_the_chosen_one_continues(sam_sd2_engine: Engine, tmp_path: Path) -> None:
    handlers = handlers_for(sam_sd2_engine, tmp_path)
    session, _ = opened(handlers)
    handlers.click(session, "add", click_at(230, 150))
    handlers.edit("fill", session, **{**OPTIONS, "prompt": "a dog", "count": 2, "seed": 3})
    first = session.image.copy()
    assert session.variations is not None and session.variations.count == 2
    handlers.choose_variation(session, gr.SelectData(None, {"index": 1, "value": None}))
    assert not np.array_equal(session.image, first)
    assert session.variations.chosen == 1 and session.version.metadata["variation"] == "2 of 2"


@pytest.mark.parametrize("mode, prompt, message", [
    ("fill", "", "needs a prompt"),
    ("erase", "", "selection is empty"),
])
def test_edit_errors_are_one_line_warnings_and_the_session_survives(
        fallback_engine: Engine, tmp_path: Path, mode: str, prompt: str, message: str) -> None:
    from editor.ui.handlers import guard

    handlers = handlers_for(fallback_engine, tmp_path)
    session, _ = opened(handlers)
    if mode == "fill":
        handlers.click(session, "add", click_at(230, 150))
    before = session.image.copy()
    outputs = guard(lambda *a: handlers.edit(mode, *a, **{**OPTIONS, "prompt": prompt}), 8)(session)
    assert outputs[0].startswith("⚠️") and message in outputs[0] and "\n" not in outputs[0]
    assert np.array_equal(session.image, before) and len(session.versions) == 1
    assert not session.edit_running
    handlers.click(session, "add", click_at(230, 150))
    handlers.edit("erase", session, **OPTIONS)
    assert len(session.versions) == 2, "the session keeps working after the error"


def test_fill_without_a_model_names_the_download_command(fallback_engine: Engine, tmp_path: Path) -> None:
    from editor.ui.handlers import guard

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
    assert handlers.cancel(session) == "Cancelled."
    from editor.core.errors import EditCancelled

    with pytest.raises(EditCancelled):
        handlers.edit("fill", session, **{**OPTIONS, "prompt": "a dog", "steps": 4})
    handlers.edit_ended(session)  # chained after the edit on the page
    assert len(session.versions) == 1 and not session.cancel.is_set(), "ready for the next edit"


def test_an_edit_that_never_ran_leaves_nothing_pending(fallback_engine: Engine, tmp_path: Path) -> None:
    """An edit Gradio refused before it started (a value outside a slider's range) used to stay
    pending: after a Cancel, every later edit said "cancelled before it started"."""
    handlers = handlers_for(fallback_engine, tmp_path)
    session, _ = opened(handlers)
    handlers.click(session, "add", click_at(230, 150))
    handlers.begin_edit(session)
    handlers.cancel(session)
    handlers.edit_ended(session)  # the edit itself never ran; its end step runs all the same
    assert not session.edit_running and not session.cancel.is_set()
    handlers.begin_edit(session)
    outputs = handlers.edit("erase", session, **OPTIONS)
    handlers.edit_ended(session)
    assert "Erase done" in outputs[0] and len(session.versions) == 2


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
    from editor.build import build_engine

    engine = build_engine(tiny_config(empty_models_dir, f"segmenter.model={tiny_sam_path}",
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
    from editor.ui.handlers import guard

    handlers = handlers_for(fallback_engine, tmp_path)
    session, _ = opened(handlers)
    status, canvas = guard(handlers.select_by_name, 2)(session, "cat")
    assert status.startswith("⚠️") and "python -m editor download detector" in status
    assert session.selection.is_empty


@pytest.mark.parametrize("grow, feather", [(0, 0), (0, 8), (10, 6), (-4, 3)])
def test_the_band_drawn_on_the_canvas_is_the_band_repainted(fallback_engine: Engine, tmp_path: Path, grow: int,
                                                             feather: int) -> None:
    """One notion of grow: the page's preview of the selection is, pixel for pixel, what the
    paste-back may change (it used to grow the selection a second time by composite.grow)."""
    handlers = handlers_for(fallback_engine, tmp_path)
    session, _ = opened(handlers)
    original = session.image.copy()
    handlers.click(session, "add", click_at(230, 150))
    handlers.refine(session, grow, feather)
    preview = session.preview_mask(fallback_engine.select) > 0
    from editor.engine.ops import EditOptions

    band = fallback_engine.paste_band(session.selection_mask(fallback_engine.select), EditOptions(grow=grow,
                                                                                                 feather=feather))
    assert np.array_equal(preview, band > 0)
    handlers.edit("erase", session, **OPTIONS)
    changed = np.any(session.image != original, axis=2)
    assert changed.any() and not np.any(changed & ~preview), "nothing changed outside what was shown"


def test_editing_an_earlier_version_starts_a_branch_and_keeps_the_later_ones(fallback_engine: Engine,
                                                                              tmp_path: Path) -> None:
    handlers = handlers_for(fallback_engine, tmp_path)
    session, _ = opened(handlers)
    images = [session.image.copy()]
    for x in (120, 230, 330):
        handlers.click(session, "add", click_at(x, 150))
        handlers.edit("erase", session, **OPTIONS)
        images.append(session.image.copy())
    handlers.goto(session, gr.SelectData(None, {"index": 1, "value": None}))
    assert np.array_equal(session.image, images[1])
    handlers.click(session, "add", click_at(60, 60))
    outputs = handlers.edit("erase", session, **OPTIONS)
    assert len(session.versions) == 5, "edits 2 and 3 are still there"
    for number, image in zip([v.number for v in session.versions[:4]], images):
        assert np.array_equal(session.image_of(number), image)
    captions = [item["caption"] for item in outputs[2].value]
    assert len(captions) == 5 and captions[-1].endswith(f"(from {session.versions[1].number})"), captions
    handlers.undo(session)
    assert np.array_equal(session.image, images[1]), "undo goes back to where the branch started"


def test_history_moves_and_uploads_wait_for_a_running_edit(fallback_engine: Engine, tmp_path: Path) -> None:
    """Undo, a history pick or an upload while an edit waits or runs used to make its result land on
    another version (or in another photo's history)."""
    from editor.ui.handlers import guard

    handlers = handlers_for(fallback_engine, tmp_path)
    session, _ = opened(handlers)
    handlers.click(session, "add", click_at(230, 150))
    handlers.edit("erase", session, **OPTIONS)
    first_edit = session.image.copy()
    handlers.click(session, "add", click_at(100, 100))
    handlers.begin_edit(session)  # the page's Erase: the edit now waits in the queue
    for action in (handlers.undo, lambda s: handlers.goto(s, gr.SelectData(None, {"index": 0, "value": None}))):
        outputs = guard(action, 8)(session)
        assert outputs[0].startswith("⚠️") and "edit is running" in outputs[0]
    outputs = handlers.upload(session, {"path": str(ROOT / "assets" / "coffee.png"), "orig_name": "coffee.png"})
    assert outputs[0].startswith("⚠️") and np.array_equal(session.image, first_edit)
    handlers.edit("erase", session, **OPTIONS)
    handlers.edit_ended(session)
    assert session.previous is not None and np.array_equal(session.image_of(session.previous.number), first_edit)
    assert handlers.undo(session) and np.array_equal(session.image, first_edit)


def test_a_result_lands_on_the_version_it_started_from(fallback_engine: Engine, tmp_path: Path) -> None:
    handlers = handlers_for(fallback_engine, tmp_path)
    session, _ = opened(handlers)
    handlers.click(session, "add", click_at(230, 150))
    base = session.version.number
    result = fallback_engine.erase(session.image, session.selection_mask(fallback_engine.select))
    session.open(load_image(ROOT / "assets" / "coffee.png", 10**8), "coffee")  # the photo changed meanwhile
    session.add_result(result.images, result.metadata, "erase", base=base)
    assert session.previous is not None and session.previous.number == base
    assert np.array_equal(session.image, result.images[0])


def test_a_reload_restores_the_photo_history_and_selection(fallback_engine: Engine, tmp_path: Path) -> None:
    handlers = handlers_for(fallback_engine, tmp_path)
    session, _ = opened(handlers)
    handlers.click(session, "add", click_at(230, 150))
    handlers.edit("erase", session, **OPTIONS)
    handlers.click(session, "add", click_at(100, 100))
    edited, selection = session.image.copy(), session.selection
    restarted = handlers_for(fallback_engine, tmp_path)  # a new store over the same folder: an app restart
    outputs = restarted.restore(session.id, None)
    assert outputs[0] == outputs[1] == session.id and "Restored" in outputs[2]
    again = restarted.session(session.id)
    assert np.array_equal(again.image, edited) and len(again.versions) == 2
    assert again.selection.current.prompts == selection.current.prompts
    fresh = restarted.restore("", None)
    assert fresh[0] != session.id and restarted.session(fresh[0]).has_image is False
    with pytest.raises(EditorError, match="still starting"):
        restarted.session(None)  # an event before the page's load gave the tab its session


def test_closing_the_tab_stops_its_edit(sam_sd2_engine: Engine, tmp_path: Path) -> None:
    import threading

    import gradio as gr

    from editor.core.errors import EditCancelled

    handlers = handlers_for(sam_sd2_engine, tmp_path)
    tab = gr.Request(session_hash="tab-1")
    session_id = handlers.restore("", tab)[0]
    session = handlers.session(session_id)
    handlers.upload(session, {"path": str(CAT), "orig_name": CAT.name})
    handlers.click(session, "add", click_at(230, 150))
    steps: list[int] = []
    outcome: list[BaseException] = []

    def progress(value: object, desc: str = "", unit: str = "") -> None:
        steps.append(1)
        if len(steps) == 2:
            handlers.tab_closed(tab)  # the person closes the tab while the model works

    def run() -> None:
        try:
            handlers.edit("fill", session, **{**OPTIONS, "prompt": "a dog", "steps": 50}, progress=progress)
        except EditCancelled as exc:
            outcome.append(exc)

    worker = threading.Thread(target=run)
    worker.start()
    worker.join(120)
    assert outcome and len(steps) < 10, "the generation stopped within a step of the tab closing"
    assert len(session.versions) == 1


def test_every_change_of_the_photo_is_followed_by_its_embedding_and_download(fallback_engine: Engine,
                                                                             tmp_path: Path) -> None:
    """Only uploads used to start an embedding: the first click after an edit or an undo waited for
    one. Now each change of the working photo chains the download PNG (outside the model queue) and
    then the new photo's embedding (in it)."""
    from editor.ui.page import build_ui

    demo = build_ui(fallback_engine, tiny_config(tmp_path))
    functions = demo.fns
    chains = {}
    for index, function in functions.items():
        if function.trigger_after is not None:
            chains[function.trigger_after] = index
    for index, function in functions.items():
        # an edit's chain starts after the history buttons come back
        if function.name not in ("undo", "redo", "goto", "choose_variation", "edit_ended"):
            continue
        follow = [functions[chains[index]]]
        follow.append(functions[chains[chains[index]]])
        assert [f.name for f in follow] == ["download", "prepare_quietly"], function.name
        assert follow[0].concurrency_id not in ("select", "generate") and follow[1].concurrency_id == "select"


def test_after_an_edit_the_next_click_needs_no_new_embedding(sam_sd2_engine: Engine, tmp_path: Path) -> None:
    handlers = handlers_for(sam_sd2_engine, tmp_path)
    session, _ = opened(handlers)
    handlers.click(session, "add", click_at(230, 150))
    encoder_runs: list[int] = []
    hook = sam_sd2_engine.segmenter.model.image_encoder.register_forward_hook(lambda *_: encoder_runs.append(1))
    try:
        handlers.edit("erase", session, **OPTIONS)  # draws the kept selection on the edited photo
        handlers.prepare_quietly(session)  # chained after the edit, in the model queue
        assert len(encoder_runs) == 1, "the edited photo is embedded once, right after the edit"
        handlers.click(session, "add", click_at(100, 100))
        assert len(encoder_runs) == 1, "the click finds its embedding ready"
    finally:
        hook.remove()


def test_a_brush_stroke_is_drawn_at_full_resolution_and_applied_at_once(fallback_engine: Engine, tmp_path: Path,
                                                                      uploads: Path) -> None:
    """A 2560 px photo is shown at 1280: a stroke painted on the display copy lands in the full-resolution
    selection smooth to a pixel of the photo, not in blocks of the display's 2x2 (the old brush's upscale)."""
    handlers = handlers_for(fallback_engine, tmp_path)
    path = uploads / "big-grey.png"
    save_png(np.full((1500, 2560, 3), 128, np.uint8), path)
    session, _ = opened(handlers, path)
    status, canvas = handlers.stroke(session, "paint", "[5, 100, 100.25, 600, 100.25, 600, 400.75]")
    assert "Painted into" in status and canvas.shape == (750, 1280, 3)
    painted = session.selection_mask(fallback_engine.select) > 0
    expected = masks.stroke((1500, 2560), [(200.5, 201.0), (1200.5, 201.0), (1200.5, 802.0)], 10) > 0
    assert np.array_equal(painted, expected)
    rows = np.flatnonzero(painted[:, 700])
    assert (rows[0], rows[-1]) == (191, 211), "a 21 px band: 10 px either side of the line, at full resolution"
    handlers.stroke(session, "unpaint", "[2, 300, 100.25]")  # a dab takes a round spot out
    assert not (session.selection_mask(fallback_engine.select) > 0)[201, 600]
    handlers.undo_click(session)
    assert np.array_equal(session.selection_mask(fallback_engine.select) > 0, expected), "a stroke is one undo step"
    for bad in ("", "[5, 10]", "[0, 10, 10]", "[5, 10, 10, 20]", '["5", 1, 2]'):
        with pytest.raises(EditorError):
            handlers.stroke(session, "paint", bad)
    assert np.array_equal(session.selection_mask(fallback_engine.select) > 0, expected), "a bad stroke changes nothing"


def test_grow_and_soft_edge_are_pixels_of_the_photo_as_shown(fallback_engine: Engine, tmp_path: Path,
                                                             uploads: Path) -> None:
    """Grow 6 on a 2560 px photo (shown at half size) grows the edit by 12 of its pixels, and the
    canvas draws the same band, in shown pixels, as on a photo that is shown whole."""
    handlers = handlers_for(fallback_engine, tmp_path)
    bands = []
    for side, name in ((1280, "small.png"), (2560, "big.png")):
        photo = np.full((side * 3 // 4, side, 3), 128, np.uint8)
        save_png(photo, uploads / name)
        session, _ = opened(handlers, uploads / name)
        handlers.refine(session, 6, 0)
        handlers.stroke(session, "paint", "[20, 640, 480]")  # a disc of 20 shown pixels
        selected = session.selection_mask(fallback_engine.select)
        scale = 1280 / side
        assert np.array_equal(session.edit_mask(fallback_engine.select), masks.grow(selected, round(6 / scale)))
        _, canvas = handlers.refine(session, 6, 4)
        bands.append(np.count_nonzero(np.any(canvas != 128, axis=2)))
    assert bands[1] == pytest.approx(bands[0], rel=0.03), "the band looks the same on both photos"


def test_a_zoomed_canvas_gets_the_part_in_view_at_full_resolution(fallback_engine: Engine, tmp_path: Path,
                                                                   uploads: Path) -> None:
    handlers = handlers_for(fallback_engine, tmp_path)
    rng = np.random.default_rng(3)
    photo = rng.integers(0, 255, (1500, 2560, 3), dtype=np.uint8)  # detail the display copy averages away
    save_png(photo, uploads / "detail.png")
    session, _ = opened(handlers, uploads / "detail.png")
    handlers.refine(session, 0, 0)
    handlers.stroke(session, "paint", "[10, 150, 125]")
    detail, placed = handlers.zoom_detail(session, "[7, 100, 100, 200, 150]")
    assert json.loads(placed) == [7, 100.0, 100.0, 201.0, 151.0]  # the photo pixels 200..401 x 200..301
    assert detail.shape == (102, 202, 3), "every photo pixel in view, not the display copy's"
    selected = session.selection_mask(fallback_engine.select)[200:302, 200:402] > 0
    far = ~(masks.grow(masks.from_bool(selected), 4) > 0)
    assert np.array_equal(detail[far], photo[200:302, 200:402][far]), "outside the selection: the photo itself"
    assert np.any(detail[selected] != photo[200:302, 200:402][selected]), "the selection is drawn on it"
    small, _ = opened(handlers)
    assert handlers.zoom_detail(small, "[1, 10, 10, 50, 50]") == (gr.skip(), gr.skip()), "a photo shown whole has no more"
