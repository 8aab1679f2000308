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
ENDPOINTS = {"/segment", "/fill", "/erase", "/replace_background"}


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
        (lambda: client.predict(handle_file(str(CAT)), handle_file(str(mask_path)), "", "{}", api_name="/fill"),
         "mask"),
        (lambda: client.predict(handle_file(str(CAT)), handle_file(str(good_mask)), '{"stepz": 3}',
                                api_name="/erase"), "unknown option"),
    ]
    for call, message in cases:
        with pytest.raises(Exception, match=message):
            call()
