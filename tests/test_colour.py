"""Colour and metadata end to end: an Adobe RGB camera JPEG keeps its profile, EXIF and pixels through
an erase on the page's handlers, is shown converted to sRGB, and is exported as the settings say."""
from __future__ import annotations

import io
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image, ImageCms

from editor.cli import main as cli_main
from editor.core import masks
from editor.core.errors import ImageError
from editor.core.photo_io import load_image, load_photo, read_photo_metadata, save_png
from editor.engine.ops import Engine
from editor.session.store import SessionStore
from editor.ui.handlers import Handlers, history_thumbnails
from tests.conftest import tiny_config
from tests.test_ui_handlers import OPTIONS, click_at

ROOT = Path(__file__).resolve().parent.parent
ADOBE_RGB = Image.open(ROOT / "assets" / "rocket.jpg").info["icc_profile"]
CAMERA = {0x010F: "Canon", 0x0110: "Canon EOS R5", 0x0132: "2024:05:01 10:20:30", 0x8298: "(c) Jo Photographer"}
SATURATED = (40, 200, 60)  # an Adobe RGB green inside sRGB's gamut: its sRGB values differ, unclipped
ORIENTATION = 0x0112


def camera_jpeg(path: Path) -> Path:
    """A 320x240 Adobe RGB photo with a saturated disc, stored on its side with EXIF orientation 6
    (turn 90° clockwise to view) and a camera's make, model, date and copyright."""
    rng = np.random.default_rng(1)
    yy, xx = np.mgrid[0:240, 0:320]
    upright = np.stack([xx * 200 // 320 + 20, yy * 200 // 240 + 20, np.full_like(xx, 120)], axis=2)
    upright = np.clip(upright + rng.integers(-8, 8, upright.shape), 0, 255).astype(np.uint8)
    upright[(xx - 200) ** 2 + (yy - 110) ** 2 < 45**2] = SATURATED
    stored = np.rot90(upright, 1)  # what orientation 6 turns back upright
    exif = Image.Exif()
    for tag, value in {**CAMERA, ORIENTATION: 6}.items():
        exif[tag] = value
    exif.get_ifd(0x8769)[0x9003] = CAMERA[0x0132]  # DateTimeOriginal
    Image.fromarray(np.ascontiguousarray(stored)).save(path, "JPEG", quality=95, icc_profile=ADOBE_RGB, exif=exif,
                                                       dpi=(300, 300))
    return path


def srgb_of(image: np.ndarray) -> np.ndarray:
    """What Little CMS makes of Adobe RGB pixels in sRGB (relative colorimetric)."""
    converted = ImageCms.profileToProfile(Image.fromarray(image), ImageCms.ImageCmsProfile(io.BytesIO(ADOBE_RGB)),
                                          ImageCms.createProfile("sRGB"),
                                          renderingIntent=ImageCms.Intent.RELATIVE_COLORIMETRIC)
    return np.asarray(converted)


def handlers_for(engine: Engine, tmp_path: Path, photo: Path, *settings: str) -> Handlers:
    store = SessionStore(tmp_path / "sessions", 256 * 2**20, 3600.0)
    return Handlers(engine, tiny_config(tmp_path, *settings), [photo], store)


def open_photo(handlers: Handlers, photo: Path):  # type: ignore[no-untyped-def]
    session = handlers.new_session()
    outputs = handlers.upload(session, {"path": str(photo), "orig_name": photo.name})
    return session, outputs


def erase_disc(handlers: Handlers, session) -> np.ndarray:  # type: ignore[no-untyped-def]
    """Click the disc, erase it; the band an erase may change (the selection grown by its paste band)."""
    image = session.image
    disc = np.all(np.abs(image.astype(int) - SATURATED) < 30, axis=2)
    ys, xs = np.nonzero(disc)
    handlers.click(session, "add", click_at(int(xs.mean()), int(ys.mean())))
    selected = session.selection_mask(handlers.engine.select)
    assert selected[int(ys.mean()), int(xs.mean())]
    handlers.edit("erase", session, **OPTIONS)
    return masks.grow(selected, handlers.config.composite.grow + session.feather_px) > 0


def downloaded(handlers: Handlers, session) -> Path:  # type: ignore[no-untyped-def]
    value = handlers.download(session).value
    return Path(value["path"] if isinstance(value, dict) else value)


def exif_of(path: Path) -> dict[int, object]:
    with Image.open(path) as img:
        exif = img.getexif()
        return {**dict(exif), **exif.get_ifd(0x8769)}


def icc_of(path: Path) -> bytes | None:
    with Image.open(path) as img:
        return img.info.get("icc_profile")


@pytest.fixture
def jpeg(tmp_path: Path) -> Path:
    return camera_jpeg(tmp_path / "camera.jpg")


def test_an_adobe_rgb_jpeg_round_trips_through_an_erase(fallback_engine: Engine, tmp_path: Path, jpeg: Path) -> None:
    handlers = handlers_for(fallback_engine, tmp_path, jpeg)
    session, _ = open_photo(handlers, jpeg)
    decoded = load_image(jpeg, 10**8)
    assert decoded.shape == (240, 320, 3), "the EXIF orientation is applied"
    assert np.array_equal(session.image, decoded), "the photo is edited in its own colour space, unconverted"
    band = erase_disc(handlers, session)

    path = downloaded(handlers, session)
    assert path.suffix == ".png"
    assert icc_of(path) == ADOBE_RGB
    exif = exif_of(path)
    assert {tag: exif[tag] for tag in CAMERA} == CAMERA and exif[0x9003] == CAMERA[0x0132]
    assert exif[ORIENTATION] == 1, "the pixels are upright: the orientation tag says so"
    with Image.open(path) as img:
        assert img.info["dpi"] == pytest.approx((300, 300), abs=0.01)
    result = load_image(path, 10**8)
    assert np.array_equal(result, session.image)
    assert np.array_equal(result[~band], decoded[~band]), "pixels outside the edit are those of the decoded file"
    assert not np.array_equal(result[band], decoded[band])

    erase_disc_again = np.zeros(decoded.shape[:2], np.uint8)
    erase_disc_again[20:60, 20:60] = 255
    session.paint(erase_disc_again, None)
    handlers.edit("erase", session, **OPTIONS)
    history = json.loads(read_photo_metadata(downloaded(handlers, session))["history"])
    assert [step["mode"] for step in history] == ["erase", "erase"], "every edit's settings, not only the last"
    assert [step["version"] for step in history] == [str(v.number) for v in session.lineage()[1:]]


def test_the_page_shows_the_photo_converted_to_srgb(fallback_engine: Engine, tmp_path: Path, jpeg: Path) -> None:
    handlers = handlers_for(fallback_engine, tmp_path, jpeg)
    session, outputs = open_photo(handlers, jpeg)
    canvas, raw = outputs[1], session.image
    assert np.array_equal(canvas, srgb_of(raw)), "the canvas is Little CMS's sRGB rendering of the photo"
    disc = np.all(raw == SATURATED, axis=2) | np.all(np.abs(raw.astype(int) - SATURATED) < 4, axis=2)
    assert disc.any() and np.abs(canvas[disc].astype(int) - raw[disc]).max() > 20, "a saturated green shows greener"
    thumbnail = history_thumbnails(session)[0][0]
    assert np.array_equal(thumbnail, srgb_of(session.versions[0].thumbnail))

    erase_disc(handlers, session)
    before, after = handlers._photo_outputs(session, "")[3]
    assert np.array_equal(before, srgb_of(session.image_of(session.version.parent))), "the before/after too"
    assert np.array_equal(after, srgb_of(session.image))


def test_an_untagged_photo_is_shown_as_it_is(fallback_engine: Engine, tmp_path: Path) -> None:
    photo = tmp_path / "plain.png"
    save_png(load_image(ROOT / "assets" / "chelsea.png", 10**8), photo)
    handlers = handlers_for(fallback_engine, tmp_path, photo)
    session, outputs = open_photo(handlers, photo)
    assert np.array_equal(outputs[1], session.image)


def test_export_colour_srgb_converts_the_pixels_and_embeds_srgb(fallback_engine: Engine, tmp_path: Path,
                                                                 jpeg: Path) -> None:
    handlers = handlers_for(fallback_engine, tmp_path, jpeg, "export.colour=srgb")
    session, _ = open_photo(handlers, jpeg)
    erase_disc(handlers, session)
    path = downloaded(handlers, session)
    profile = ImageCms.ImageCmsProfile(io.BytesIO(icc_of(path)))
    assert "sRGB" in ImageCms.getProfileDescription(profile)
    assert np.array_equal(load_image(path, 10**8), srgb_of(session.image))
    assert exif_of(path)[0x010F] == "Canon"


@pytest.mark.parametrize("fmt, suffix", [("jpeg", ".jpg"), ("tiff", ".tif")])
def test_jpeg_and_tiff_exports_carry_the_profile_and_exif(fallback_engine: Engine, tmp_path: Path, jpeg: Path,
                                                          fmt: str, suffix: str) -> None:
    handlers = handlers_for(fallback_engine, tmp_path, jpeg, f"export.format={fmt}", "export.jpeg_quality=90")
    session, _ = open_photo(handlers, jpeg)
    erase_disc(handlers, session)
    path = downloaded(handlers, session)
    assert path.suffix == suffix
    with Image.open(path) as img:
        assert img.format == fmt.upper() and img.size == (320, 240)
    assert icc_of(path) == ADOBE_RGB
    exif = exif_of(path)
    assert exif[0x010F] == "Canon" and exif[0x8298] == CAMERA[0x8298] and exif[ORIENTATION] == 1
    assert json.loads(read_photo_metadata(path)["history"])[0]["mode"] == "erase"
    if fmt == "tiff":
        assert np.array_equal(load_image(path, 10**8), session.image), "TIFF is lossless"


def test_a_restored_session_still_writes_the_profile(fallback_engine: Engine, tmp_path: Path, jpeg: Path) -> None:
    handlers = handlers_for(fallback_engine, tmp_path, jpeg)
    session, _ = open_photo(handlers, jpeg)
    erase_disc(handlers, session)
    restarted = handlers_for(fallback_engine, tmp_path, jpeg)  # a new store on the same folder: a restart
    restored = restarted.sessions.get(session.id)
    assert restored is not None and restored is not session
    assert restored.photo_info == session.photo_info
    path = downloaded(restarted, restored)
    assert icc_of(path) == ADOBE_RGB and exif_of(path)[0x0110] == CAMERA[0x0110]
    restored.clear_selection()  # the erase's selection stays after the edit: compare the photo alone
    assert np.array_equal(restarted._canvas(restored), srgb_of(restored.image))


def test_the_cli_edit_output_carries_the_profile_and_exif(tmp_path: Path, jpeg: Path) -> None:
    mask = np.zeros((240, 320), np.uint8)
    mask[70:150, 160:240] = 255
    save_png(mask, tmp_path / "mask.png")
    out = tmp_path / "erased.png"
    settings = ["device=cpu", f"models_dir={tmp_path / 'none'}", "auto_download=false", "eraser.model=opencv"]
    code = cli_main(["edit", str(jpeg), "-o", str(out), "--mode", "erase", "--mask", str(tmp_path / "mask.png"),
                     *(arg for s in settings for arg in ("--set", s))])
    assert code == 0
    assert icc_of(out) == ADOBE_RGB
    exif = exif_of(out)
    assert {tag: exif[tag] for tag in CAMERA} == CAMERA and exif[ORIENTATION] == 1
    band = masks.grow(mask, 40) > 0
    assert np.array_equal(load_image(out, 10**8)[~band], load_image(jpeg, 10**8)[~band])
    assert json.loads(read_photo_metadata(out)["history"])[0]["mode"] == "erase"


def test_orientation_is_reset_in_exif_and_xmp(tmp_path: Path) -> None:
    xmp = (b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
           b'<rdf:Description xmlns:tiff="http://ns.adobe.com/tiff/1.0/" tiff:Orientation="6"/></rdf:RDF></x:xmpmeta>')
    exif = Image.Exif()
    exif[ORIENTATION] = 6
    buffer = io.BytesIO()
    Image.new("RGB", (40, 20), (10, 20, 30)).save(buffer, "JPEG", exif=exif, xmp=xmp)
    image, info = load_photo(buffer.getvalue(), 10**8)
    assert image.shape == (40, 20, 3)
    written = Image.Exif()
    written.load(info.exif)
    assert written[ORIENTATION] == 1
    assert info.xmp is not None and b'tiff:Orientation="1"' in info.xmp and b'"6"' not in info.xmp
    assert info.icc_profile is None and info.is_srgb


@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_a_16_bit_photo_is_refused_in_one_line(fallback_engine: Engine, tmp_path: Path, suffix: str) -> None:
    deep = tmp_path / f"deep{suffix}"
    assert cv2.imwrite(str(deep), np.full((16, 24, 3), 40000, np.uint16))
    with pytest.raises(ImageError, match="16 bits per channel") as refused:
        load_photo(deep, 10**8)
    assert "\n" not in str(refused.value)
    handlers = handlers_for(fallback_engine, tmp_path, deep)
    session, outputs = open_photo(handlers, deep)
    assert outputs[0].startswith("⚠️") and "16 bits per channel" in outputs[0]
    assert not session.has_image
