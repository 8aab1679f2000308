"""The canvas in Chromium at 1366x768: the page fits, and zoom, pan, a dragged box and the keys change
the selection as they should, read back from the session the server saved."""
from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from editor.engine.ops import Engine
from editor.ui.page import build_ui
from tests.conftest import tiny_config
from tests.test_browser import CAT, CHROMIUM, CHROMIUM_ARGS, on_photo, serving, wait_for_session, wait_for_status

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium")

# Steps 1 to 3 of the page: what a person needs without scrolling.
STEPS = ["#canvas", "#status", "#select-text", "#click-mode", "#undo-click", "#clear", "#invert", "#grow", "#feather",
         "#prompt", "#fill", "#erase", "#background", "#cancel", "#again", "#use-seed", "#options", "#undo", "#redo",
         "#download", "#history"]
WIDTH, HEIGHT = Image.open(CAT).size


@pytest.fixture(scope="module")
def served(fallback_engine: Engine, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """The page's URL and the folder its sessions are saved in."""
    models = tmp_path_factory.mktemp("canvas-models")
    with serving(build_ui(fallback_engine, tiny_config(models))) as url:
        yield url, models / "sessions"


@pytest.fixture
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


def opened_page(browser: Any, url: str, width: int = 1366, height: int = 768, scale: float = 1.0) -> Any:
    page = browser.new_context(viewport={"width": width, "height": height}, device_scale_factor=scale).new_page()
    page.goto(url)
    wait_for_session(page)
    page.locator("#canvas input[type=file]").set_input_files(str(CAT))
    wait_for_status(page, "Ready")
    page.wait_for_function("() => { const img = document.querySelector('#canvas img');"
                           " return img && img.complete && img.naturalWidth > 0; }", timeout=60_000)
    return page


def saved_prompts(page: Any, sessions: Path) -> list[dict[str, Any]]:
    """The prompts of each part of the selection, as the server saved them for this tab's session."""
    session_id = page.evaluate("() => sessionStorage.getItem('photo-editor-session')")
    index = json.loads((sessions / session_id / "index.json").read_text())
    return [part for part in index["selection"]["parts"] if part["points"] or part["box"]]


def wait_for_points(page: Any, sessions: Path, count: int) -> list[list[float]]:
    for _ in range(300):
        prompts = saved_prompts(page, sessions)
        points = [point for part in prompts for point in part["points"]]
        if len(points) == count:
            return points
        page.wait_for_timeout(100)
    pytest.fail(f"expected {count} points in the saved selection, it has {len(points)}; the page says "
                f"{page.locator('#status').inner_text()!r}")


def on_screen(page: Any, x: float, y: float, zoom: float = 1.0) -> tuple[float, float]:
    """Where the cat's photo pixel (x, y) is on the screen now."""
    return on_photo(page, x, y, WIDTH, HEIGHT, zoom)


@pytest.mark.parametrize("width, height, scale", [(1366, 768, 1.0), (1093, 614, 1.25)], ids=["100%", "125%"])
def test_steps_one_to_three_fit_a_laptop_screen(served: tuple[str, Path], browser: Any, width: int, height: int,
                                                 scale: float) -> None:
    """1093x614 at a device scale of 1.25 is a 1366x768 screen with the browser zoomed to 125%."""
    page = opened_page(browser, served[0], width, height, scale)
    for selector in STEPS:
        box = page.locator(selector).first.bounding_box()
        assert box is not None, f"{selector} is not shown"
        assert box["x"] >= 0 and box["y"] >= 0 and box["x"] + box["width"] <= width + 1, selector
        assert box["y"] + min(box["height"], 40) <= height + 1, f"{selector} is below the fold: {box}"
    assert page.evaluate("() => document.scrollingElement.scrollHeight") <= height + 2, "the page does not scroll"
    thumbnail = page.locator("#history img").first.bounding_box()
    assert thumbnail["width"] >= 160, f"history thumbnails are {thumbnail['width']:.0f} px wide"
    canvas = page.locator("#canvas").first.bounding_box()
    assert canvas["height"] >= 0.45 * height, "the canvas takes the height the window has"


def test_the_page_is_centred_on_a_wide_screen(served: tuple[str, Path], browser: Any) -> None:
    page = opened_page(browser, served[0], 2560, 1080)
    workspace = page.locator("#workspace").first.bounding_box()
    left, right = workspace["x"], 2560 - workspace["x"] - workspace["width"]
    assert abs(left - right) <= 24 and workspace["width"] >= 1700, (left, right, workspace["width"])


def test_a_drag_draws_a_box_and_the_keys_undo_redo_and_clear(served: tuple[str, Path], browser: Any) -> None:
    url, sessions = served
    page = opened_page(browser, url)
    start, end = on_screen(page, 150, 80), on_screen(page, 330, 240)
    page.mouse.move(*start)
    page.mouse.down()
    page.mouse.move((start[0] + end[0]) / 2, (start[1] + end[1]) / 2, steps=4)
    assert page.locator("#drag-band").is_visible(), "the box is drawn while dragging"
    page.mouse.move(*end, steps=4)
    page.mouse.up()
    wait_for_status(page, "Selected")
    prompts = saved_prompts(page, sessions)
    assert len(prompts) == 1 and not prompts[0]["points"], "a drag is a box, not a point"
    assert all(abs(got - want) <= 1.0 for got, want in zip(prompts[0]["box"], (150, 80, 330, 240))), prompts
    page.mouse.click(*on_screen(page, 240, 160))
    wait_for_points(page, sessions, 1)
    page.locator("body").click(position={"x": 5, "y": 5})  # the keys act when no box has the focus
    page.keyboard.press("Control+z")
    wait_for_points(page, sessions, 0)
    assert saved_prompts(page, sessions)[0]["box"] is not None, "Ctrl+Z took back the click, not the box"
    page.keyboard.press("Control+Shift+z")
    wait_for_points(page, sessions, 1)
    page.keyboard.press("Escape")
    for _ in range(100):
        if not saved_prompts(page, sessions):
            break
        page.wait_for_timeout(100)
    assert not saved_prompts(page, sessions), "Esc clears the selection"


def test_zoom_and_pan_put_a_click_where_the_pointer_is(served: tuple[str, Path], browser: Any) -> None:
    url, sessions = served
    page = opened_page(browser, url)
    before = page.locator("#canvas img").first.bounding_box()
    centre = on_screen(page, 225, 150)
    page.mouse.move(*centre)
    page.mouse.wheel(0, -500)  # zooms in around the pointer: e^(500 × 0.002) ≈ 2.7x
    page.wait_for_timeout(200)
    zoomed = page.locator("#canvas img").first.bounding_box()
    zoom = zoomed["width"] / before["width"]
    assert zoom == pytest.approx(math.e, rel=0.02)
    assert on_screen(page, 225, 150, zoom) == pytest.approx(centre, abs=1.0), "the point under the pointer stays there"
    assert "%" in page.locator("#zoom-badge").inner_text()
    page.mouse.click(*on_screen(page, 200.3, 140.6, zoom))
    (point,) = wait_for_points(page, sessions, 1)
    # Within a screen pixel (the browser gives whole-pixel mouse positions): 1/zoom of a photo pixel.
    assert point == pytest.approx([200.3, 140.6], abs=1 / zoom), "a zoomed click lands with sub-pixel precision"

    page.keyboard.down(" ")  # Space and a drag pan the photo
    page.mouse.move(*centre)
    page.mouse.down()
    page.mouse.move(centre[0] + 80, centre[1] + 40, steps=5)
    page.mouse.up()
    page.keyboard.up(" ")
    panned = page.locator("#canvas img").first.bounding_box()
    assert (panned["x"] - zoomed["x"], panned["y"] - zoomed["y"]) == pytest.approx((80, 40), abs=1.5)
    assert len(saved_prompts(page, sessions)[0]["points"]) == 1, "a pan is not a click or a box"
    page.mouse.click(*on_screen(page, 180, 120, zoom))
    assert wait_for_points(page, sessions, 2)[1] == pytest.approx([180, 120], abs=1 / zoom)

    page.locator("body").click(position={"x": 5, "y": 5})
    page.keyboard.press("0")
    whole = page.locator("#canvas img").first.bounding_box()
    assert whole == pytest.approx(before, abs=1.0), "0 shows the whole photo again"


def test_the_brush_paints_at_full_resolution_as_it_ends(served: tuple[str, Path], browser: Any) -> None:
    """Zoomed 2.7x, a stroke of a 30 px brush is 5.5 photo pixels wide either side of its line, drawn
    from the pointer's sub-pixel track; a circle shows the brush, ] and [ change it."""
    url, sessions = served
    page = opened_page(browser, url)
    page.get_by_label("Brush +").check()
    before = page.locator("#canvas img").first.bounding_box()
    page.mouse.move(*on_screen(page, 225, 150))
    page.mouse.wheel(0, -500)
    page.wait_for_timeout(200)
    zoom = page.locator("#canvas img").first.bounding_box()["width"] / before["width"]
    start, end = on_screen(page, 200.5, 140.25, zoom), on_screen(page, 250.5, 140.25, zoom)
    page.mouse.move(*start)
    ring = page.locator("#brush-cursor")
    assert ring.is_visible() and ring.bounding_box()["width"] == pytest.approx(24, abs=1), "the brush's circle"
    page.keyboard.press("]")
    assert ring.bounding_box()["width"] == pytest.approx(30, abs=1), "] makes the brush larger"
    page.mouse.down()
    page.mouse.move(*end, steps=8)
    assert page.locator("#brush-stroke").is_visible(), "the stroke shows as it is painted"
    page.mouse.up()
    wait_for_status(page, "Painted into the selection")
    session_id = page.evaluate("() => sessionStorage.getItem('photo-editor-session')")
    for _ in range(100):
        selection = json.loads((sessions / session_id / "index.json").read_text())["selection"]
        if selection["brush_add"]:
            break
        page.wait_for_timeout(100)
    painted = np.load(sessions / session_id / selection["brush_add"]) > 0
    assert painted.shape == (HEIGHT, WIDTH) and not saved_prompts(page, sessions), "a stroke, not a click"
    radius = 15 / zoom  # the brush's 30 screen pixels across, in photo pixels
    rows = np.flatnonzero(painted[:, 225])
    assert rows[0] == pytest.approx(140.25 - radius, abs=1.2) and rows[-1] == pytest.approx(140.25 + radius, abs=1.2)
    columns = np.flatnonzero(painted[140])
    assert columns[0] == pytest.approx(200.5 - radius, abs=1.2) and columns[-1] == pytest.approx(250.5 + radius, abs=1.2)
    assert not page.locator("#brush-stroke").is_visible(), "the canvas shows the stroke once applied"


@pytest.fixture(scope="module")
def served_sd2(sam_sd2_engine: Engine, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The page with tiny SAM and SD 2 inpainting: a Fill of 100 steps runs for seconds."""
    models = tmp_path_factory.mktemp("busy-models")
    with serving(build_ui(sam_sd2_engine, tiny_config(models, "inpaint.steps=100"))) as url:
        yield url


TRACKER = '#status > [data-testid="status-tracker"]:not(.hide)'  # an event's progress, queue position


def fill_running(page: Any) -> bool:
    return page.locator(TRACKER).count() > 0 and page.locator(TRACKER).first.bounding_box() is not None \
        and page.locator(TRACKER).first.bounding_box()["height"] > 0


def start_fill(page: Any) -> None:
    if fill_running(page):
        return
    page.locator("#prompt textarea").fill("a stone")
    page.locator("#fill").click()
    page.wait_for_function(f"() => {{ const t = document.querySelector('{TRACKER}');"
                           " return t && t.getBoundingClientRect().height > 0; }", timeout=30_000)


def timed_click(page: Any, x: float, y: float) -> float:
    """Seconds from a click on photo pixel (x, y) to the canvas showing its selection."""
    import time

    before = page.evaluate("() => document.querySelector('#canvas img').src")
    started = time.perf_counter()
    page.mouse.click(*on_screen(page, x, y))
    page.wait_for_function("(before) => { const img = document.querySelector('#canvas img');"
                           " return img && img.src !== before && img.complete; }", arg=before, timeout=60_000)
    return time.perf_counter() - started


def test_the_photo_stays_and_takes_clicks_while_another_tab_fills(served_sd2: str, browser: Any) -> None:
    """While tab A fills, its photo stays on the canvas with the progress over it (clicks go through),
    and tab B's clicks come back within twice the time they take with nothing else running."""
    import statistics

    filler, clicker = opened_page(browser, served_sd2), opened_page(browser, served_sd2)
    filler.mouse.click(*on_screen(filler, 225, 150))
    wait_for_status(filler, "Selected")
    spots = [(150 + 12 * i, 100 + 7 * (i % 3)) for i in range(8)]
    timed_click(clicker, 225, 150)  # the first click of a photo also warms its caches
    idle = statistics.median(timed_click(clicker, x, y) for x, y in spots)

    start_fill(filler)
    canvas, tracker = filler.locator("#canvas").first.bounding_box(), filler.locator(TRACKER).first.bounding_box()
    assert tracker["y"] >= canvas["y"] and tracker["y"] + tracker["height"] <= canvas["y"] + canvas["height"], \
        "the progress shows over the photo"
    assert filler.evaluate("() => { const img = document.querySelector('#canvas img');"
                           " const r = img.getBoundingClientRect();"
                           " return img.complete && img.naturalWidth > 0 &&"
                           " document.elementFromPoint(r.left + r.width / 2, r.top + 20) === img; }"), \
        "the photo is shown under the progress, and a click there reaches it"
    busy = []
    for x, y in spots:
        start_fill(filler)  # a new one when the last has finished: every click is timed during a fill
        busy.append(timed_click(clicker, x + 3, y + 40))
    assert statistics.median(busy) <= 2 * idle, f"idle clicks {idle:.3f} s, during a fill {busy}"


def test_zoomed_in_the_canvas_shows_the_photo_at_full_resolution(served: tuple[str, Path], browser: Any,
                                                                  tmp_path: Path) -> None:
    """A 2560 px photo is shown from a 1280 px copy: zoomed 4x, the part in view comes at the photo's
    own resolution (two of its pixels to each of the copy's), laid exactly over the frame."""
    from editor.core.photo_io import save_png

    path = tmp_path / "noise.png"
    save_png(np.random.default_rng(1).integers(0, 255, (1500, 2560, 3), dtype=np.uint8), path)
    page = browser.new_context(viewport={"width": 1366, "height": 768}).new_page()
    page.goto(served[0])
    wait_for_session(page)
    page.locator("#canvas input[type=file]").set_input_files(str(path))
    wait_for_status(page, "Ready")
    img = page.locator("#canvas img").first
    box = img.bounding_box()
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.mouse.wheel(0, -700)  # e^1.4: about 4x
    sharp = page.locator("#zoom-sharp")
    sharp.wait_for(state="visible", timeout=30_000)
    shown = page.evaluate("""() => {
      const img = document.querySelector('#canvas img'), sharp = document.getElementById('zoom-sharp');
      const rect = img.getBoundingClientRect(), scale = Math.min(rect.width / img.naturalWidth, rect.height / img.naturalHeight);
      const frame = img.parentElement.getBoundingClientRect(), over = sharp.getBoundingClientRect();
      return {pixels: sharp.naturalWidth / (over.width / scale), frame: [frame.left, frame.top, frame.right, frame.bottom],
              over: [over.left, over.top, over.right, over.bottom]};
    }""")
    assert shown["pixels"] == pytest.approx(2.0, rel=0.05), "two photo pixels to each pixel of the display copy"
    frame, over = shown["frame"], shown["over"]
    assert over[0] <= frame[0] + 1 and over[1] <= frame[1] + 1 and over[2] >= frame[2] - 1 and over[3] >= frame[3] - 1
    assert over[2] - over[0] <= frame[2] - frame[0] + 2 * shown["pixels"] * 4 + 8, "the part in view, not the photo"
    page.keyboard.press("0")
    assert not sharp.is_visible(), "shown whole, the display copy is sharp enough"
    page.mouse.wheel(0, -700)  # the same view again: the same part, found again
    sharp.wait_for(state="visible", timeout=30_000)


def test_an_adobe_rgb_camera_jpeg_keeps_its_profile_exif_and_pixels_through_an_erase(
        served: tuple[str, Path], browser: Any, tmp_path: Path) -> None:
    """As a photographer does it: upload, click the disc, Erase, Download; the file has the photo's
    ICC profile and camera EXIF, and every pixel away from the disc is the decoded JPEG's."""
    from editor.core.photo_io import load_image
    from tests.test_colour import ADOBE_RGB, CAMERA, SATURATED, camera_jpeg, exif_of, icc_of

    jpeg = camera_jpeg(tmp_path / "camera.jpg")
    decoded = load_image(jpeg, 10**8)
    disc = np.all(np.abs(decoded.astype(int) - SATURATED) < 30, axis=2)
    ys, xs = np.nonzero(disc)
    page = browser.new_context(viewport={"width": 1366, "height": 768}, accept_downloads=True).new_page()
    page.goto(served[0])
    wait_for_session(page)
    page.locator("#canvas input[type=file]").set_input_files(str(jpeg))
    wait_for_status(page, "Ready")
    page.mouse.click(*on_photo(page, xs.mean(), ys.mean(), decoded.shape[1], decoded.shape[0]))
    wait_for_status(page, "Selected")
    page.locator("#erase").click()
    wait_for_status(page, "done in")
    with page.expect_download(timeout=60_000) as download:
        page.locator("#download").click()
    path = tmp_path / "download.png"
    download.value.save_as(path)
    assert icc_of(path) == ADOBE_RGB, "the photo's own colour profile"
    exif = exif_of(path)
    assert {tag: exif[tag] for tag in CAMERA} == CAMERA, "the camera's EXIF"
    result = load_image(path, 10**8)
    near = np.zeros(disc.shape, bool)
    near[max(0, ys.min() - 40):ys.max() + 40, max(0, xs.min() - 40):xs.max() + 40] = True
    assert np.array_equal(result[~near], decoded[~near]), "away from the erased disc, bit for bit the photo"
    assert not np.array_equal(result[disc], decoded[disc]), "the disc is erased"
