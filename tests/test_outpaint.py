"""Extend the canvas (outpainting): the geometry, the engine with the tiny SD2 model, the CLI and the page."""
from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest

from editor import cli
from editor.core import canvas, composite, masks
from editor.core.composite import CropPlan
from editor.core.errors import EditorError, ModelUnavailableError
from editor.core.photo_io import load_image, read_png_metadata, save_png
from editor.engine import strategy
from editor.engine.ops import OUTPAINT_PROMPT, EditOptions, Engine
from editor.session.store import SessionStore
from editor.ui.handlers import Handlers
from tests.conftest import tiny_config

OPTIONS = EditOptions(seed=7, steps=1)  # each piece costs seconds on a busy CPU, even with the tiny model
TINY_NATIVE = 256  # the tiny SD2 model: 32 latents x 8


@pytest.fixture
def small(photo: np.ndarray) -> np.ndarray:
    """The photo at 160x120: any extension that stays within the tiny model's native size is one piece."""
    return np.ascontiguousarray(photo[::2, ::2])


def at_offset(result: np.ndarray, image: np.ndarray, extend: canvas.Extend) -> np.ndarray:
    left, top = extend[0], extend[1]
    return result[top:top + image.shape[0], left:left + image.shape[1]]


# --- geometry --------------------------------------------------------------------------------


def test_extend_is_four_non_negative_pixel_counts() -> None:
    assert canvas.parse_extend("0,10,256,0") == (0, 10, 256, 0)
    assert canvas.parse_extend(" 1, 2 ,3,4 ") == (1, 2, 3, 4)


@pytest.mark.parametrize("text, message", [
    ("1,2,3", "LEFT,TOP,RIGHT,BOTTOM"),
    ("1,2,3,4,5", "LEFT,TOP,RIGHT,BOTTOM"),
    ("a,b,c,d", "LEFT,TOP,RIGHT,BOTTOM"),
    ("1.5,0,0,0", "LEFT,TOP,RIGHT,BOTTOM"),
    ("-8,0,0,0", "cannot be negative"),
    ("0,0,0,0", "at least one side"),
])
def test_bad_extensions_are_refused_in_one_line(text: str, message: str) -> None:
    with pytest.raises(EditorError, match=message) as refused:
        canvas.parse_extend(text)
    assert "\n" not in str(refused.value)


@pytest.mark.parametrize("aspect, size", [
    ("16:9", (427, 240)),  # 240 * 16 / 9 = 426.7
    ("1:1", (320, 320)),
    ("3:2", (360, 240)),
    ("9:16", (320, 569)),  # 320 * 16 / 9 = 568.9
    ("2.39:1", (574, 240)),
])
def test_an_aspect_grows_the_short_side_evenly(aspect: str, size: tuple[int, int]) -> None:
    extend = canvas.extend_for_aspect(320, 240, aspect)
    assert canvas.extended_size(320, 240, extend) == size
    left, top, right, bottom = extend
    assert (left, right) == (0, 0) or (top, bottom) == (0, 0), "only the dimension short for the aspect grows"
    assert abs(left - right) <= 1 and abs(top - bottom) <= 1, "split evenly"
    ratio = canvas.parse_aspect(aspect)
    width, height = size
    nearest = min([(width + d, height) for d in (-1, 0, 1)] + [(width, height + d) for d in (-1, 0, 1)],
                  key=lambda s: abs(s[0] / s[1] - ratio))
    assert abs(width / height - ratio) == pytest.approx(abs(nearest[0] / nearest[1] - ratio))


@pytest.mark.parametrize("aspect, message", [
    ("4:3", "already 4:3"),
    ("16-9", "W:H"),
    ("0:9", "W:H"),
    ("16:", "W:H"),
    ("1000:1", "too extreme"),
])
def test_bad_aspects_are_refused_in_one_line(aspect: str, message: str) -> None:
    with pytest.raises(EditorError, match=message) as refused:
        canvas.extend_for_aspect(320, 240, aspect)
    assert "\n" not in str(refused.value)


