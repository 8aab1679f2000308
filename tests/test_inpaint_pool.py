"""inpaint.models: several inpainting models in one editor, chosen per edit, sharing one memory budget."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from editor.build import build_engine, describe, plan_backends
from editor.core.config import Config
from editor.core.errors import ConfigError, ModelUnavailableError
from editor.engine.ops import EditOptions, Engine
from editor.core.photo_io import load_image, read_png_metadata
from tests.conftest import tiny_config
from tests.test_browser import CAT, CHROMIUM, click_photo, serving, wait_for_status
from tests.test_canvas_browser import browser, opened_page  # noqa: F401 - a fixture
from tests.test_ui_handlers import OPTIONS, click_at, handlers_for, opened


def _mask(photo: np.ndarray) -> np.ndarray:
    mask = np.zeros(photo.shape[:2], np.uint8)
    mask[60:140, 100:220] = 255
    return mask


def _two_models(models: Path, sd2: Path, sdxl: Path, *extra: str) -> Config:
    return tiny_config(models, f"inpaint.model={sd2}", f"inpaint.models=[{sdxl}]", *extra)


def test_each_model_paints_what_it_paints_alone_and_the_result_names_it(
        tiny_sd2_dir: Path, tiny_sdxl_dir: Path, empty_models_dir: Path, photo: np.ndarray) -> None:
    both = build_engine(_two_models(empty_models_dir, tiny_sd2_dir, tiny_sdxl_dir), show_progress=False)
    assert both.inpaint_models() == (str(tiny_sd2_dir), str(tiny_sdxl_dir))
    mask, options = _mask(photo), EditOptions(seed=5, steps=2)
    for model, alone in ((tiny_sd2_dir, ""), (tiny_sdxl_dir, str(tiny_sdxl_dir))):
        single = build_engine(tiny_config(empty_models_dir, f"inpaint.model={model}"), show_progress=False)
        expected = single.fill(photo, mask, "a red ball", options)
        chosen = both.fill(photo, mask, "a red ball", EditOptions(seed=5, steps=2, model=alone))
        assert np.array_equal(chosen.images[0], expected.images[0])
        assert chosen.metadata["model"] == str(model)
    sd2_fill = both.fill(photo, mask, "a red ball", options).images[0]
    sdxl_fill = both.fill(photo, mask, "a red ball", EditOptions(seed=5, steps=2, model=str(tiny_sdxl_dir))).images[0]
    assert not np.array_equal(sd2_fill, sdxl_fill)  # two models, two paintings


def test_the_models_share_one_memory_budget_least_recently_used_released_first(
        tiny_sd2_dir: Path, tiny_sdxl_dir: Path, empty_models_dir: Path, photo: np.ndarray) -> None:
    tiny_budget = "inpaint.memory_budget_gb=0.000000001"  # one byte: a load releases every idle pipeline
    engine = build_engine(_two_models(empty_models_dir, tiny_sd2_dir, tiny_sdxl_dir, tiny_budget), show_progress=False)
    sd2, sdxl = (engine.inpainter.member(name) for name in engine.inpaint_models())
    assert sd2.pipelines is sdxl.pipelines  # one cache, one budget
    engine.fill(photo, _mask(photo), "a cat", EditOptions(seed=1, steps=2))
    assert sd2.pipelines.loaded() == [tiny_sd2_dir]
    engine.fill(photo, _mask(photo), "a cat", EditOptions(seed=1, steps=2, model=str(tiny_sdxl_dir)))
    assert sd2.pipelines.loaded() == [tiny_sdxl_dir], "the budget holds one: the one used before is released"


def test_an_unknown_model_is_refused_in_one_line_naming_the_choices(
        tiny_sd2_dir: Path, tiny_sdxl_dir: Path, empty_models_dir: Path, photo: np.ndarray,
        sam_sd2_engine: Engine) -> None:
    both = build_engine(_two_models(empty_models_dir, tiny_sd2_dir, tiny_sdxl_dir), show_progress=False)
    for engine in (both, sam_sd2_engine):
        with pytest.raises(ModelUnavailableError, match="no inpainting model 'nope' here") as refused:
            engine.fill(photo, _mask(photo), "a cat", EditOptions(seed=1, steps=2, model="nope"))
        assert str(tiny_sd2_dir) in str(refused.value) and "\n" not in str(refused.value)


def test_the_settings_name_the_models_offered_and_refuse_one_that_is_not_a_model(
        tiny_sd2_dir: Path, tiny_sdxl_dir: Path, empty_models_dir: Path, tmp_path: Path) -> None:
    config = _two_models(empty_models_dir, tiny_sd2_dir, tiny_sdxl_dir, f"inpaint.models=[{tiny_sdxl_dir}, sdxl]")
    line = describe(plan_backends(config), config).inpainter
    assert f"also diffusers inpainting ({tiny_sdxl_dir})" in line
    assert "not offered: sdxl (sdxl is not here" in line  # downloads are off in the tests
    with pytest.raises(ConfigError, match=r"^inpaint.models: 'no such thing' is not"):
        plan_backends(tiny_config(tmp_path, "inpaint.models=[no such thing]"))


def test_the_page_offers_the_choice_and_the_edit_uses_the_chosen_model(
        tiny_sam_path: Path, tiny_sd2_dir: Path, tiny_sdxl_dir: Path, empty_models_dir: Path, tmp_path: Path) -> None:
    from editor.ui.page import build_ui

    engine = build_engine(_two_models(empty_models_dir, tiny_sd2_dir, tiny_sdxl_dir,
                                      f"segmenter.model={tiny_sam_path}"), show_progress=False)
    demo = build_ui(engine, tiny_config(tmp_path))
    dropdown = next(block for block in demo.blocks.values() if getattr(block, "elem_id", None) == "inpaint-model")
    assert dropdown.visible and [value for _, value in dropdown.choices] == list(engine.inpaint_models())
    handlers = handlers_for(engine, tmp_path)
    session, _ = opened(handlers)
    handlers.click(session, "add", click_at(230, 150))
    handlers.edit("fill", session, **{**OPTIONS, "prompt": "a dog"}, model=str(tiny_sdxl_dir))
    path = handlers.download(session).value
    assert read_png_metadata(path["path"] if isinstance(path, dict) else path)["model"] == str(tiny_sdxl_dir)


@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's Chromium: apt-get install chromium")
def test_in_the_page_a_fill_with_the_model_chosen_is_painted_by_it(
        tiny_sam_path: Path, tiny_sd2_dir: Path, tiny_sdxl_dir: Path, empty_models_dir: Path, tmp_path: Path,
        browser: Any) -> None:
    from editor.ui.page import build_ui

    engine = build_engine(_two_models(empty_models_dir, tiny_sd2_dir, tiny_sdxl_dir,
                                      f"segmenter.model={tiny_sam_path}"), show_progress=False)
    with serving(build_ui(engine, tiny_config(tmp_path))) as url:
        page = opened_page(browser, url)
        click_photo(page, 230, 150, *load_image(CAT, 10**8).shape[1::-1])
        wait_for_status(page, "Selected")
        page.get_by_text("Options: negative prompt, steps, seed, variations, model").click()
        page.locator("#inpaint-model input").click()
        page.get_by_role("option", name=tiny_sdxl_dir.name).click()
        page.locator("#prompt textarea").fill("a red ball")
        page.locator("#fill").click()
        wait_for_status(page, "Fill done")
        assert str(tiny_sdxl_dir) in page.locator("#status").inner_text()
