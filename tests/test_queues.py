"""Selection is never queued behind generation, and the canvas never goes blank (issue 13, points 2 and 3).

- the wiring: clicks and the embedding wait in the "select" queue, the edits in the "generate"
  queue, and no event draws its progress over the canvas;
- the gate: on a CPU a generation pauses at its next step while a selection runs;
- through the launched app: a click's latency while another client generates, against an idle one;
- in Chromium: the canvas's image stays present, visible and on top while an edit runs.
"""
from __future__ import annotations

import copy
import json
import statistics
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from editor.core.photo_io import save_png
from editor.core.prompts import Prompts
from editor.engine.ops import EditOptions, Engine
from editor.engine.priority import SelectionFirst
from editor.models.base import ImageRef
from editor.ui.page import GENERATE_QUEUE, SELECT_QUEUE, build_ui, launch_options
from tests.conftest import tiny_config
from tests.test_app_client import free_port
from tests.test_browser import CAT, CHROMIUM, CHROMIUM_ARGS, click_photo, wait_for_session, wait_for_status

SELECTION_EVENTS = {"click", "prepare", "prepare_quietly", "select_by_name", "undo_click", "clear", "invert",
                    "refine", "stroke", "drag_box", "point", "zoom_detail"}


def _by_id(demo: Any, elem_id: str) -> Any:
    return next(block for block in demo.blocks.values() if getattr(block, "elem_id", None) == elem_id)


def test_selection_and_generation_wait_in_separate_queues(fallback_engine: Engine, tmp_path: Path) -> None:
    config = tiny_config(tmp_path, "server.concurrency=3")
    demo = build_ui(fallback_engine, config)
    fns = demo.fns
    named = [fn for fn in fns.values() if fn.name in SELECTION_EVENTS]
    assert {fn.name for fn in named} == SELECTION_EVENTS
    for fn in named:
        assert (fn.concurrency_id, fn.concurrency_limit) == (SELECT_QUEUE, 1), fn.name
    # Each edit button first marks the session busy (at once), then queues the model work.
    begins = {index for index, fn in fns.items() if fn.name == "begin_edit"}
    edits = [fn for fn in fns.values() if fn.trigger_after in begins]
    assert len(edits) == 8  # fill, erase, background, Enter in the prompt, Generate again, extend, upscale x2 and x4
    for fn in edits:
        assert (fn.concurrency_id, fn.concurrency_limit) == (GENERATE_QUEUE, 3)
    api = {fn.api_name: fn.concurrency_id for fn in fns.values()
           if fn.api_name in ("segment", "select_by_text", "fill", "erase", "replace_background")}
    assert api == {"segment": SELECT_QUEUE, "select_by_text": SELECT_QUEUE, "fill": GENERATE_QUEUE,
                   "erase": GENERATE_QUEUE, "replace_background": GENERATE_QUEUE}


def test_no_event_draws_its_progress_over_the_canvas(fallback_engine: Engine, tmp_path: Path) -> None:
    """Gradio draws an event's progress (spinner, queue position, progress bar) over its outputs
    unless told where, hiding the photo: every event that changes the canvas shows it in the status
    line's tracker instead (the page floats it over the photo: test_canvas_browser checks it there)."""
    demo = build_ui(fallback_engine, tiny_config(tmp_path))
    canvas, status = _by_id(demo, "canvas"), _by_id(demo, "status")
    drawing = [fn for fn in demo.fns.values() if any(block._id == canvas._id for block in fn.outputs)]
    assert len(drawing) >= 15
    for fn in drawing:
        assert fn.show_progress == "hidden" or [block._id for block in fn.show_progress_on or []] == [status._id], \
            fn.name