def test_the_extended_canvas_holds_the_original_exactly_and_its_edge_outside(photo: np.ndarray) -> None:
    extend = (40, 10, 0, 30)
    extended = canvas.extend_canvas(photo, extend)
    assert extended.shape == (240 + 40, 320 + 40, 3)
    assert np.array_equal(at_offset(extended, photo, extend), photo)
    assert np.abs(extended[10:250, 39].astype(int) - photo[:, 0]).max() <= 12, "next to the photo: its edge"
    far = extended[10:250, 0].astype(float)
    assert far.std(axis=0).max() < photo[:, 0].astype(float).std(axis=0).max(), "farther out: blurred"
    border = canvas.border_mask(320, 240, extend)
    assert border.shape == extended.shape[:2] and (border > 0).sum() == 360 * 280 - 320 * 240
    assert not border[10:250, 40:360].any()


@pytest.mark.parametrize("size, inner, native", [
    ((480, 272), (64, 32, 384, 272), 256),
    ((4400, 3400), (200, 200, 4200, 3200), 512),
    ((1500, 600), (0, 0, 700, 600), 512),  # one side only, far wider than the photo
    ((300, 200), (10, 10, 290, 190), 512),  # the whole canvas fits one crop
    ((2000, 300), (900, 0, 1100, 300), 1024),  # a narrow photo, far extended on both sides
])
def test_border_pieces_cover_the_border_at_most_at_native_size(size: tuple[int, int], inner: strategy.Box,
                                                               native: int) -> None:
    width, height = size
    pieces = strategy.border_pieces(size, inner, native, overlap=native // 4)
    covered = np.zeros((height, width), bool)
    for piece in pieces:
        assert 0 <= piece.x0 < piece.x1 <= width and 0 <= piece.y0 < piece.y1 <= height
        assert piece.x1 - piece.x0 <= native and piece.y1 - piece.y0 <= native
        assert max(piece.work_width, piece.work_height) <= native and piece.work_width % 8 == 0
        border_here = np.ones((piece.y1 - piece.y0, piece.x1 - piece.x0), bool)
        x0, y0, x1, y1 = inner
        border_here[max(0, y0 - piece.y0):max(0, y1 - piece.y0), max(0, x0 - piece.x0):max(0, x1 - piece.x0)] = False
        assert (border_here & ~piece.crop(covered)).any(), "every piece adds border no earlier one holds"
        piece.crop(covered)[...] = True
    covered[inner[1]:inner[3], inner[0]:inner[2]] = True
    assert covered.all(), "the pieces hold every pixel of the border"
    first = pieces[0]
    assert first.x0 < inner[2] and inner[0] < first.x1 and first.y0 < inner[3] and inner[1] < first.y1, \
        "the first piece sees the original"


def test_a_big_border_is_several_overlapping_pieces() -> None:
    pieces = strategy.border_pieces((4400, 3400), (200, 200, 4200, 3200), 512, overlap=128)
    assert len(pieces) > 20
    assert pieces[1].x0 <= pieces[0].x1 - 128, "neighbours overlap, so the later one blends into the earlier"


def test_fill_border_changes_the_border_only_and_each_piece_sees_the_earlier_ones(photo: np.ndarray) -> None:
    extend = (64, 32, 96, 0)
    prefilled = canvas.extend_canvas(photo, extend)
    border = canvas.border_mask(320, 240, extend)
    pieces = strategy.border_pieces((480, 272), canvas.original_box(320, 240, extend), TINY_NATIVE, 64)
    seen: list[np.ndarray] = []

    def model(work: np.ndarray, hole: np.ndarray) -> np.ndarray:
        seen.append(work.copy())
        return np.where(hole[..., None] > 0, 200, work).astype(np.uint8)  # paints its hole light grey

    result = strategy.fill_border(prefilled, border, pieces, model, blend_px=16, multiple=8)
    assert len(seen) == len(pieces) > 1
    assert np.array_equal(at_offset(result, photo, extend), photo)
    assert (result[border > 0] == 200).all()
    first, second = pieces[0], pieces[1]
    shared = np.zeros(border.shape, bool)
    shared[max(first.y0, second.y0):min(first.y1, second.y1), max(first.x0, second.x0):min(first.x1, second.x1)] = True
    shared &= border > 0
    assert shared.any(), "neighbouring pieces overlap on the border"
    assert (seen[1][second.crop(shared)] == 200).all(), "the second piece sees what the first painted"


@pytest.mark.parametrize("extend", [(10, 0, 20, 5), (0, 3, 0, 0), (30, 30, 30, 30), (1, 1, 1, 1)])
@pytest.mark.parametrize("feather", [0, 1, 8])
def test_the_soft_seam_fades_on_the_border_side_only(extend: canvas.Extend, feather: int) -> None:
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, (60, 80, 3), np.uint8)
    prefilled = canvas.extend_canvas(image, extend)
    painted = rng.integers(0, 256, prefilled.shape, np.uint8)
    painted[canvas.border_mask(80, 60, extend) == 0] = prefilled[canvas.border_mask(80, 60, extend) == 0]
    out = strategy.soft_seam(prefilled, painted.copy(), canvas.original_box(80, 60, extend), feather)
    assert np.array_equal(at_offset(out, image, extend), image)
    border = canvas.border_mask(80, 60, extend)
    # The same as blending the whole canvas through the border shrunk and feathered back out.
    alpha = composite.paste_alpha(border, -feather, feather, protect=masks.invert(border))
    height, width = border.shape
    assert np.array_equal(out, composite.paste_back(prefilled, painted, CropPlan(0, 0, width, height, 0, 0), alpha))
    far = masks.shrink(border, 2 * feather) > 0
    assert np.array_equal(out[far], painted[far]), "beyond the fade, the border is all painted"


