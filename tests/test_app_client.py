"""The launched app through `gradio_client`: the documented stateless endpoints."""
from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from gradio_client import Client, handle_file

from editor import masks
from editor.engine import Engine
from editor.imageio import load_image, load_mask, save_png
from editor.ui import build_ui
from tests.conftest import tiny_config

ROOT = Path(__file__).resolve().parent.parent
CAT = ROOT / "assets" / "chelsea.png"
ENDPOINTS = {"/segment", "/select_by_text", "/fill", "/erase", "/replace_background"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def client(sam_sd2_engine: Engine, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Client]:
    config = tiny_config(tmp_path_factory.mktemp("models"))
    demo = build_ui(sam_sd2_engine, config)
    port = free_port()
    demo.queue(default_concurrency_limit=1).launch(server_name="127.0.0.1", server_port=port,
                                                   prevent_thread_lock=True, quiet=True)
    try:
        yield Client(f"http://127.0.0.1:{port}/", verbose=False)
    finally:
        demo.close()


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
    result = load_image(filled, 10**8)
    assert result.shape == photo.shape and np.array_equal(result[~band], photo[~band])
    assert info["mode"] == "fill" and info["seed"] == "11" and info["prompt"] == "a dog"

    erased, info = client.predict(handle_file(str(CAT)), handle_file(str(mask_path)), options, api_name="/erase")
    assert np.array_equal(load_image(erased, 10**8)[~band], photo[~band]) and info["mode"] == "erase"

    replaced, info = client.predict(handle_file(str(CAT)), handle_file(str(mask_path)), "a beach", options,
                                    api_name="/replace_background")
    subject = mask > 0
    assert np.array_equal(load_image(replaced, 10**8)[subject], photo[subject])
    assert info["mode"] == "background"


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
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            took = list(pool.map(lambda _: load_config(), range(8)))
    finally:
        demo.close()
    assert not copies, f"the engine was deep-copied {len(copies)} times"
    assert max(took) < 1.0, took


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
                                "--set", "device=cpu"], cwd=ROOT, env=env,
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
        assert "grabcut (no SAM checkpoint)" in page and "python -m editor download inpaint" in page
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_app_on_a_taken_port_is_one_line_and_exit_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import app

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert app.main(["--port", str(port), "--set", f"models_dir={tmp_path}", "--set", "device=cpu"]) == 1
    err = capsys.readouterr().err
    assert f"error: cannot serve on 127.0.0.1:{port}" in err and "Traceback" not in err


@pytest.mark.parametrize("model", ["sd2", "sdxl"])
def test_eight_users_filling_at_once_each_get_their_own_result(model: str, tiny_sam_path: Path, tiny_sd2_dir: Path,
                                                               tiny_sdxl_dir: Path, empty_models_dir: Path,
                                                               tmp_path: Path) -> None:
    """server.concurrency=4 and eight gradio_client users, each with their own photo, mask, steps
    and seed: each result is the one the same edit gives alone, and exact outside its own mask.
    (The one shared pipeline used to mix their schedulers: wrong images on SD 2, IndexError on SDXL.)"""
    import concurrent.futures

    from editor.backends import build_engine
    from editor.engine import EditOptions

    model_dir = tiny_sd2_dir if model == "sd2" else tiny_sdxl_dir
    config = tiny_config(empty_models_dir, f"sam.checkpoint={tiny_sam_path}", f"inpaint.model={model_dir}",
                         "server.concurrency=4", f"server.sessions_dir={tmp_path / 'sessions'}")
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
    demo.queue(default_concurrency_limit=4).launch(server_name="127.0.0.1", server_port=port,
                                                   prevent_thread_lock=True, quiet=True)

    def fill(i: int) -> np.ndarray:
        _, _, photo_path, mask_path, options = users[i]
        client = Client(f"http://127.0.0.1:{port}/", verbose=False)
        result, _ = client.predict(handle_file(str(photo_path)), handle_file(str(mask_path)), f"thing {i}",
                                   json.dumps(options), api_name="/fill")
        return load_image(_first_image(result), 10**8)

    try:
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            results = list(pool.map(fill, range(8)))
    finally:
        demo.close()
    for i, ((photo, mask, *_), result, expected) in enumerate(zip(users, results, alone)):
        band = masks.grow(mask, engine.composite.grow + engine.composite.feather) > 0
        assert np.array_equal(result[~band], photo[~band]), f"user {i}: exact outside the edit"
        assert np.array_equal(result, expected), f"user {i}: the same image as the edit alone"


def _first_image(result: object) -> str:
    """The endpoints return one image today; a gallery of variations after the API change."""
    if isinstance(result, (list, tuple)):
        item = result[0]
        return item["image"] if isinstance(item, dict) else item
    return result  # type: ignore[return-value]
