"""The API's reading of its arguments, and how every failure is described (the API and the page alike)."""
from __future__ import annotations

import asyncio
import copy
import logging
import re
import uuid
from collections.abc import Iterator
from pathlib import Path

import gradio as gr
import pytest
from gradio.utils import get_upload_folder

from editor.core.config import LimitsConfig
from editor.engine.ops import Engine
from editor.core.errors import EditorError, SelectionError, describe
from editor.ui.api import Api, parse_options, parse_prompts
from editor.ui.handlers import guard
from tests.conftest import tiny_config

ROOT = Path(__file__).resolve().parent.parent
CAT = ROOT / "assets" / "chelsea.png"
LIMITS = LimitsConfig()


def refused(call) -> str:  # type: ignore[no-untyped-def]
    with pytest.raises(EditorError) as info:
        call()
    message = str(info.value)
    assert message and "\n" not in message
    return message


@pytest.mark.parametrize("points, box, phrase", [
    ("5", "", "points must be a list"),
    ("{}", "", "points must be a list"),
    ("[5]", "", "each point"),
    ("[null]", "", "each point"),
    ("[[1, 2, 0.5]]", "", "label"),
    ("[[1, 2, 2]]", "", "label"),
    ("[[1, 2, true]]", "", "each point"),
    ("[[1, 2]]", "[1, 2, 3]", "box"),
    ("[[1, 2]]", "5", "box"),
    ("[" * 5 + "]" * 5, "", "nested"),
    ("[" * 100000 + "]" * 100000, "", "limits.json_chars"),
    ('["' + "[" * 20 + '"]', "", "each point"),  # brackets inside a string are not nesting
    (str([[1, 1]] * 65), "", "limits.points"),
    (str([[1, 1]] * 64), "[0, 0, 5, 5]", "limits.points"),
    ("", "", "at least one point"),
    ("null", "null", "at least one point"),
])
def test_bad_prompts_are_refused_in_one_line(points: str, box: str, phrase: str) -> None:
    assert phrase in refused(lambda: parse_prompts(points, box, LIMITS))


def test_good_prompts_are_read() -> None:
    prompts = parse_prompts("[[1, 2], [3.5, 4, 0], [5, 6, 1.0]]", "[0, 0, 9, 9]", LIMITS)
    assert prompts.points == ((1.0, 2.0), (3.5, 4.0), (5.0, 6.0)) and prompts.labels == (1, 0, 1)
    assert prompts.box == (0.0, 0.0, 9.0, 9.0)
    assert len(parse_prompts(str([[1, 1]] * 64), "", LIMITS).points) == 64


@pytest.mark.parametrize("text, phrase", [
    ("[1]", "options must be a JSON object"),
    ('{"stepz": 3}', "unknown option"),
    ('{"steps": "many"}', "steps must be a number"),
    ('{"steps": 2.5}', "whole number"),
    ('{"steps": true}', "steps must be a number"),
    ('{"negative_prompt": {"a": {"b": {"c": {"d": 1}}}}}', "nested"),
    ('{"negative_prompt": 5}', "text"),
    ('{"generative": 1}', "generative must be true or false"),
    ('{"model": 2}', "model must be text"),
])
def test_bad_options_are_refused_in_one_line(text: str, phrase: str) -> None:
    assert phrase in refused(lambda: parse_options(text, LIMITS))


def test_generative_erase_is_an_option() -> None:
    assert parse_options('{"generative": true, "steps": 3}', LIMITS).generative
    assert not parse_options('{"steps": 3}', LIMITS).generative


def test_the_inpainting_model_is_an_option() -> None:
    assert parse_options('{"model": "sdxl"}', LIMITS).model == "sdxl"
    assert parse_options('{"steps": 3}', LIMITS).model == ""  # the default, inpaint.model


# --- one description of a failure, shared by the API and the page ------------------------------------


def test_a_persons_mistake_is_its_message_and_a_short_log_line(caplog: pytest.LogCaptureFixture) -> None:
    log = logging.getLogger("test.describe")
    with caplog.at_level(logging.INFO, logger="test.describe"):
        message = describe(SelectionError("the box is empty"), log, "/segment")
    assert message == "the box is empty"
    assert len(caplog.records) == 1 and caplog.records[0].exc_info is None
    assert "the box is empty" in caplog.records[0].getMessage() and "/segment" in caplog.records[0].getMessage()


def test_a_bug_gets_an_id_shown_to_the_person_and_one_traceback_in_the_log(caplog: pytest.LogCaptureFixture) -> None:
    log = logging.getLogger("test.describe")
    try:
        {}["missing"]
    except KeyError as exc:
        with caplog.at_level(logging.INFO, logger="test.describe"):
            message = describe(exc, log, "/fill")
    error_id = re.search(r"error ([0-9a-f]{8})", message).group(1)  # type: ignore[union-attr]
    assert "\n" not in message and "missing" not in message, "no internals for the client"
    [record] = caplog.records
    assert record.exc_info is not None and error_id in record.getMessage()


@pytest.fixture
def uploaded() -> Iterator[Path]:
    folder = Path(get_upload_folder()) / f"test-{uuid.uuid4().hex}"
    folder.mkdir(parents=True)
    photo = folder / "chelsea.png"
    photo.write_bytes(CAT.read_bytes())
    try:
        yield photo
    finally:
        photo.unlink()
        folder.rmdir()


def test_the_api_and_the_page_describe_a_bug_the_same_way(fallback_engine: Engine, tmp_path: Path,
                                                          uploaded: Path, caplog: pytest.LogCaptureFixture) -> None:
    broken = copy.copy(fallback_engine)
    broken.select = lambda *args: 1 / 0  # type: ignore[method-assign]  # a bug somewhere below the API
    api = Api(broken, tiny_config(tmp_path))
    with caplog.at_level(logging.INFO), pytest.raises(gr.Error) as info:
        asyncio.run(api.segment({"path": str(uploaded)}, "[[10, 10]]", ""))
    api_message = info.value.message
    assert re.fullmatch(r"unexpected error [0-9a-f]{8} \(ZeroDivisionError\); the server log has the details",
                        api_message), api_message
    assert info.value.print_exception is False, "Gradio must not print a second traceback"
    assert sum(record.exc_info is not None for record in caplog.records) == 1
    caplog.clear()
    with caplog.at_level(logging.INFO):
        status = guard(lambda: 1 / 0, 1)()
    assert re.search(r"unexpected error [0-9a-f]{8} \(ZeroDivisionError\)", status)
    assert sum(record.exc_info is not None for record in caplog.records) == 1