# --- the engine ------------------------------------------------------------------------------


def test_outpaint_keeps_the_original_exact_at_its_offset(sam_sd2_engine: Engine, photo: np.ndarray) -> None:
    extend = (48, 8, 48, 0)  # 416x248: wider than the tiny model's 256, so two pieces
    steps: list[tuple[int, int]] = []
    result = sam_sd2_engine.outpaint(photo, extend, "a meadow", EditOptions(seed=7, steps=2),
                                     lambda done, total: steps.append((done, total)))
    (out,) = result.images
    assert out.shape == (240 + 8, 320 + 48 + 48, 3)
    assert np.array_equal(at_offset(out, photo, extend), photo), "the original is bit-exact at its offset"
    prefilled = canvas.extend_canvas(photo, extend)
    border = result.mask > 0
    assert border.sum() == 416 * 248 - 320 * 240
    assert (np.abs(out[border].astype(int) - prefilled[border]).max(axis=1) > 8).mean() > 0.5, "the border is painted"
    pieces = strategy.border_pieces((416, 248), canvas.original_box(320, 240, extend), TINY_NATIVE, 64)
    assert len(pieces) == 2
    assert steps[-1] == (4, 4), "one progress bar over every piece: 2 pieces x 2 steps"
    assert [done for done, _ in steps] == [1, 2, 3, 4]
    assert result.metadata["mode"] == "outpaint" and result.metadata["extend"] == "48,8,48,0"
    assert result.metadata["prompt"] == "a meadow" and result.metadata["seed"] == "7"
    assert result.metadata["steps"] == "2" and result.metadata["model"]


def test_the_seam_is_soft_on_the_border_side(sam_sd2_engine: Engine, photo: np.ndarray) -> None:
    extend = (48, 0, 0, 0)
    out = sam_sd2_engine.outpaint(photo, extend, "", replace_feather(OPTIONS, 8)).images[0]
    prefilled = canvas.extend_canvas(photo, extend)
    next_to = np.abs(out[:, 47].astype(int) - prefilled[:, 47]).mean()
    farther = np.abs(out[:, 20].astype(int) - prefilled[:, 20]).mean()
    assert next_to < farther / 3, "next to the original the border fades into its edge colours"


def replace_feather(options: EditOptions, feather: int) -> EditOptions:
    return EditOptions(**{**options.__dict__, "feather": feather})


@pytest.mark.parametrize("aspect, size", [("16:9", (213, 120)), ("9:16", (160, 284))])
def test_outpaint_to_an_aspect_has_the_expected_size(sam_sd2_engine: Engine, small: np.ndarray, aspect: str,
                                                     size: tuple[int, int]) -> None:
    extend = canvas.extend_for_aspect(160, 120, aspect)
    result = sam_sd2_engine.outpaint(small, extend, "", OPTIONS)
    out = result.images[0]
    assert (out.shape[1], out.shape[0]) == size
    assert np.array_equal(at_offset(out, small, extend), small)
    assert result.metadata["prompt"] == OUTPAINT_PROMPT, "an empty prompt continues the scene"


