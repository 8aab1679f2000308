"""A page set to serving.backend: ray whose cluster is not there: one line within seconds, and the
local backend offered."""
from __future__ import annotations

import socket
import time
from pathlib import Path

import numpy as np
import pytest

import app
from editor.core.config import Config
from editor.core.errors import BackendUnreachable
from editor.core.prompts import Prompts
from editor.models.weights import Downloads
from tests.conftest import tiny_config


def _free_port() -> int:
    """A loopback port nobody listens on (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _dead_address() -> str:
    return f"127.0.0.1:{_free_port()}"


def _ray_settings(models: Path, tiny_sam_path: Path, on_unreachable: str) -> Config:
    return tiny_config(models, f"segmenter.model={tiny_sam_path}", "serving.backend=ray",
                       f"serving.ray_address={_dead_address()}", f"serving.on_unreachable={on_unreachable}")


def test_an_unreachable_cluster_is_one_line_within_seconds(empty_models_dir: Path, tiny_sam_path: Path) -> None:
    asked: list[str] = []
    started = time.monotonic()
    with pytest.raises(BackendUnreachable) as refused:
        app.engine_for(_ray_settings(empty_models_dir, tiny_sam_path, "stop"), Downloads(), asked.append)
    assert time.monotonic() - started < 10  # ray.init alone waits minutes on a dead address
    message = str(refused.value)
    assert message.startswith("cannot reach a Ray cluster on 127.0.0.1:") and "\n" not in message
    assert "--set serving.backend=local" in message and asked == []


@pytest.mark.parametrize("on_unreachable", ["ask", "local"])
def test_the_page_runs_the_models_itself_when_the_person_agrees_or_the_settings_say_so(
        on_unreachable: str, empty_models_dir: Path, tiny_sam_path: Path, photo: np.ndarray,
        capsys: pytest.CaptureFixture[str]) -> None:
    asked: list[str] = []
    engine, config = app.engine_for(_ray_settings(empty_models_dir, tiny_sam_path, on_unreachable), Downloads(),
                                    lambda question: asked.append(question) or True)
    assert config.serving.backend == "local" and str(tiny_sam_path) in engine.backends.segmenter
    assert engine.select(photo, Prompts(((160.0, 120.0),), (1,))).any()  # the settings' SAM, in this process
    assert len(asked) == (on_unreachable == "ask") and all("Run the models in this app" in q for q in asked)
    assert capsys.readouterr().err.startswith("warning: cannot reach a Ray cluster")


def test_a_no_or_no_one_to_ask_stops_the_app_with_the_one_line(empty_models_dir: Path, tiny_sam_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(BackendUnreachable):
        app.engine_for(_ray_settings(empty_models_dir, tiny_sam_path, "ask"), Downloads(), lambda question: False)
    # Under pytest stdin is no terminal: nobody is asked, and the app exits with the line.
    assert app.main(["--set", f"models_dir={empty_models_dir}", "--set", "serving.backend=ray",
                     "--set", f"serving.ray_address={_dead_address()}", "--port", str(_free_port())]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: cannot reach a Ray cluster") and err.count("\n") == 1
