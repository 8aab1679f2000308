"""The launched app through `gradio_client`: the documented stateless endpoints."""
from __future__ import annotations

import json
import socket
import struct
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from gradio_client import Client, handle_file
from PIL import Image

from editor.core import masks
from editor.core.config import LimitsConfig
from editor.engine.ops import EditOptions, Engine
from editor.core.photo_io import load_image, load_mask, save_png
from editor.ui.page import build_ui
from editor.ui.uploads import REFUSED
from tests.conftest import tiny_config

ROOT = Path(__file__).resolve().parent.parent
CAT = ROOT / "assets" / "chelsea.png"
ENDPOINTS = {"/segment", "/select_by_text", "/fill", "/erase", "/replace_background"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def serve(engine: Engine, models_dir: Path) -> tuple[Any, str]:
    demo = build_ui(engine, tiny_config(models_dir))
    port = free_port()
    demo.queue(default_concurrency_limit=1).launch(server_name="127.0.0.1", server_port=port,
                                                   prevent_thread_lock=True, quiet=True)
    return demo, f"http://127.0.0.1:{port}/"


@pytest.fixture(scope="module")
def app_url(sam_sd2_engine: Engine, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    demo, url = serve(sam_sd2_engine, tmp_path_factory.mktemp("models"))
    try:
        yield url
    finally:
        demo.close()


@pytest.fixture(scope="module")
def client(app_url: str) -> Client:
    return Client(app_url, verbose=False)


def call_raw(url: str, api_name: str, data: list[Any]) -> tuple[str, Any]:
    """One call over plain HTTP, as any program could send it: (last event, its data)."""
    posted = httpx.post(f"{url}gradio_api/call/{api_name}", json={"data": data}, timeout=30)
    if posted.status_code != 200:
        return f"http {posted.status_code}", posted.text
    answer = httpx.get(f"{url}gradio_api/call/{api_name}/{posted.json()['event_id']}", timeout=120).text
    events = [line[len("event: "):] for line in answer.splitlines() if line.startswith("event: ")]
    datas = [line[len("data: "):] for line in answer.splitlines() if line.startswith("data: ")]
    return events[-1], json.loads(datas[-1])


def upload_raw(url: str, path: Path) -> dict[str, Any]:
    """Upload a file the way a client does: the payload that names it afterwards."""
    with path.open("rb") as handle:
        answer = httpx.post(f"{url}gradio_api/upload", files={"files": (path.name, handle)}, timeout=30)
    return {"path": answer.json()[0], "orig_name": path.name, "meta": {"_type": "gradio.FileData"}}


def gallery_images(gallery: list[dict[str, Any]]) -> list[np.ndarray]:
    return [load_image(item["image"], 10**8) for item in gallery]


def test_only_the_documented_endpoints_are_public(client: Client) -> None:
    info = client.view_api(print_info=False, return_format="dict")
    assert set(info["named_endpoints"]) == ENDPOINTS
    assert not info["unnamed_endpoints"]


def test_segment_returns_a_mask_of_the_photo_size(client: Client) -> None:
    photo = load_image(CAT, 10**8)
    path = client.predict(handle_file(str(CAT)), json.dumps([[230, 150], [20, 20, 0]]), "", api_name="/segment")
    mask = load_mask(path, (photo.shape[1], photo.shape[0]), 10**8)
    assert mask.shape == photo.shape[:2]
    boxed = client.predict(handle_file(str(CAT)), "", json.dumps([100, 50, 300, 250]), api_name="/segment")
    assert load_mask(boxed, (photo.shape[1], photo.shape[0]), 10**8).any()


def test_fill_erase_and_background_keep_the_rest_exact(client: Client, tmp_path: Path) -> None:
    photo = load_image(CAT, 10**8)
    mask = np.zeros(photo.shape[:2], np.uint8)
    mask[120:180, 200:260] = 255
    mask_path = tmp_path / "mask.png"
    save_png(mask, mask_path)
    band = masks.grow(mask, 16) > 0
    options = json.dumps({"steps": 2, "seed": 11})

    filled, info = client.predict(handle_file(str(CAT)), handle_file(str(mask_path)), "a dog", options,
                                  api_name="/fill")
    [result] = gallery_images(filled)
    assert result.shape == photo.shape and np.array_equal(result[~band], photo[~band])
    assert info["mode"] == "fill" and info["seed"] == "11" and info["prompt"] == "a dog"
    assert info["variations"] == [{"variation": 1, "seed": 11}]

    erased, info = client.predict(handle_file(str(CAT)), handle_file(str(mask_path)), options, api_name="/erase")
    assert np.array_equal(gallery_images(erased)[0][~band], photo[~band]) and info["mode"] == "erase"

    replaced, info = client.predict(handle_file(str(CAT)), handle_file(str(mask_path)), "a beach", options,
                                    api_name="/replace_background")
    subject = mask > 0
    assert np.array_equal(gallery_images(replaced)[0][subject], photo[subject])
    assert info["mode"] == "background"


def test_every_variation_comes_back_with_its_number_and_seed(client: Client, sam_sd2_engine: Engine,
                                                             tmp_path: Path) -> None:
    photo = load_image(CAT, 10**8)
    mask = np.zeros(photo.shape[:2], np.uint8)
    mask[120:180, 200:260] = 255
    mask_path = tmp_path / "mask.png"
    save_png(mask, mask_path)
    band = masks.grow(mask, 16) > 0
    for api_name, prompt in (("/fill", ["a dog"]), ("/erase", []), ("/replace_background", ["a beach"])):
        gallery, info = client.predict(handle_file(str(CAT)), handle_file(str(mask_path)), *prompt,
                                       json.dumps({"steps": 2, "seed": 5, "num_images": 3}), api_name=api_name)
        images = gallery_images(gallery)
        assert len(images) == 3, api_name
        assert info["variations"] == [{"variation": n, "seed": 5} for n in (1, 2, 3)]
        assert [item["caption"] for item in gallery] == [f"variation {n} · seed 5" for n in (1, 2, 3)]
        keep = mask > 0 if api_name == "/replace_background" else ~band
        assert all(np.array_equal(image[keep], photo[keep]) for image in images)
        assert not np.array_equal(images[0], images[1]), "each variation is its own picture"
    alone = sam_sd2_engine.fill(photo, mask, "a dog", EditOptions(steps=2, seed=5, num_images=3))
    gallery, _ = client.predict(handle_file(str(CAT)), handle_file(str(mask_path)), "a dog",
                                json.dumps({"steps": 2, "seed": 5, "num_images": 3}), api_name="/fill")
    assert all(np.array_equal(a, b) for a, b in zip(gallery_images(gallery), alone.images))


def test_bad_requests_get_readable_errors(client: Client, tmp_path: Path) -> None:
    mask_path = tmp_path / "wrong-size.png"
    save_png(np.full((10, 10), 255, np.uint8), mask_path)
    good_mask = tmp_path / "good.png"
    save_png(np.full((300, 451), 255, np.uint8), good_mask)
    cases = [
        (lambda: client.predict(handle_file(str(CAT)), "[[5000, 5]]", "", api_name="/segment"), "outside"),
        (lambda: client.predict(handle_file(str(CAT)), "not json", "", api_name="/segment"), "not valid JSON"),
        (lambda: client.predict(handle_file(str(CAT)), "cat", api_name="/select_by_text"),
         "python -m editor download detector"),
        (lambda: client.predict(handle_file(str(CAT)), handle_file(str(mask_path)), "", "{}", api_name="/fill"),
         "mask"),
        (lambda: client.predict(handle_file(str(CAT)), handle_file(str(good_mask)), '{"stepz": 3}',
                                api_name="/erase"), "unknown option"),
    ]
    for call, message in cases:
        with pytest.raises(Exception, match=message):
            call()


def test_page_loads_never_copy_the_models(sam_sd2_engine: Engine, tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """Gradio deep-copies each State's value and callbacks for /config and per tab: when those held
    the handlers (and so the engine), every page load copied SAM and the pipeline."""
    import concurrent.futures
    import time
    import urllib.request

    import gradio as gr

    copies: list[int] = []

    def count_copy(self: Engine, memo: dict) -> Engine:  # Gradio swallows errors here, so count instead
        copies.append(1)
        return self

    monkeypatch.setattr(Engine, "__deepcopy__", count_copy, raising=False)
    demo = build_ui(sam_sd2_engine, tiny_config(tmp_path))
    state = next(block for block in demo.blocks.values() if isinstance(block, gr.State))
    assert state.value is None, "the state holds a session id, plain data"
    port = free_port()
    demo.queue().launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)

    def load_config() -> float:
        started = time.perf_counter()
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/config", timeout=30) as response:
            assert response.status == 200 and b"Photo editor" in response.read()
        return time.perf_counter() - started

    try:
        load_config()  # the first answer builds what every later one reuses
        before = resident_bytes()
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            took = list(pool.map(lambda _: load_config(), range(8)))
        grew = resident_bytes() - before
    finally:
        demo.close()
    assert not copies, f"the engine was deep-copied {len(copies)} times"
    assert max(took) < 1.0, took
    assert grew < 100 * 2**20, f"the server grew by {grew / 2**20:.0f} MB"


def resident_bytes() -> int:
    """This process's resident memory (Linux)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def test_app_settings_flags_and_login_from_the_environment(tmp_path: Path) -> None:
    import app

    config = app.settings(app.parse_args(["--config", str(ROOT / "config.yaml"), "--set", "server.concurrency=2",
                                          "--host", "0.0.0.0", "--port", "8123", "--share"]))
    assert (config.server.host, config.server.port, config.server.share, config.server.concurrency) == \
        ("0.0.0.0", 8123, True, 2)
    defaults = app.settings(app.parse_args(["--config", str(ROOT / "config.yaml")])).server
    assert (defaults.host, defaults.port, defaults.share) == ("127.0.0.1", 7860, False)
    assert app.auth_from_env({}) is None
    assert app.auth_from_env({"EDITOR_USERNAME": "ann", "EDITOR_PASSWORD": "pw"}) == ("ann", "pw")
    with pytest.raises(Exception, match="set both"):
        app.auth_from_env({"EDITOR_USERNAME": "ann"})


@pytest.mark.parametrize("argv, message", [
    (["--config", "no-such-file.yaml"], "config file not found"),
    (["--set", "server.port=many"], "server.port"),
])
def test_app_bad_config_is_one_line_and_exit_1(argv: list[str], message: str,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    import app

    assert app.main(argv) == 1
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err


def test_python_app_py_serves_the_editor_with_the_fallbacks(tmp_path: Path) -> None:
    """`python app.py` with no weights: the page comes up on 127.0.0.1 and names the fallbacks."""
    import os
    import subprocess
    import sys
    import time
    import urllib.request

    port = free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    env.pop("EDITOR_USERNAME", None)
    env.pop("EDITOR_PASSWORD", None)
    process = subprocess.Popen([sys.executable, "app.py", "--port", str(port), "--set", f"models_dir={tmp_path}",
                                "--set", "device=cpu", "--set", f"server.sessions_dir={tmp_path / 'sessions'}"],
                               cwd=ROOT, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 90
        page = ""
        while time.monotonic() < deadline and process.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/config", timeout=2) as response:
                    page = response.read().decode()
                break
            except OSError:
                time.sleep(0.5)
        assert page, f"the app did not come up: {process.stdout.read() if process.poll() is not None else ''}"
        assert "grabcut (edgetam is not here" in page and "python -m editor download inpainter" in page
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_app_on_a_taken_port_is_one_line_and_exit_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import app

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert app.main(["--port", str(port), "--set", f"models_dir={tmp_path}", "--set", "device=cpu",
                         "--set", f"server.sessions_dir={tmp_path / 'sessions'}"]) == 1
    err = capsys.readouterr().err
    assert f"error: cannot serve on 127.0.0.1:{port}" in err and "Traceback" not in err


@pytest.mark.parametrize("model, concurrency", [("sd2", 1), ("sd2", 4), ("sdxl", 4)])
def test_eight_users_filling_at_once_each_get_their_own_result(model: str, concurrency: int, tiny_sam_path: Path,
                                                               tiny_sd2_dir: Path, tiny_sdxl_dir: Path,
                                                               empty_models_dir: Path, tmp_path: Path) -> None:
    """server.concurrency at 1 and 4, and eight gradio_client users, each with their own photo, mask, steps
    and seed: each result is the one the same edit gives alone, and exact outside its own mask.
    (The one shared pipeline used to mix their schedulers: wrong images on SD 2, IndexError on SDXL.)"""
    import concurrent.futures

    from editor.build import build_engine
    from editor.engine.ops import EditOptions

    model_dir = tiny_sd2_dir if model == "sd2" else tiny_sdxl_dir
    config = tiny_config(empty_models_dir, f"segmenter.model={tiny_sam_path}", f"inpaint.model={model_dir}",
                         f"server.concurrency={concurrency}", f"server.sessions_dir={tmp_path / 'sessions'}")
    engine = build_engine(config, show_progress=False)
    rng = np.random.default_rng(5)
    users = []
    for user in range(8):
        photo = rng.integers(0, 256, (96 + 8 * user, 128, 3), dtype=np.uint8)
        mask = np.zeros(photo.shape[:2], np.uint8)
        mask[20 + user:60, 30:70 + user] = 255
        photo_path, mask_path = tmp_path / f"photo{user}.png", tmp_path / f"mask{user}.png"
        save_png(photo, photo_path)
        save_png(mask, mask_path)
        options = {"steps": 2 + user % 3, "seed": 100 + user}
        users.append((photo, mask, photo_path, mask_path, options))
    alone = [engine.fill(photo, mask, f"thing {i}", EditOptions(**options)).images[0]
             for i, (photo, mask, _, _, options) in enumerate(users)]

    demo = build_ui(engine, config)
    port = free_port()
    demo.queue(default_concurrency_limit=concurrency).launch(server_name="127.0.0.1", server_port=port,
                                                             prevent_thread_lock=True, quiet=True)

    def fill(i: int) -> np.ndarray:
        _, _, photo_path, mask_path, options = users[i]
        client = Client(f"http://127.0.0.1:{port}/", verbose=False)
        result, _ = client.predict(handle_file(str(photo_path)), handle_file(str(mask_path)), f"thing {i}",
                                   json.dumps(options), api_name="/fill")
        return gallery_images(result)[0]

    try:
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            results = list(pool.map(fill, range(8)))
    finally:
        demo.close()
    for i, ((photo, mask, *_), result, expected) in enumerate(zip(users, results, alone)):
        band = masks.grow(mask, engine.composite.grow + engine.composite.feather) > 0
        assert np.array_equal(result[~band], photo[~band]), f"user {i}: exact outside the edit"
        assert np.array_equal(result, expected), f"user {i}: the same image as the edit alone"



# --- files: only what was uploaded ------------------------------------------------------------------


@pytest.mark.parametrize("form", ["plain path", "path with meta", "file URL as path", "file URL as url"])
def test_a_request_cannot_read_a_file_it_did_not_upload(app_url: str, tmp_path: Path, form: str) -> None:
    secret = tmp_path / "secret.png"
    secret.write_bytes(CAT.read_bytes())
    meta = {"_type": "gradio.FileData"}
    payload = {"plain path": lambda p: {"path": str(p)},
               "path with meta": lambda p: {"path": str(p), "meta": meta},
               "file URL as path": lambda p: {"path": f"file://{p}"},
               "file URL as url": lambda p: {"url": f"file://{p}", "meta": meta}}[form]
    mask = tmp_path / "keep-all-but-one.png"
    everything_but_one = np.full((300, 451), 255, np.uint8)
    everything_but_one[0, 0] = 0
    save_png(everything_but_one, mask)
    uploaded_mask = upload_raw(app_url, mask)
    answers = {}
    for name, target in (("exists", secret), ("missing", tmp_path / "missing.png"), ("folder", tmp_path)):
        answers[name] = (call_raw(app_url, "segment", [payload(target), "[[10, 10]]", ""]),
                         call_raw(app_url, "replace_background", [payload(target), uploaded_mask, "sea", "{}"]))
    assert answers["exists"] == answers["missing"] == answers["folder"], "the answer must not tell what is there"
    for event, data in answers["exists"]:
        assert event == "error"
        if form != "path with meta":  # Gradio refuses that one itself, before the editor sees it
            assert data["error"] == REFUSED


def test_a_page_upload_outside_the_cache_is_refused(fallback_engine: Engine, tmp_path: Path) -> None:
    from editor.ui.handlers import Handlers, guard

    from editor.session.store import SessionStore

    handlers = Handlers(fallback_engine, tiny_config(tmp_path), [CAT], SessionStore(tmp_path / "s", 2**28, 3600.0))
    session = handlers.new_session()
    secret = tmp_path / "secret.png"
    secret.write_bytes(CAT.read_bytes())
    outputs = guard(handlers.upload, 8)(session, {"path": str(secret), "orig_name": "x.png"})
    assert REFUSED.split(" (")[0] in outputs[0] and not session.has_image
    outputs = guard(handlers.upload, 8)(session, {"path": str(CAT), "orig_name": "chelsea.png"})
    assert session.has_image, "the app's own examples may be opened"


# --- every error is one line ------------------------------------------------------------------------


def crafted_png(width: int, height: int) -> bytes:
    """A valid PNG header for a huge 1-bit picture with almost no data: a decompression bomb."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
            + chunk(b"IEND", b""))


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("bad")
    files = {"text.png": b"just some words, not a picture", "bomb.png": crafted_png(20000, 20000),
             "drawing.svg": b'<svg xmlns="http://www.w3.org/2000/svg" width="9" height="9"><rect width="9"/></svg>'}
    for name, data in files.items():
        (folder / name).write_bytes(data)
    clear = np.zeros((300, 451, 4), np.uint8)
    clear[..., :3] = 255  # white but fully transparent: nothing selected
    Image.fromarray(clear, "RGBA").save(folder / "transparent.png")
    save_png(np.full((300, 451), 255, np.uint8), folder / "all.png")
    return {name: folder / name for name in [*files, "transparent.png", "all.png"]}


BAD_CALLS = [
    ("a text file", "segment", ["text.png", "[[10, 10]]", ""], "not an image"),
    ("a decompression bomb", "segment", ["bomb.png", "[[10, 10]]", ""], "too large"),
    ("an SVG", "segment", ["drawing.svg", "[[10, 10]]", ""], "not an image"),
    ("points as 5", "segment", ["CAT", "5", ""], "points must be a list"),
    ("points as null", "segment", ["CAT", "null", ""], "at least one point"),
    ("a point as null", "segment", ["CAT", "[null]", ""], "each point"),
    ("nested JSON", "segment", ["CAT", "[" * 300 + "]" * 300, ""], "nested"),
    ("a label of 0.5", "segment", ["CAT", "[[10, 10, 0.5]]", ""], "label"),
    ("a box of text", "segment", ["CAT", "", '"wide"'], "box"),
    ("huge JSON", "segment", ["CAT", "[" + ", ".join(["[1, 1]"] * 4000) + "]", ""], "limits.json_chars"),
    ("a transparent mask", "fill", ["CAT", "transparent.png", "a dog", "{}"], "empty"),
    ("options as a list", "erase", ["CAT", "all.png", "[1]"], "options"),
    ("too many steps", "fill", ["CAT", "all.png", "a dog", '{"steps": 1000}'], "limits.steps"),
    ("too many variations", "fill", ["CAT", "all.png", "a dog", '{"num_images": 50}'], "limits.variations"),
    ("a long prompt", "fill", ["CAT", "all.png", "dog " * 1000, "{}"], "limits.prompt_chars"),
    ("no image", "segment", [None, "[[10, 10]]", ""], "send an image"),
]


@pytest.mark.parametrize("what, api_name, args, phrase", BAD_CALLS, ids=[case[0] for case in BAD_CALLS])
def test_each_bad_request_is_one_clear_line_and_no_traceback(client: Client, bad_files: dict[str, Path],
                                                             what: str, api_name: str, args: list[Any], phrase: str,
                                                             capfd: pytest.CaptureFixture[str]) -> None:
    files = {**bad_files, "CAT": CAT}
    values = [handle_file(str(files[arg])) if arg in files else arg for arg in args]
    capfd.readouterr()
    with pytest.raises(Exception) as info:
        client.predict(*values, api_name=f"/{api_name}")
    message = str(info.value)
    assert phrase in message and "\n" not in message and "upstream" not in message, message
    log = capfd.readouterr().err
    assert "Traceback" not in log and log.count("\n") <= 2, log


def test_800_points_are_refused_at_once_in_one_line(client: Client) -> None:
    points = json.dumps([[i % 400, i % 300] for i in range(800)])
    started = time.perf_counter()
    with pytest.raises(Exception) as info:
        client.predict(handle_file(str(CAT)), points, "", api_name="/segment")
    assert time.perf_counter() - started < 5
    message = str(info.value)
    assert "800" in message and "64" in message and "limits.points" in message and "\n" not in message


# --- cancel means stop --------------------------------------------------------------------------------


class CountingInpainter:
    """The tiny SD 2 model, recording when each step ends; everything else is the model's own."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.steps: list[float] = []
        self.running = 0
        self.overlapped = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def inpaint(self, image, mask, request, progress=None, cancel=None):  # type: ignore[no-untyped-def]
        def counted(done: int, total: int) -> None:
            self.steps.append(time.monotonic())
            if progress is not None:
                progress(done, total)

        self.running += 1
        self.overlapped |= self.running > 1
        try:
            return self.inner.inpaint(image, mask, request, counted, cancel)
        finally:
            self.running -= 1


@pytest.fixture(scope="module")
def counting_app(sam_sd2_engine: Engine,
                 tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, CountingInpainter]]:
    counting = CountingInpainter(sam_sd2_engine.inpainter)
    engine = Engine(sam_sd2_engine.segmenter, counting, sam_sd2_engine.backends,  # type: ignore[arg-type]
                    sam_sd2_engine.defaults, sam_sd2_engine.composite, sam_sd2_engine.erase_config,
                    limits=LimitsConfig(steps=20000), prefill=sam_sd2_engine.prefill)
    demo, url = serve(engine, tmp_path_factory.mktemp("models"))
    try:
        yield url, counting
    finally:
        demo.close()


def wait_for(condition: Any, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def second_fill_equals_the_same_fill_alone(url: str, counting: CountingInpainter, engine: Engine,
                                           tmp_path: Path) -> None:
    photo = load_image(CAT, 10**8)
    mask = np.zeros(photo.shape[:2], np.uint8)
    mask[120:180, 200:260] = 255
    save_png(mask, tmp_path / "mask.png")
    gallery, _ = Client(url, verbose=False).predict(handle_file(str(CAT)), handle_file(str(tmp_path / "mask.png")),
                                                    "a dog", json.dumps({"steps": 3, "seed": 9}), api_name="/fill")
    alone = engine.fill(photo, mask, "a dog", EditOptions(steps=3, seed=9))
    assert np.array_equal(gallery_images(gallery)[0], alone.images[0])
    assert not counting.overlapped


def long_fill_args(tmp_path: Path) -> tuple[Path, str]:
    mask = np.zeros((300, 451), np.uint8)
    mask[120:180, 200:260] = 255
    save_png(mask, tmp_path / "long-mask.png")
    return tmp_path / "long-mask.png", json.dumps({"steps": 20000, "seed": 1})


def test_a_cancelled_api_job_stops_within_a_step(counting_app: tuple[str, CountingInpainter],
                                                 sam_sd2_engine: Engine, tmp_path: Path) -> None:
    url, counting = counting_app
    counting.steps.clear()
    mask, options = long_fill_args(tmp_path)
    job = Client(url, verbose=False).submit(handle_file(str(CAT)), handle_file(str(mask)), "a dog", options,
                                            api_name="/fill")
    wait_for(lambda: len(counting.steps) >= 3)
    job.cancel()  # returns once the server has ended the job
    stopped = len(counting.steps)
    time.sleep(0.5)
    assert len(counting.steps) <= stopped + 1 and len(counting.steps) < 20000, "the generation went on"
    wait_for(lambda: counting.running == 0, 5)
    second_fill_equals_the_same_fill_alone(url, counting, sam_sd2_engine, tmp_path)


def test_a_client_that_disconnects_stops_its_generation(counting_app: tuple[str, CountingInpainter],
                                                        sam_sd2_engine: Engine, tmp_path: Path) -> None:
    url, counting = counting_app
    counting.steps.clear()
    mask, options = long_fill_args(tmp_path)
    data = [upload_raw(url, CAT), upload_raw(url, mask), "a dog", options]
    event_id = httpx.post(f"{url}gradio_api/call/fill", json={"data": data}, timeout=30).json()["event_id"]
    with httpx.stream("GET", f"{url}gradio_api/call/fill/{event_id}", timeout=60):
        wait_for(lambda: len(counting.steps) >= 3)
    # The connection is closed: the server notices, and the next step ends the generation.
    wait_for(lambda: counting.running == 0, 10)
    stopped = len(counting.steps)
    time.sleep(0.5)
    assert len(counting.steps) == stopped < 20000
    second_fill_equals_the_same_fill_alone(url, counting, sam_sd2_engine, tmp_path)


# --- settings checked at start; nothing left behind -----------------------------------------------------


@pytest.mark.parametrize("argv, setting", [
    (["--port", "99999"], "server.port"),
    (["--set", "server.port=0"], "server.port"),
    (["--host", "999.1.1.1"], "server.host"),
    (["--host", "no such host!"], "server.host"),
    (["--host", "name-that-does-not-resolve.invalid"], "server.host"),
    (["--host", "192.0.2.1"], "server.host"),  # a valid address, but not one of this machine's
])
def test_a_host_or_port_that_cannot_serve_is_one_line_naming_the_setting(
        argv: list[str], setting: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import app

    assert app.main([*argv, "--set", f"models_dir={tmp_path}", "--set", "device=cpu",
                     "--set", f"server.sessions_dir={tmp_path / 'sessions'}"]) == 1
    err = capsys.readouterr().err
    assert setting in err and err.count("\n") == 1 and "Traceback" not in err, err
    assert "Cannot find empty port" not in err


def test_the_app_removes_its_temporary_folders_when_stopped(tmp_path: Path) -> None:
    """`python app.py` stopped by SIGTERM (as a service manager does) exits cleanly and leaves no
    photo-editor-* folder in the system's temporary directory (each run used to leave one)."""
    import os
    import subprocess
    import sys

    port = free_port()
    temp = tmp_path / "tmp"
    temp.mkdir()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TMPDIR": str(temp)}
    env.pop("GRADIO_TEMP_DIR", None)
    process = subprocess.Popen([sys.executable, "app.py", "--port", str(port), "--set", f"models_dir={tmp_path}",
                                "--set", "device=cpu", "--set", f"server.sessions_dir={tmp_path / 'sessions'}"],
                               cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_for(lambda: serving(port) or process.poll() is not None, 90)
        assert process.poll() is None, "the app is serving"
    finally:
        process.terminate()
        output = process.communicate(timeout=30)[0]
    assert not list(temp.glob("photo-editor-*")), output
    assert process.returncode == 0 and "Traceback" not in output, output


def serving(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/config", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False