def test_outpaint_variations_each_keep_the_original(sam_sd2_engine: Engine, small: np.ndarray) -> None:
    extend = (0, 0, 40, 0)
    result = sam_sd2_engine.outpaint(small, extend, "a wall", EditOptions(seed=3, steps=1, num_images=2))
    first, second = result.images
    assert not np.array_equal(first, second)
    for out in result.images:
        assert np.array_equal(at_offset(out, small, extend), small)
    single = sam_sd2_engine.outpaint(small, extend, "a wall", EditOptions(seed=3, steps=1)).images[0]
    assert np.array_equal(single, first), "variation 1 is what a single run with the seed gives"


def test_outpaint_over_max_pixels_is_refused_before_any_work(sam_sd2_engine: Engine, photo: np.ndarray) -> None:
    small = copy.copy(sam_sd2_engine)
    small.max_pixels = 100_000
    steps: list[int] = []
    with pytest.raises(EditorError, match="max_image_pixels") as refused:
        small.outpaint(photo, (100, 0, 100, 0), "a meadow", OPTIONS, lambda done, total: steps.append(done))
    assert "520x240" in str(refused.value) and "\n" not in str(refused.value)
    assert not steps


def test_outpaint_without_an_inpainting_model_names_the_download(fallback_engine: Engine,
                                                                 photo: np.ndarray) -> None:
    with pytest.raises(ModelUnavailableError, match="python -m editor download inpainter") as refused:
        fallback_engine.outpaint(photo, (0, 0, 64, 0), "a meadow", OPTIONS)
    assert "\n" not in str(refused.value)


@pytest.mark.parametrize("extend", [(0, 0, 0, 0), (-1, 0, 4, 0), (1, 2, 3)])
def test_outpaint_refuses_a_bad_extension(sam_sd2_engine: Engine, photo: np.ndarray, extend: tuple) -> None:
    with pytest.raises(EditorError):
        sam_sd2_engine.outpaint(photo, extend, "a meadow", OPTIONS)


# --- the CLI ---------------------------------------------------------------------------------


@pytest.fixture
def cli_setup(tmp_path: Path, small: np.ndarray, tiny_sd2_dir: Path, empty_models_dir: Path) -> tuple[Path, list[str]]:
    path = tmp_path / "photo.png"
    save_png(small, path)
    settings = ["--set", "device=cpu", "--set", f"models_dir={empty_models_dir}", "--set", "auto_download=false",
                "--set", "inpaint.steps=1", "--set", "inpaint.strength=1.0", "--set", f"inpaint.model={tiny_sd2_dir}"]
    return path, settings


def test_cli_outpaint_with_extend_and_aspect(cli_setup: tuple[Path, list[str]], small: np.ndarray,
                                             tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path, settings = cli_setup
    wider = tmp_path / "wider.png"
    assert cli.main(["edit", str(path), "-o", str(wider), "--mode", "outpaint", "--extend", "16,0,40,8",
                     "--prompt", "a meadow", "--seed", "5", *settings]) == 0
    out = load_image(wider, 10**8)
    assert out.shape == (128, 216, 3) and np.array_equal(out[0:120, 16:176], small)
    metadata = read_png_metadata(wider)
    assert metadata["mode"] == "outpaint" and metadata["extend"] == "16,0,40,8" and metadata["seed"] == "5"
    assert "216x128" in capsys.readouterr().out

    square = tmp_path / "square.png"
    assert cli.main(["edit", str(path), "-o", str(square), "--mode", "outpaint", "--aspect", "1:1", *settings]) == 0
    out = load_image(square, 10**8)
    assert out.shape == (160, 160, 3) and np.array_equal(out[20:140], small)


@pytest.mark.parametrize("flags, message", [
    (["--extend", "0,0,8,0", "--mask", "m.png"], "takes no selection: drop --mask"),
    (["--extend", "0,0,8,0", "--point", "10,10"], "drop --point"),
    ([], "either --extend"),
    (["--extend", "0,0,8,0", "--aspect", "1:1"], "either --extend"),
    (["--extend", "0,0,8"], "LEFT,TOP,RIGHT,BOTTOM"),
    (["--aspect", "4:3"], "already 4:3"),
])
def test_cli_outpaint_refusals_are_one_line(cli_setup: tuple[Path, list[str]], tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str], flags: list[str],
                                            message: str) -> None:
    path, settings = cli_setup
    code = cli.main(["edit", str(path), "-o", str(tmp_path / "out.png"), "--mode", "outpaint", *flags, *settings])
    err = capsys.readouterr().err
    assert code == 1 and message in err and err.count("\n") == 1
    assert not (tmp_path / "out.png").exists()


