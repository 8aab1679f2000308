"""A real browser against the app with no model weights: upload, click, selection drawn, Erase, Undo.

Playwright cannot download its own browser here; it drives Debian's Chromium. Screenshots of
each step are kept in test-artifacts/ for a person to look at after a failure.
"""
from __future__ import annotations

import contextlib
import io
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from editor.engine.ops import Engine
from editor.core.photo_io import load_image
from editor.ui.views import BOX
from editor.ui.page import build_ui, launch_options
from tests.conftest import tiny_config

CHROMIUM = Path("/usr/bin/chromium")
ROOT = Path(__file__).resolve().parent.parent
CAT = ROOT / "assets" / "chelsea.png"
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-quic"]

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's Chromium: apt-get install chromium")


@contextlib.contextmanager
def serving(demo: Any) -> Iterator[str]:
    """The page served on a free loopback port for the block: its URL."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    demo.queue(default_concurrency_limit=1).launch(server_name="127.0.0.1", server_port=port,
                                                   prevent_thread_lock=True, quiet=True, **launch_options())
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        demo.close()


@pytest.fixture(scope="module")
def app_url(fallback_engine: Engine, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with serving(build_ui(fallback_engine, tiny_config(tmp_path_factory.mktemp("models")))) as url:
        yield url


@pytest.fixture(scope="module")
def page(app_url: str):  # type: ignore[no-untyped-def]
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        page = browser.new_context(viewport={"width": 1400, "height": 950}).new_page()
        page.goto(app_url)
        wait_for_session(page)
        yield page
        browser.close()


def wait_for_session(page) -> None:  # type: ignore[no-untyped-def]
    """The page's load event has given the tab its session (kept in the tab's sessionStorage)."""
    page.wait_for_function("() => sessionStorage.getItem('photo-editor-session')", timeout=60_000)


def canvas_pixels(page) -> np.ndarray:  # type: ignore[no-untyped-def]
    """The image the canvas shows, fetched from the server as the browser got it."""
    page.wait_for_function("() => { const img = document.querySelector('#canvas img');"
                           " return img && img.complete && img.naturalWidth > 0; }", timeout=60_000)
    src = page.locator("#canvas img").first.get_attribute("src")
    response = page.request.get(src)
    assert response.ok, f"the canvas image {src} answers {response.status}"
    return np.asarray(Image.open(io.BytesIO(response.body())).convert("RGB"))


def on_photo(page, x: float, y: float, width: int, height: int,  # type: ignore[no-untyped-def]
             zoom: float = 1.0) -> tuple[float, float]:
    """Where photo pixel (x, y) is on the screen now: the photo is centred in the image element, scaled
    down to fit but never up (as Gradio's own click mapping assumes), and the zoom scales the element."""
    box = page.locator("#canvas img").first.bounding_box()
    scale = min(box["width"] / width, box["height"] / height, zoom)
    left = box["x"] + (box["width"] - width * scale) / 2
    top = box["y"] + (box["height"] - height * scale) / 2
    return left + (x + 0.5) * scale, top + (y + 0.5) * scale


def click_photo(page, x: float, y: float, width: int, height: int) -> None:  # type: ignore[no-untyped-def]
    """Click photo pixel (x, y) on the canvas."""
    page.mouse.click(*on_photo(page, x, y, width, height))


def wait_for_status(page, text: str) -> None:  # type: ignore[no-untyped-def]
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    try:
        page.locator("#status", has_text=text).wait_for(timeout=60_000)
    except PlaywrightTimeout:
        page.screenshot(path=str(ARTIFACTS / "timeout.png"))
        pytest.fail(f"waited for a status with {text!r}; the page says {page.locator('#status').inner_text()!r}")


def test_upload_click_erase_undo(page) -> None:  # type: ignore[no-untyped-def]
    original = load_image(CAT, 10**8)
    height, width = original.shape[:2]
    assert "grabcut" in page.locator("#backends").inner_text(), "the page says which fallback selects"

    page.locator("#canvas input[type=file]").set_input_files(str(CAT))
    wait_for_status(page, "Ready")
    page.screenshot(path=str(ARTIFACTS / "1-uploaded.png"))
    assert np.array_equal(canvas_pixels(page), original), "the canvas shows the photo losslessly"

    click_photo(page, 230, 150, width, height)
    wait_for_status(page, "Selected")
    page.screenshot(path=str(ARTIFACTS / "2-selected.png"))
    drawn = canvas_pixels(page)
    assert drawn.shape == original.shape
    changed = np.any(drawn != original, axis=2)
    assert changed[150, 230], "the clicked point is inside the drawn selection"
    assert 0.005 < changed.mean() < 0.9, "a selection is drawn over part of the photo"

    page.locator("#erase").click()
    wait_for_status(page, "Erase done")
    page.wait_for_timeout(400)  # let the update transition finish before the screenshot
    page.screenshot(path=str(ARTIFACTS / "3-erased.png"))
    erased = canvas_pixels(page)
    assert erased.shape == original.shape
    assert np.any(erased[changed] != original[changed]), "the selected object was erased"
    assert np.array_equal(erased[0:10, 0:10], original[0:10, 0:10]), "far corners stay exact"
    assert page.locator("#history img").count() == 2
    page.locator("#clear").click()
    wait_for_status(page, "Selection cleared")
    with_selection, erased = erased, canvas_pixels(page)  # the edited photo alone
    assert tinted_share(with_selection, erased) > 0.005, "the selection was kept after the edit, for another try"

    page.locator("#undo").click()
    wait_for_status(page, "Back to version 1")
    page.screenshot(path=str(ARTIFACTS / "4-undone.png"))
    assert np.array_equal(canvas_pixels(page), original), "Undo restores the photo bit for bit"

    page.locator("#redo").click()
    wait_for_status(page, "Forward to version 2")
    assert np.array_equal(canvas_pixels(page), erased)


def test_a_reload_brings_back_the_photo_and_its_history(page) -> None:  # type: ignore[no-untyped-def]
    """The tab keeps its session id: a reload (or a restart of the app) loses nothing."""
    before = canvas_pixels(page)
    page.reload()
    wait_for_status(page, "Restored")
    page.wait_for_timeout(400)
    assert np.array_equal(canvas_pixels(page), before), "the working version is back, bit for bit"
    assert page.locator("#history img").count() == 2
    other = page.context.new_page()  # another tab of the same browser: a session of its own
    other.goto(page.url)
    wait_for_session(other)
    other.locator("#status", has_text="Drop a photo").wait_for(timeout=60_000)
    assert other.locator("#history img").count() == 0
    assert other.evaluate("() => sessionStorage.getItem('photo-editor-session')") != \
        page.evaluate("() => sessionStorage.getItem('photo-editor-session')")
    other.close()


def test_erase_without_a_selection_warns_and_keeps_the_photo(page) -> None:  # type: ignore[no-untyped-def]
    before = canvas_pixels(page)  # Fill is off without an inpainting model (tests/test_controls.py)
    page.locator("#erase").click()
    wait_for_status(page, "⚠️")
    page.screenshot(path=str(ARTIFACTS / "5-warning.png"))
    assert "Traceback" not in page.content()
    assert np.array_equal(canvas_pixels(page), before)


def image_pixels(page, selector: str) -> list[np.ndarray]:  # type: ignore[no-untyped-def]
    images = page.locator(selector)
    return [np.asarray(Image.open(io.BytesIO(page.request.get(images.nth(i).get_attribute("src")).body()))
                       .convert("RGB")) for i in range(images.count())]


def tinted_share(drawn: np.ndarray, photo: np.ndarray) -> float:
    return float(np.any(drawn != photo, axis=2).mean())


def test_before_after_box_mode_and_brush(page) -> None:  # type: ignore[no-untyped-def]
    """Runs on the erased photo left by the first test: compare, box by two clicks, a brush stroke."""
    original = load_image(CAT, 10**8)
    height, width = original.shape[:2]
    working = canvas_pixels(page)

    page.get_by_role("tab", name="Before / after").click()
    page.locator("#result img").first.wait_for(timeout=30_000)
    shown = image_pixels(page, "#result img")
    assert len(shown) == 2
    assert any(np.array_equal(img, original) for img in shown), "before: the previous version"
    assert any(np.array_equal(img, working) for img in shown), "after: the working photo"

    page.get_by_role("tab", name="Select").click()
    page.locator("#undo").click()  # back to the original, where the cat's face gives GrabCut something to cut
    wait_for_status(page, "Back to version 1")
    page.wait_for_timeout(400)  # let the canvas settle before clicking at photo coordinates
    assert np.array_equal(canvas_pixels(page), original)
    page.get_by_label("Box", exact=True).check()
    click_photo(page, 150, 60, width, height)
    wait_for_status(page, "opposite corner")
    click_photo(page, 330, 240, width, height)
    wait_for_status(page, "Selected")
    boxed = canvas_pixels(page)
    page.screenshot(path=str(ARTIFACTS / "6-box.png"))
    edge = boxed[80:220, 148:153].reshape(-1, 3).astype(int)
    assert (np.abs(edge - np.array(BOX)).sum(axis=1) < 60).any(), "the box is drawn where clicked"
    boxed_share = tinted_share(boxed, original)
    assert boxed_share > 0.05, "the object in the box is selected"

    page.get_by_label("Brush +").check()  # a drag paints into the selection, applied as it ends
    x, y = on_photo(page, 40, 40, width, height)
    page.mouse.move(x, y, steps=3)
    page.mouse.down()
    page.mouse.move(x + 60, y + 40, steps=4)
    assert page.locator("#brush-stroke").is_visible(), "the stroke shows while it is painted"
    page.screenshot(path=str(ARTIFACTS / "7-brush.png"))
    page.mouse.up()
    wait_for_status(page, "Painted into the selection")
    page.wait_for_timeout(400)
    page.screenshot(path=str(ARTIFACTS / "8-brushed.png"))
    assert tinted_share(canvas_pixels(page), original) > boxed_share + 0.005, "the stroke joined the selection"
    page.get_by_label("Object +").check()


def test_select_by_name_without_the_detector_says_how_to_get_it(page) -> None:  # type: ignore[no-untyped-def]
    box = page.locator("#select-text textarea, #select-text input").first
    assert "needs the detector" in (box.get_attribute("placeholder") or "")
    page.locator("#select-by-name[title]").wait_for(state="attached", timeout=60_000)
    assert box.is_disabled() and page.locator("#select-by-name").is_disabled()
    assert "python -m editor download detector" in page.locator("#select-by-name").get_attribute("title")
    page.screenshot(path=str(ARTIFACTS / "9-no-detector.png"))
