"""One person's session: the selection, the version tree (branches, undo, redo, the edit's base),
variations; and the selection overlay (pure drawing)."""
from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest

from editor.core import masks
from editor.ui import views
from editor.core.display import display_scale
from editor.core.errors import EditorError, SelectionError
from editor.session.history import THUMB_SIDE
from editor.core.prompts import Prompts
from editor.session.session import MASKS_PER_SESSION, Session
from editor.session.store import SessionStore


@pytest.fixture
def store(tmp_path: Path) -> SessionStore:
    return SessionStore(tmp_path / "sessions", 64 * 2**20, ttl_seconds=3600)


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


def opened(store: SessionStore, height: int = 120, width: int = 160) -> Session:
    session = store.create()
    session.open(np.full((height, width, 3), 100, np.uint8), "test")
    return session


def edit(session: Session, value: int, box: tuple[int, int, int, int] = (10, 10, 30, 30),
         base: int | None = None, label: str | None = None) -> np.ndarray:
    """An edit that paints `box` (x0, y0, x1, y1) with `value` on version `base` (the working one
    by default), committed as its result; the image it committed."""
    base = session.version.number if base is None else base
    image = session.image_of(base).copy()
    x0, y0, x1, y1 = box
    image[y0:y1, x0:x1] = value
    session.commit(image, label or f"edit {value}", {"value": str(value)}, base)
    return image


def test_a_new_session_has_no_photo_and_says_so(store: SessionStore) -> None:
    session = store.create()
    assert not session.has_image and session.versions == [] and not session.can_undo and not session.can_redo
    with pytest.raises(EditorError, match="upload a photo"):
        session.image  # noqa: B018
    with pytest.raises(EditorError, match="upload a photo"):
        session.begin_edit()


def test_clicks_build_the_selection_and_undo_click_takes_them_back(store: SessionStore) -> None:
    session, segment = opened(store), disc_segmenter()
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


def test_a_negative_point_needs_an_object_first(store: SessionStore) -> None:
    session = opened(store)
    with pytest.raises(SelectionError, match="object first"):
        session.click(10, 10, "remove")
    session.click(40, 40, "add")
    session.click(45, 45, "remove")
    assert session.selection.current.prompts.labels == (1, 0)


def test_box_mode_takes_two_corners_in_any_order(store: SessionStore) -> None:
    session, segment = opened(store), disc_segmenter()
    session.click(90, 80, "box")
    assert session.selection.pending_corner == (90, 80)
    assert not session.selection_mask(segment).any()
    session.click(30, 20, "box")
    assert session.selection.current.prompts.box == (30, 20, 90, 80)
    mask = session.selection_mask(segment)
    assert mask[50, 60] == 255 and mask[10, 10] == 0


def test_objects_are_added_and_subtracted(store: SessionStore) -> None:
    session, segment = opened(store), disc_segmenter()
    session.click(40, 60, "add")
    session.new_part(subtract=False)
    session.click(120, 60, "add")
    both = session.selection_mask(segment)
    assert both[60, 40] == 255 and both[60, 120] == 255
    session.new_part(subtract=True)
    session.click(125, 60, "add")
    cut = session.selection_mask(segment)
    assert cut[60, 40] == 255 and cut[60, 120] == 0


def test_invert_and_brush_strokes(store: SessionStore) -> None:
    session, segment = opened(store), disc_segmenter()
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


def test_masks_are_computed_once_per_object_and_version(store: SessionStore) -> None:
    calls: list[Prompts] = []
    session, segment = opened(store), disc_segmenter(calls)
    session.click(40, 60, "add")
    for _ in range(3):
        session.selection_mask(segment)
    assert len(calls) == 1