def test_cli_outpaint_without_the_model_names_the_download(tmp_path: Path, small: np.ndarray,
                                                          empty_models_dir: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "photo.png"
    save_png(small, path)
    code = cli.main(["edit", str(path), "-o", str(tmp_path / "out.png"), "--mode", "outpaint", "--extend", "0,0,8,0",
                     "--set", "device=cpu", "--set", f"models_dir={empty_models_dir}", "--set", "auto_download=false"])
    err = capsys.readouterr().err
    assert code == 1 and "python -m editor download inpainter" in err and err.count("\n") == 1


def test_cli_extend_is_for_outpaint_only(cli_setup: tuple[Path, list[str]], tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    path, settings = cli_setup
    code = cli.main(["edit", str(path), "-o", str(tmp_path / "out.png"), "--mode", "fill", "--prompt", "x",
                     "--point", "10,10", "--extend", "0,0,8,0", *settings])
    assert code == 1 and "--mode outpaint" in capsys.readouterr().err


# --- the page --------------------------------------------------------------------------------


def page_handlers(engine: Engine, tmp_path: Path) -> Handlers:
    store = SessionStore(tmp_path / "sessions", 256 * 2**20, 3600.0)
    return Handlers(engine, tiny_config(tmp_path), [], store)


PAGE = dict(prompt="a meadow", negative="", steps=1, guidance=5.0, strength=1.0, seed=7, count=1, generative=False)


def test_page_extend_canvas_is_an_undoable_edit(sam_sd2_engine: Engine, tmp_path: Path, small: np.ndarray) -> None:
    handlers = page_handlers(sam_sd2_engine, tmp_path)
    session = handlers.new_session()
    session.open(small, "photo")
    session.click(80, 60, "add")
    outputs = handlers.outpaint(session, **PAGE, aspect="none", left=0, top=16, right=48, bottom=None)
    assert "Extend canvas done" in outputs[0]
    assert session.image.shape == (136, 208, 3)
    assert np.array_equal(session.image[16:136, 0:160], small)
    assert session.selection.is_empty, "the selection resets: it was drawn on the smaller photo"
    assert session.version.metadata["mode"] == "outpaint" and session.version.label == "extend canvas: a meadow"
    assert outputs[1].shape[:2] == (136, 208), "the canvas shows the extended photo"
    extended = session.image.copy()

    handlers.undo(session)
    assert np.array_equal(session.image, small), "undo gives back the original size and pixels"
    handlers.redo(session)
    assert np.array_equal(session.image, extended)

    handlers.outpaint(session, **{**PAGE, "prompt": ""}, aspect="1:1", left=5, top=5, right=5, bottom=5)
    assert session.image.shape == (208, 208, 3), "an aspect wins over the pixels per side"
    assert np.array_equal(session.image[36:172], extended)
    assert session.version.label == "extend canvas"
    assert len(session.versions) == 3


@pytest.mark.parametrize("sides, message", [
    ((0, 0, 0, 0), "at least one side"),
    ((0, -4, 0, 0), "cannot be negative"),
    ((0, 1.5, 0, 0), "whole numbers"),
])
def test_page_extend_canvas_refuses_bad_sides(sam_sd2_engine: Engine, tmp_path: Path, small: np.ndarray,
                                              sides: tuple, message: str) -> None:
    handlers = page_handlers(sam_sd2_engine, tmp_path)
    session = handlers.new_session()
    session.open(small, "photo")
    left, top, right, bottom = sides
    with pytest.raises(EditorError, match=message):
        handlers.outpaint(session, **PAGE, aspect="none", left=left, top=top, right=right, bottom=bottom)
    assert len(session.versions) == 1 and not session.edit_running
