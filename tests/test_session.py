"""One person's session (pure data) and the selection overlay (pure drawing)."""
from __future__ import annotations

import copy

import numpy as np
import pytest

from editor import masks, overlay
from editor.errors import EditorError, SelectionError
from editor.prompts import Prompts
from editor.session import MAX_VERSIONS, Session


def disc_segmenter(calls: list[Prompts] | None = None):  # type: ignore[no-untyped-def]
    """A stand-in for engine.select: a disc of radius 20 around each positive point, box filled."""
    def segment(image: np.ndarray, prompts: Prompts) -> np.ndarray:
        if calls is not None:
            calls.append(prompts)
        mask = np.zeros(image.shape[:2], np.uint8)
        yy, xx = np.mgrid[0 : image.shape[0], 0 : image.shape[1]]
        for (x, y), label in zip(prompts.points, prompts.labels):
            if label:
                mask[(xx - x) ** 2 + (yy - y) ** 2 <= 20**2] = 255
        if prompts.box is not None:
            x1, y1, x2, y2 = (int(v) for v in prompts.box)
            mask[y1:y2, x1:x2] = 255
        return mask
    return segment


def opened(height: int = 120, width: int = 160) -> Session:
    session = Session()
    session.open(np.full((height, width, 3), 100, np.uint8), "test")
    return session


def test_a_new_session_has_no_photo_and_says_so() -> None:
    session = Session()
    assert not session.has_image
    with pytest.raises(EditorError, match="upload a photo"):
        session.image  # noqa: B018


def test_clicks_build_the_selection_and_undo_click_takes_them_back() -> None:
    session, segment = opened(), disc_segmenter()
    session.click(40, 40, "add")
    one = session.selection_mask(segment)
    assert one[40, 40] == 255 and one[40, 100] == 0
    session.click(100, 40, "add")
    two = session.selection_mask(segment)
    assert two[40, 40] == 255 and two[40, 100] == 255
    session.undo_click()
    assert np.array_equal(session.selection_mask(segment), one)
    session.undo_click()
    assert not session.selection_mask(segment).any()
    with pytest.raises(EditorError):
        session.undo_click()


def test_a_negative_point_needs_an_object_first() -> None:
    session = opened()
    with pytest.raises(SelectionError, match="object first"):
        session.click(10, 10, "remove")
    session.click(40, 40, "add")
    session.click(45, 45, "remove")
    assert session.selection.current.prompts.labels == (1, 0)


def test_box_mode_takes_two_corners_in_any_order() -> None:
    session, segment = opened(), disc_segmenter()
    session.click(90, 80, "box")
    assert session.selection.pending_corner == (90, 80)
    assert not session.selection_mask(segment).any()
    session.click(30, 20, "box")
    assert session.selection.current.prompts.box == (30, 20, 90, 80)
    mask = session.selection_mask(segment)
    assert mask[50, 60] == 255 and mask[10, 10] == 0


def test_objects_are_added_and_subtracted() -> None:
    session, segment = opened(), disc_segmenter()
    session.click(40, 60, "add")
    session.new_part(subtract=False)
    session.click(120, 60, "add")
    both = session.selection_mask(segment)
    assert both[60, 40] == 255 and both[60, 120] == 255
    session.new_part(subtract=True)
    session.click(125, 60, "add")
    cut = session.selection_mask(segment)
    assert cut[60, 40] == 255 and cut[60, 120] == 0


def test_invert_and_brush_strokes() -> None:
    session, segment = opened(), disc_segmenter()
    session.click(40, 60, "add")
    session.invert()
    inverted = session.selection_mask(segment)
    assert inverted[60, 40] == 0 and inverted[5, 150] == 255
    session.invert()
    add = np.zeros((120, 160), bool)
    add[100:110, 100:110] = True
    remove = np.zeros((120, 160), bool)
    remove[55:65, 35:45] = True
    session.paint(add, remove)
    painted = session.selection_mask(segment)
    assert painted[105, 105] == 255 and painted[60, 40] == 0 and painted[60, 25] == 255


def test_masks_are_computed_once_per_object_and_version() -> None:
    calls: list[Prompts] = []
    session, segment = opened(), disc_segmenter(calls)
    session.click(40, 60, "add")
    for _ in range(3):
        session.selection_mask(segment)
    assert len(calls) == 1


def test_grow_and_feather_shape_the_edit_and_preview_masks() -> None:
    session, segment = opened(), disc_segmenter()
    session.click(80, 60, "add")
    session.grow_px, session.feather_px = 5, 6
    base = session.selection_mask(segment)
    assert np.array_equal(session.edit_mask(segment), masks.grow(base, 5))
    preview = session.preview_mask(segment) > 0
    assert (preview >= (masks.grow(base, 5) > 0)).all(), "the grown selection is fully shown"
    assert not (preview & ~(masks.grow(base, 12) > 0)).any(), "the soft edge reaches no farther than grow + feather"
    assert preview.sum() > (masks.grow(base, 5) > 0).sum(), "the soft edge shows"