def test_grow_and_feather_shape_the_edit_and_preview_masks(store: SessionStore) -> None:
    session, segment = opened(store), disc_segmenter()
    session.click(80, 60, "add")
    session.grow_px, session.feather_px = 5, 6
    base = session.selection_mask(segment)
    assert np.array_equal(session.edit_mask(segment), masks.grow(base, 5))
    preview = session.preview_mask(segment) > 0
    assert (preview >= (masks.grow(base, 5) > 0)).all(), "the grown selection is fully shown"
    assert not (preview & ~(masks.grow(base, 12) > 0)).any(), "the soft edge reaches no farther than grow + feather"
    assert preview.sum() > (masks.grow(base, 5) > 0).sum(), "the soft edge shows"


def test_clicks_outside_are_clamped_and_a_thin_box_is_refused(store: SessionStore) -> None:
    session = opened(store)
    session.click(-5, 500, "add")
    assert session.selection.current.prompts.points == ((0.0, 119.0),)
    session.click(10, 10, "box")
    with pytest.raises(SelectionError, match="too thin"):
        session.click(11, 90, "box")
    assert session.selection.pending_corner == (10, 10), "the first corner stays for another try"


def test_later_brush_strokes_win_over_earlier_ones(store: SessionStore) -> None:
    session, segment = opened(store), disc_segmenter()
    region = np.zeros((120, 160), bool)
    region[10:20, 10:20] = True
    session.paint(region, None)
    session.paint(None, region)
    assert not session.selection_mask(segment).any()
    session.paint(region, None)
    assert session.selection_mask(segment)[15, 15] == 255


def test_overlay_tints_the_selection_outlines_it_and_marks_points() -> None:
    image = np.full((100, 100, 3), 128, np.uint8)
    mask = np.zeros((100, 100), np.uint8)
    mask[30:70, 30:70] = 255
    drawn = views.draw(image, mask, [views.Marker(10, 90, "add")])
    assert np.array_equal(image, np.full((100, 100, 3), 128, np.uint8)), "input untouched"
    assert not np.array_equal(drawn[50, 50], image[50, 50]), "inside is tinted"
    assert np.array_equal(drawn[5, 50], image[5, 50]), "far outside is untouched"
    edge = drawn[30, 30:70]
    assert (edge.astype(int).sum(axis=1) > 600).any(), "a light outline on the edge"
    near_marker = drawn[84:97, 4:17].reshape(-1, 3)
    assert (near_marker == views.MARKER_COLORS["add"]).all(axis=1).any(), "a green marker at the point"


def test_display_coordinates_map_back_to_the_original() -> None:
    scale = display_scale(4000, 3000)
    assert scale == pytest.approx(1280 / 4000)
    x, y = views.to_original(639.5, 479.5, scale, 4000, 3000)
    assert x == pytest.approx(1999.5, abs=1) and y == pytest.approx(1499.5, abs=1)
    assert views.to_original(5000, -3, scale, 4000, 3000) == (3999.0, 0.0)




# --- the version tree ---------------------------------------------------------------------------


def test_editing_an_earlier_version_starts_a_branch_and_keeps_the_later_ones(store: SessionStore) -> None:
    session = opened(store)
    original = session.image.copy()
    first = edit(session, 1)
    second = edit(session, 2, (40, 40, 60, 60))
    third = edit(session, 3, (70, 20, 90, 50))
    session.goto(2)  # back to the first edit
    fill = edit(session, 9, (100, 80, 150, 110), label="fill: x")
    assert [(v.number, v.parent, v.label) for v in session.versions] == [
        (1, None, "original"), (2, 1, "edit 1"), (3, 2, "edit 2"), (4, 3, "edit 3"), (5, 2, "fill: x")]
    for number, expected in zip(range(1, 6), (original, first, second, third, fill)):
        assert np.array_equal(session.image_of(number), expected), number
    assert session.children(2) == [3, 5], "a branch: both edits of version 2 stay"
    session.undo()
    assert session.version.number == 2
    session.redo()
    assert session.version.number == 5, "redo follows the branch last made"
    session.goto(4)
    session.undo()
    session.undo()
    assert session.version.number == 2
    session.redo()
    session.redo()
    assert session.version.number == 4 and np.array_equal(session.image, third), "redo follows the branch last visited"
    assert not session.can_redo
    session.undo(), session.undo(), session.undo()
    assert np.array_equal(session.image, original) and not session.can_undo
    with pytest.raises(EditorError, match="nothing to undo"):
        session.undo()