class RecordingSegmenter:
    """The real tiny SAM, recording when each of its calls starts and ends; each call also takes at
    least `hold_s`, as a real decoder would, so that a generation running beside it has steps to
    take meanwhile."""

    def __init__(self, segmenter: Any, events: list[tuple[str, Any]], hold_s: float) -> None:
        self._segmenter, self._events, self._hold_s = segmenter, events, hold_s

    def __getattr__(self, name: str) -> Any:
        return getattr(self._segmenter, name)

    def prepare(self, image: np.ndarray) -> ImageRef:
        return self._segmenter.prepare(image)

    def segment(self, ref: ImageRef, prompts: Prompts) -> Any:
        self._events.append(("select", "start"))
        result = self._segmenter.segment(ref, prompts)
        time.sleep(self._hold_s)
        self._events.append(("select", "end"))
        return result


def _engine_with(engine: Engine, events: list[tuple[str, Any]], gate: SelectionFirst, hold_s: float) -> Engine:
    """The shared test engine's models, with the recording segmenter and its own gate."""
    recorded = copy.copy(engine)
    recorded.segmenter = RecordingSegmenter(engine.segmenter, events, hold_s)
    recorded.priority = gate
    return recorded


def _select_during_fill(engine: Engine, photo: np.ndarray, gate: SelectionFirst) -> list[tuple[str, Any]]:
    """A fill of 60 steps in a thread; once it has taken 3 steps, a click. The events in order."""
    events: list[tuple[str, Any]] = []
    engine = _engine_with(engine, events, gate, hold_s=0.5)
    engine.prepare(photo)  # the click alone is timed, not the embedding
    mask = np.zeros(photo.shape[:2], np.uint8)
    mask[80:160, 110:210] = 255
    started = threading.Event()

    def step(done: int, total: int) -> None:
        events.append(("step", done))
        if done >= 3:
            started.set()

    fill = threading.Thread(target=engine.fill, args=(photo, mask, "a stone", EditOptions(steps=60, seed=1), step))
    fill.start()
    assert started.wait(60)
    engine.select(photo, Prompts(points=((160, 120),), labels=(1,)))
    fill.join(120)
    assert not fill.is_alive()
    return events


def _steps_during_selection(events: list[tuple[str, Any]]) -> int:
    start, end = events.index(("select", "start")), events.index(("select", "end"))
    return sum(1 for kind, _ in events[start:end] if kind == "step")


def test_on_a_cpu_a_generation_pauses_at_its_step_boundary_while_a_click_runs(sam_sd2_engine: Engine,
                                                                               photo: np.ndarray) -> None:
    events = _select_during_fill(sam_sd2_engine, photo, SelectionFirst(enabled=True))
    # At most the one step whose boundary was passed just before the click entered the gate.
    assert _steps_during_selection(events) <= 1, events
    steps = [done for kind, done in events if kind == "step"]
    assert steps == list(range(1, 61)), "the generation goes on afterwards and takes every step"
    assert events.index(("select", "end")) < len(events) - 1, "the click ended before the generation did"


def test_on_a_gpu_the_decoder_runs_beside_the_generation(sam_sd2_engine: Engine, photo: np.ndarray) -> None:
    """The same with the gate off (as on CUDA): the generation takes steps while the click runs,
    which shows that the test above measures the gate and not a slow step."""
    assert not SelectionFirst.for_device("cuda:0").enabled and SelectionFirst.for_device("cpu").enabled
    events = _select_during_fill(sam_sd2_engine, photo, SelectionFirst(enabled=False))
    assert _steps_during_selection(events) >= 3, events


def test_a_cancelled_generation_does_not_wait_for_the_selection() -> None:
    gate, cancel = SelectionFirst(), threading.Event()
    with gate.selecting():
        cancel.set()
        gate.step_boundary(cancel)  # returns: the step raises its cancellation right after
        assert gate.selecting_now
    assert not gate.selecting_now


# --- through the launched app ----------------------------------------------------------------