def test_history_commit_undo_redo_goto_and_redo_branch_dropped() -> None:
    session = opened()
    original = session.image.copy()
    session.click(40, 40, "add")
    first = np.full_like(original, 1)
    session.commit(first, "erase", {"mode": "erase"})
    assert session.selection.is_empty, "an edit resets the selection"
    second = np.full_like(original, 2)
    session.commit(second, "fill: x", {"mode": "fill"})
    session.undo()
    assert np.array_equal(session.image, first)
    session.undo()
    assert np.array_equal(session.image, original)
    assert not session.can_undo
    session.redo()
    session.redo()
    assert np.array_equal(session.image, second) and not session.can_redo
    session.goto(1)
    third = np.full_like(original, 3)
    session.commit(third, "erase", {})
    assert [v.label for v in session.versions] == ["original", "erase", "erase"]
    assert not session.can_redo


def test_history_is_bounded_and_keeps_the_original() -> None:
    session = opened()
    original = session.image.copy()
    for i in range(MAX_VERSIONS + 5):
        session.commit(np.full_like(original, i % 250), f"edit {i}", {})
    assert len(session.versions) == MAX_VERSIONS
    assert np.array_equal(session.versions[0].image, original)


def test_variations_first_commits_and_another_can_be_chosen() -> None:
    session = opened()
    images = [np.full_like(session.image, v) for v in (10, 20, 30)]
    session.add_result(images, {"seed": "5"}, "fill: a cat")
    assert np.array_equal(session.image, images[0]) and session.version.metadata["variation"] == "1 of 3"
    session.choose_variation(2)
    assert np.array_equal(session.image, images[2]) and session.version.metadata["variation"] == "3 of 3"
    assert len(session.versions) == 2, "choosing replaces the result, it does not add a version"
    with pytest.raises(EditorError):
        session.choose_variation(7)


def test_cancel_only_when_an_edit_is_pending() -> None:
    session = opened()
    assert session.request_cancel() is False
    session.begin_edit()
    assert session.request_cancel() is True and session.cancel.is_set()
    session.end_edit()
    assert not session.cancel.is_set()


def test_overlay_tints_the_selection_outlines_it_and_marks_points() -> None:
    image = np.full((100, 100, 3), 128, np.uint8)
    mask = np.zeros((100, 100), np.uint8)
    mask[30:70, 30:70] = 255
    drawn = overlay.draw(image, mask, [overlay.Marker(10, 90, "add")])
    assert np.array_equal(image, np.full((100, 100, 3), 128, np.uint8)), "input untouched"
    assert not np.array_equal(drawn[50, 50], image[50, 50]), "inside is tinted"
    assert np.array_equal(drawn[5, 50], image[5, 50]), "far outside is untouched"
    edge = drawn[30, 30:70]
    assert (edge.astype(int).sum(axis=1) > 600).any(), "a light outline on the edge"
    near_marker = drawn[84:97, 4:17].reshape(-1, 3)
    assert (near_marker == overlay.MARKER_COLORS["add"]).all(axis=1).any(), "a green marker at the point"


def test_display_coordinates_map_back_to_the_original() -> None:
    scale = overlay.display_scale(4000, 3000)
    assert scale == pytest.approx(1280 / 4000)
    x, y = overlay.to_original(639.5, 479.5, scale, 4000, 3000)
    assert x == pytest.approx(1999.5, abs=1) and y == pytest.approx(1499.5, abs=1)
    assert overlay.to_original(5000, -3, scale, 4000, 3000) == (3999.0, 0.0)


def test_clicks_outside_are_clamped_and_a_thin_box_is_refused() -> None:
    session = opened()
    session.click(-5, 500, "add")
    assert session.selection.current.prompts.points == ((0.0, 119.0),)
    session.click(10, 10, "box")
    with pytest.raises(SelectionError, match="too thin"):
        session.click(11, 90, "box")
    assert session.selection.pending_corner == (10, 10), "the first corner stays for another try"


def test_later_brush_strokes_win_over_earlier_ones() -> None:
    session, segment = opened(), disc_segmenter()
    region = np.zeros((120, 160), bool)
    region[10:20, 10:20] = True
    session.paint(region, None)
    session.paint(None, region)
    assert not session.selection_mask(segment).any()
    session.paint(region, None)
    assert session.selection_mask(segment)[15, 15] == 255


def test_a_single_result_keeps_no_variations_and_old_variations_expire() -> None:
    session = opened()
    session.add_result([np.full_like(session.image, 9)], {"seed": "1"}, "erase")
    assert session.variations is None and session.version.metadata == {"seed": "1"}
    session.add_result([np.full_like(session.image, v) for v in (1, 2)], {}, "fill: x")
    session.undo()
    with pytest.raises(EditorError, match="no longer the working photo"):
        session.choose_variation(1)


def test_sessions_deep_copied_from_one_start_share_nothing() -> None:
    template = Session()  # gr.State deep-copies its initial value for each browser session
    first, second = copy.deepcopy(template), copy.deepcopy(template)
    second.open(np.zeros((8, 8, 3), np.uint8), "x")
    second.begin_edit()
    second.request_cancel()
    assert not first.has_image and not first.cancel.is_set()
    assert first.cancel is not second.cancel
    assert first.uid != second.uid, "each session gets its own download folder"