def test_an_edits_result_lands_on_the_version_it_started_from(store: SessionStore) -> None:
    session = opened(store)
    first = edit(session, 1)
    base = session.begin_edit()
    assert base == 2
    session.goto(1)  # the person clicks the original in the strip while the edit runs
    result = first.copy()
    result[50:60, 50:60] = 7
    session.commit(result, "fill: y", {}, base)
    session.end_edit()
    assert session.version.parent == base and np.array_equal(session.image, result)
    assert session.previous is not None and session.previous.number == base
    assert [v.number for v in session.versions] == [1, 2, 3]


def test_a_result_started_before_a_new_upload_stays_with_its_own_photo(store: SessionStore) -> None:
    session = opened(store)
    base = session.begin_edit()
    result = session.image.copy()
    result[0:5, 0:5] = 3
    cat = session.open(np.full((50, 70, 3), 200, np.uint8), "cat")
    session.commit(result, "erase", {}, base)
    assert session.version.parent == base and session.image.shape == (120, 160, 3)
    assert cat.parent is None and session.children(cat.number) == [], "nothing landed in the new photo's history"
    with pytest.raises(EditorError, match="no version 99"):
        session.commit(result, "erase", {}, 99)


def test_a_new_photo_keeps_the_old_photos_versions(store: SessionStore) -> None:
    session = opened(store)
    first = edit(session, 1)
    second = session.open(np.full((50, 70, 3), 200, np.uint8), "second")
    assert second.parent is None and second.size == (70, 50) and session.name == "second"
    assert [v.label for v in session.versions] == ["original", "edit 1", "original"]
    assert not session.can_undo, "a new photo starts its own history"
    session.goto(2)
    assert np.array_equal(session.image, first) and session.name == "test", "each photo keeps its own name"


def test_every_version_is_rebuilt_exactly_after_many_random_edits(store: SessionStore) -> None:
    """Property-style: random boxes (thin, wide, whole photo, nothing), random bases (branches)."""
    rng = np.random.default_rng(7)
    session = store.create()
    root = session.open(rng.integers(0, 256, (90, 130, 3), np.uint8))
    expected = {root.number: session.image.copy()}
    for _ in range(60):
        base = int(rng.choice(list(expected)))
        image = expected[base].copy()
        for _ in range(int(rng.integers(0, 3))):  # 0 boxes: a result equal to its base
            x0, x1 = sorted(rng.integers(0, 131, 2))
            y0, y1 = sorted(rng.integers(0, 91, 2))
            image[y0:y1 + 1, x0:x1 + 1] = rng.integers(0, 256, (min(y1 + 1, 90) - y0, min(x1 + 1, 130) - x0, 3))
        expected[session.commit(image, "edit", {}, base).number] = image
    assert len(session.versions) == 61
    for number, image in expected.items():
        assert np.array_equal(session.image_of(number), image), number
    assert all(not session.image_of(n).flags.writeable for n in expected), "versions are read-only"


def test_the_working_image_is_the_same_object_while_cached_and_thumbnails_are_small(store: SessionStore) -> None:
    session = store.create()
    session.open(np.zeros((900, 1200, 3), np.uint8))
    assert session.image is session.image
    thumb = session.version.thumbnail
    assert thumb.shape == (120, THUMB_SIDE, 3) and thumb.dtype == np.uint8 and session.version.size == (1200, 900)


