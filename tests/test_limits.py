"""Bounded cost per request: the limits, and the ranges shared by the settings, the engine and the page."""
from __future__ import annotations

import time
from pathlib import Path

import gradio as gr
import numpy as np
import pytest

from editor.build import build_engine
from editor.core.config import Config, LimitsConfig, Range, load_config
from editor.engine.ops import EditOptions, Engine
from editor.core.errors import ConfigError, EditorError, SelectionError
from editor.core.prompts import Prompts
from editor.ui.page import build_ui
from tests.conftest import tiny_config


def config_error(*overrides: str) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(None, list(overrides))
    message = str(info.value)
    assert "\n" not in message
    return message


def disc_mask(shape: tuple[int, int]) -> np.ndarray:
    mask = np.zeros(shape, np.uint8)
    mask[100:140, 140:180] = 255
    return mask


# --- the settings ---------------------------------------------------------------------------------


def test_the_limits_have_sane_defaults() -> None:
    limits = load_config(None).limits
    assert limits == LimitsConfig()
    assert limits.points == 64 and limits.steps == 100 and limits.variations == 8
    assert limits.prompt_chars >= 500 and limits.json_chars >= 4000 and limits.json_depth >= 3


def test_the_ranges_follow_the_limits() -> None:
    ranges = load_config(None, ["limits.steps=250", "limits.variations=4"]).limits.ranges
    assert ranges.steps == Range(1, 250, 1) and ranges.variations == Range(1, 4, 1)
    assert 7.5 in ranges.guidance and 0.99 in ranges.strength and 0 not in ranges.strength
    assert -30 in ranges.grow and 0 in ranges.feather and -1 not in ranges.feather


@pytest.mark.parametrize("overrides, key", [
    (["inpaint.steps=200"], "inpaint.steps"),  # above the Steps slider: every Fill on the page would fail
    (["inpaint.num_images=9"], "inpaint.num_images"),
    (["limits.variations=2", "inpaint.num_images=3"], "inpaint.num_images"),
    (["inpaint.guidance=25"], "inpaint.guidance"),
    (["inpaint.strength=0.001"], "inpaint.strength"),
    (["erase.strength=0.001"], "erase.strength"),
    (["composite.feather=61"], "composite.feather"),
    (["composite.grow=61"], "composite.grow"),
    (["limits.points=0"], "limits.points"),
    (["limits.steps=0"], "limits.steps"),
    (["limits.json_depth=0"], "limits.json_depth"),
    (["limits.prompt_chars=-5"], "limits.prompt_chars"),
    (["limits.lots=5"], "limits.lots"),
    (["limits.prompt_chars=20"], "inpaint.negative_prompt"),  # every edit would be refused
])
def test_settings_outside_the_shared_ranges_name_the_key(overrides: list[str], key: str) -> None:
    assert f"'{key}'" in config_error(*overrides)


def test_a_high_steps_default_needs_a_higher_limit_and_then_the_slider_follows(fallback_engine: Engine,
                                                                               tmp_path: Path) -> None:
    message = config_error("inpaint.steps=200")
    assert "limits.steps" in message
    config = load_config(None, ["inpaint.steps=200", "limits.steps=200", f"models_dir={tmp_path}",
                                f"server.sessions_dir={tmp_path / 'sessions'}"])
    assert config.inpaint.steps == 200
    sliders = page_sliders(fallback_engine, config)
    assert sliders["steps"].maximum == 200 and sliders["steps"].value == 200


def page_sliders(engine: Engine, config: Config) -> dict[str, gr.Slider]:
    demo = build_ui(engine, config, examples=[])
    return {block.elem_id: block for block in demo.blocks.values() if isinstance(block, gr.Slider)}


def test_the_page_sliders_take_their_ranges_from_the_settings(fallback_engine: Engine, tmp_path: Path) -> None:
    config = tiny_config(tmp_path, "limits.steps=150", "limits.variations=3")
    ranges = config.limits.ranges
    sliders = page_sliders(fallback_engine, config)
    for elem_id, expected in [("steps", ranges.steps), ("guidance", ranges.guidance), ("strength", ranges.strength),
                              ("variations-count", ranges.variations), ("grow", ranges.grow),
                              ("feather", ranges.feather)]:
        slider = sliders[elem_id]
        assert (slider.minimum, slider.maximum, slider.step) == (expected.low, expected.high, expected.step), elem_id
        assert expected.low <= slider.value <= expected.high