@pytest.fixture(scope="module")
def app_url(sam_sd2_engine: Engine, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    demo = build_ui(sam_sd2_engine, tiny_config(tmp_path_factory.mktemp("models"), "inpaint.steps=80"))
    port = free_port()
    demo.queue(default_concurrency_limit=1).launch(server_name="127.0.0.1", server_port=port,
                                                   prevent_thread_lock=True, quiet=True, **launch_options())
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        demo.close()


def _click_seconds(client: Any, image: Any, count: int) -> list[float]:
    times = []
    for index in range(count):
        started = time.perf_counter()
        client.predict(image, json.dumps([[150 + index % 20, 120]]), "", api_name="/segment")
        times.append(time.perf_counter() - started)
    return times


def test_a_click_while_another_client_generates_takes_at_most_twice_an_idle_click(
        app_url: str, photo: np.ndarray, tmp_path: Path) -> None:
    """Two gradio_client clients: one fills (100 steps, again and again), the other clicks. The
    median of 15 clicks each, idle and busy, so that a noisy neighbour on the machine moves both."""
    from gradio_client import Client, handle_file

    path, mask_path = tmp_path / "photo.png", tmp_path / "mask.png"
    save_png(photo, path)
    mask = np.zeros(photo.shape[:2], np.uint8)
    mask[80:160, 110:210] = 255
    save_png(mask, mask_path)
    clicker, filler = Client(app_url, verbose=False), Client(app_url, verbose=False)
    image = handle_file(str(path))
    _click_seconds(clicker, image, 3)  # warm: the embedding is cached from here on
    idle = statistics.median(_click_seconds(clicker, image, 15))

    stop, filled = threading.Event(), []

    def generate() -> None:
        while not stop.is_set():
            filled.append(filler.predict(handle_file(str(path)), handle_file(str(mask_path)), "a stone",
                                         json.dumps({"steps": 100, "seed": 1}), api_name="/fill"))

    worker = threading.Thread(target=generate)
    worker.start()
    try:
        time.sleep(1.0)  # the fill is under way
        busy = statistics.median(_click_seconds(clicker, image, 15))
        generating = not filled  # no fill ended yet: each click ran beside a generation
    finally:
        stop.set()
        worker.join(300)
    print(f"click median: idle {idle * 1000:.0f} ms, while another client fills {busy * 1000:.0f} ms")
    assert generating, "the fill was too short to run beside the clicks: raise its steps"
    assert busy <= 2 * idle, f"idle {idle:.3f} s, busy {busy:.3f} s"


# --- in Chromium ------------------------------------------------------------------------------

@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's Chromium: apt-get install chromium")
def test_browser_the_canvas_image_stays_visible_while_an_edit_runs(app_url: str) -> None:
    from PIL import Image
    from playwright.sync_api import sync_playwright

    width, height = Image.open(CAT).size
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        page = browser.new_context(viewport={"width": 1366, "height": 768}).new_page()
        page.goto(app_url)
        wait_for_session(page)
        page.locator("#canvas input[type=file]").set_input_files(str(CAT))
        wait_for_status(page, "Ready")
        click_photo(page, 230, 150, width, height)
        wait_for_status(page, "Selected")
        page.locator("#prompt textarea").fill("a stone")
        page.wait_for_function(CANVAS_ON_TOP, timeout=60_000)  # the selection's drawing has loaded
        page.locator("#fill").click()
        seen, progress_shown = [], False
        while "Fill done" not in page.locator("#status").inner_text():
            seen.append(page.evaluate(CANVAS_ON_TOP))
            progress_shown |= "Generating" in page.locator("#status").inner_text()
            page.wait_for_timeout(100)
        browser.close()
    assert len(seen) >= 5, "the edit was too short to watch: raise its steps"
    assert all(seen), f"the canvas image was hidden or covered in {seen.count(False)} of {len(seen)} looks"
    assert progress_shown, "the progress shows on the status line"


# The canvas's <img> is there, loaded, displayed, and is what the browser finds at its centre (no overlay).
CANVAS_ON_TOP = """() => {
  const img = document.querySelector('#canvas img');
  if (!img || !img.complete || img.naturalWidth === 0) return false;
  const box = img.getBoundingClientRect();
  if (box.width < 50 || box.height < 50 || getComputedStyle(img).visibility !== 'visible') return false;
  return document.elementFromPoint(box.x + box.width / 2, box.y + box.height / 2) === img;
}"""