def test_variations_first_commits_and_another_can_be_chosen(store: SessionStore) -> None:
    session = opened(store)
    images = [np.full_like(session.image, v) for v in (10, 20, 30)]
    base = session.begin_edit()
    session.end_edit()
    session.add_result(images, {"seed": "5"}, "fill: a cat", base)
    assert np.array_equal(session.image, images[0]) and session.version.metadata["variation"] == "1 of 3"
    assert session.variations is not None and len(session.variations.thumbnails) == 3
    session.choose_variation(2)
    assert np.array_equal(session.image, images[2]) and session.version.metadata["variation"] == "3 of 3"
    assert len(session.versions) == 2, "choosing replaces the result, it does not add a version"
    assert session.version.parent == 1
    session.choose_variation(0)
    assert np.array_equal(session.image, images[0])
    with pytest.raises(EditorError):
        session.choose_variation(7)


def test_choosing_a_variation_while_an_edit_runs_on_it_keeps_the_edits_base(store: SessionStore) -> None:
    session = opened(store)
    session.add_result([np.full_like(session.image, v) for v in (10, 20)], {}, "fill: a cat", 1)
    base = session.begin_edit()
    session.choose_variation(1)
    result = session.image_of(base).copy()
    result[0:4, 0:4] = 1
    session.commit(result, "erase", {}, base)
    session.end_edit()
    assert session.version.parent == base and [v.parent for v in session.versions] == [None, 1, 1, 2]


def test_choosing_a_variation_that_has_later_edits_keeps_them(store: SessionStore) -> None:
    session = opened(store)
    images = [np.full_like(session.image, v) for v in (10, 20)]
    session.add_result(images, {}, "fill: a cat", 1)
    later = edit(session, 99)
    session.undo()
    session.choose_variation(1)
    assert [(v.number, v.parent) for v in session.versions] == [(1, None), (2, 1), (3, 2), (4, 1)]
    assert np.array_equal(session.image_of(3), later) and np.array_equal(session.image, images[1])


def test_a_single_result_keeps_no_variations_and_old_variations_expire(store: SessionStore) -> None:
    session = opened(store)
    session.add_result([np.full_like(session.image, 9)], {"seed": "1"}, "erase", 1)
    assert session.variations is None and session.version.metadata == {"seed": "1"}
    session.add_result([np.full_like(session.image, v) for v in (1, 2)], {}, "fill: x", 2)
    session.undo()
    with pytest.raises(EditorError, match="no longer the working photo"):
        session.choose_variation(1)


def test_an_edit_keeps_the_selection_and_undo_resets_it(store: SessionStore) -> None:
    session = opened(store)
    session.click(40, 40, "add")
    kept = session.selection
    edit(session, 1)
    assert session.selection == kept, "an edit of the same size keeps the selection, for another try"
    session.click(40, 40, "add")
    session.undo()
    assert session.selection.is_empty


def test_the_mask_cache_keeps_only_the_last_few(store: SessionStore) -> None:
    session, segment = opened(store), disc_segmenter()
    session.image  # noqa: B018 - the working image is cached before counting
    before = store.bytes_in_memory()
    for i in range(MASKS_PER_SESSION + 6):
        session.click(10 + i, 40, "add")  # each click: new prompts, one more mask
        session.selection_mask(segment)
    assert store.bytes_in_memory() - before == MASKS_PER_SESSION * 120 * 160


def test_cancel_only_when_an_edit_is_pending(store: SessionStore) -> None:
    session = opened(store)
    assert session.request_cancel() is False and not session.edit_running
    assert session.begin_edit() == 1
    assert session.edit_running
    assert session.request_cancel() is True and session.cancel.is_set()
    session.end_edit()
    assert not session.cancel.is_set() and not session.edit_running


def test_sessions_share_nothing_and_refuse_to_be_copied(store: SessionStore) -> None:
    first, second = store.create(), store.create()
    second.open(np.zeros((8, 8, 3), np.uint8), "x")
    second.begin_edit()
    second.request_cancel()
    assert not first.has_image and not first.cancel.is_set()
    assert first.cancel is not second.cancel and first.id != second.id
    with pytest.raises(TypeError, match="keep its id"):  # gr.State(session) would share or fork it
        copy.deepcopy(second)