# --- the engine -----------------------------------------------------------------------------------


def engine_with(tmp_path: Path, *overrides: str) -> Engine:
    return build_engine(tiny_config(tmp_path, *overrides), show_progress=False)


def test_the_engine_checks_steps_and_variations_against_the_limits(tmp_path: Path, photo: np.ndarray) -> None:
    mask = disc_mask(photo.shape[:2])
    strict = engine_with(tmp_path)
    for options, words in [(EditOptions(steps=101), ("steps", "100", "limits.steps")),
                           (EditOptions(num_images=9), ("8", "limits.variations")),
                           (EditOptions(guidance=21.0), ("guidance", "20"))]:
        with pytest.raises(EditorError) as info:
            strict.erase(photo, mask, options)
        assert all(word in str(info.value) for word in words), str(info.value)
    roomy = engine_with(tmp_path, "limits.steps=150")
    assert roomy.erase(photo, mask, EditOptions(steps=150)).images  # the classical erase: the check passed


def test_long_prompts_and_queries_are_refused(tmp_path: Path, photo: np.ndarray) -> None:
    engine = engine_with(tmp_path, "limits.prompt_chars=100")
    mask = disc_mask(photo.shape[:2])
    for call in (lambda: engine.fill(photo, mask, "x" * 101),
                 lambda: engine.replace_background(photo, mask, "a beach", EditOptions(negative_prompt="n" * 101)),
                 lambda: engine.select_by_text(photo, "dog, " * 21)):
        with pytest.raises(EditorError, match="limits.prompt_chars") as info:
            call()
        assert "\n" not in str(info.value)


def test_too_many_points_are_refused_at_once(tmp_path: Path, photo: np.ndarray) -> None:
    engine = engine_with(tmp_path)
    many = Prompts()
    for i in range(800):
        many = many.add_point(float(i % 300), float(i % 200))
    started = time.perf_counter()
    with pytest.raises(SelectionError) as info:
        engine.select(photo, many)
    assert time.perf_counter() - started < 1.0
    message = str(info.value)
    assert "800" in message and "64" in message and "limits.points" in message and "\n" not in message
    boxed = Prompts(box=(10, 10, 50, 50))
    for i in range(63):
        boxed = boxed.add_point(20, 20)
    assert engine.select(photo, boxed).shape == photo.shape[:2]  # 63 points and a box: 64 prompts
    with pytest.raises(SelectionError, match="65"):
        engine.select(photo, boxed.add_point(20, 20))


def test_prompts_validated_with_a_limit() -> None:
    prompts = Prompts().add_point(1, 1).add_point(2, 2).with_box((0, 0, 5, 5))
    assert prompts.validated(10, 10, max_prompts=3) == prompts
    with pytest.raises(SelectionError, match="3 points and boxes"):
        prompts.validated(10, 10, max_prompts=2)


# --- host and port --------------------------------------------------------------------------------


@pytest.mark.parametrize("host", ["127.0.0.1", "0.0.0.0", "::", "::1", "localhost", "photo-box.example.org",
                                  "fe80::1%eth0"])
def test_valid_hosts_are_accepted(host: str) -> None:
    assert load_config(None, [f"server.host='{host}'"]).server.host == host


@pytest.mark.parametrize("host", ["999.1.1.1", "", "bad host", "-x.org", "1.2.3", "http://x", "a" * 300, "::g"])
def test_invalid_hosts_are_refused_naming_the_setting(host: str) -> None:
    message = config_error(f"server.host={host!r}" if host else "server.host=''")
    assert "'server.host'" in message and "Cannot find empty port" not in message


@pytest.mark.parametrize("port", ["0", "99999", "65536", "-1"])
def test_ports_outside_1_to_65535_are_refused(port: str) -> None:
    assert "'server.port'" in config_error(f"server.port={port}")
    assert load_config(None, ["server.port=65535"]).server.port == 65535
