"""The candidate masks of an ambiguous first click: offered as thumbnails, chosen, refined, undone, saved."""
from __future__ import annotations

from pathlib import Path

import gradio as gr
import numpy as np
import pytest

from editor.core.errors import SelectionError
from editor.core.prompts import Prompts, SelectionPart, part_from_json, part_to_json
from editor.engine.ops import Engine
from tests.test_ui_handlers import click_at, handlers_for, opened


def pick(index: int) -> gr.SelectData:
    return gr.SelectData(None, {"index": index, "value": None, "selected": True})


def test_a_first_click_offers_distinct_masks_and_choosing_one_selects_it(sam_sd2_engine: Engine,
                                                                         tmp_path: Path) -> None:
    handlers = handlers_for(sam_sd2_engine, tmp_path)
    session, _ = opened(handlers)
    handlers.click(session, "add", click_at(230, 150))
    found = sam_sd2_engine.candidates(session.image, session.ambiguous_prompts)
    assert len(found) >= 2, "the tiny SAM's three masks differ"
    assert len({mask.tobytes() for _, mask in found}) == len(found)
    gallery = handlers.candidates(session)
    assert gallery.visible and len(gallery.value) == len(found)
    best = session.selection_mask(sam_sd2_engine.select)
    marked = [item["caption"] for item in gallery.value if item["caption"].endswith("✓")]
    assert len(marked) == 1 and any(np.array_equal(mask, best) for _, mask in found)

    other = next(i for i, (_, mask) in enumerate(found) if not np.array_equal(mask, best))
    status, _canvas = handlers.choose_candidate(session, pick(other))
    assert f"Mask {found[other][0] + 1} taken" in status
    assert np.array_equal(session.selection_mask(sam_sd2_engine.select), found[other][1])
    assert handlers.choose_candidate(session, pick(other)) == (gr.skip(), gr.skip())  # taken already: no step

    handlers.click(session, "add", click_at(250, 170))  # a second click refines the chosen mask
    assert session.selection.current.prompts.candidate == found[other][0]
    assert not handlers.candidates(session).visible, "two clicks are not ambiguous"
    session.undo_click()
    session.undo_click()  # Ctrl+Z takes the choice back: the best-scoring mask again
    assert np.array_equal(session.selection_mask(sam_sd2_engine.select), best)


def test_grabcut_gives_one_answer_so_nothing_is_offered(fallback_engine: Engine, tmp_path: Path) -> None:
    handlers = handlers_for(fallback_engine, tmp_path)
    session, _ = opened(handlers)
    handlers.click(session, "add", click_at(230, 150))
    assert len(fallback_engine.candidates(session.image, session.ambiguous_prompts)) == 1
    assert not handlers.candidates(session).visible
    with pytest.raises(SelectionError):
        handlers.choose_candidate(session, pick(1))


def test_a_box_or_no_photo_is_not_ambiguous(fallback_engine: Engine, tmp_path: Path) -> None:
    handlers = handlers_for(fallback_engine, tmp_path)
    empty = handlers.new_session()
    assert empty.ambiguous_prompts is None and not handlers.candidates(empty).visible
    session, _ = opened(handlers)
    session.box(150, 80, 330, 240)
    assert session.ambiguous_prompts is None
    assert fallback_engine.candidates(session.image, Prompts(box=(1, 1, 50, 50))) == []


def test_the_chosen_candidate_is_checked_and_saved_with_the_session() -> None:
    part = SelectionPart(Prompts(((3.0, 4.0),), (1,), None, 2))
    assert part_from_json(part_to_json(part)) == part
    old = {k: v for k, v in part_to_json(part).items() if k != "candidate"}  # saved before candidates
    assert part_from_json(old).prompts.candidate is None
    with pytest.raises(ValueError):
        part_from_json({**part_to_json(part), "candidate": 7})
    with pytest.raises(SelectionError, match="candidate mask is 1 to 3"):
        Prompts(((3.0, 4.0),), (1,), None, 5).validated(10, 10)
