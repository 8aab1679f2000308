"""Reading photos and masks safely; writing lossless PNGs with metadata."""
from __future__ import annotations

import io
import struct
import time
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from editor.core.errors import EditorError, ImageError
from editor.core.photo_io import encode_png, load_image, load_mask, read_png_metadata, save_png

LIMIT = 10_000_000


def encode(image: Image.Image, fmt: str, **params: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **params)
    return buffer.getvalue()


def image_error(source: object, max_pixels: int = LIMIT) -> str:
    with pytest.raises(ImageError) as info:
        load_image(source, max_pixels)  # type: ignore[arg-type]
    message = str(info.value)
    assert message and "\n" not in message, f"not one line: {message!r}"
    assert isinstance(info.value, EditorError)
    return message


def textured(height: int = 30, width: int = 40, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


# --- formats -----------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt, params, lossless", [
    ("PNG", {}, True),
    ("BMP", {}, True),
    ("TIFF", {}, True),
    ("WEBP", {"lossless": True}, True),
    ("WEBP", {"quality": 90}, False),
    ("JPEG", {"quality": 95}, False),
])
def test_supported_formats_load_as_hxwx3_uint8(tmp_path: Path, fmt: str, params: dict, lossless: bool) -> None:
    # Smooth content so that lossy codecs stay close to the source.
    yy, xx = np.mgrid[0:30, 0:41]
    source = np.stack([xx * 6, yy * 8, np.full_like(xx, 100)], axis=2).astype(np.uint8)
    path = tmp_path / f"photo.{fmt.lower()}"
    path.write_bytes(encode(Image.fromarray(source), fmt, **params))
    for loaded in (load_image(path, LIMIT), load_image(str(path), LIMIT), load_image(path.read_bytes(), LIMIT)):
        assert loaded.shape == (30, 41, 3) and loaded.dtype == np.uint8
        if lossless:
            assert np.array_equal(loaded, source)
        else:
            assert np.abs(loaded.astype(int) - source).mean() < 4


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    """Orientation 6: the camera was turned; the stored 40x30 picture displays as 30x40."""
    stored = Image.new("RGB", (40, 30), (0, 0, 255))
    stored.paste((255, 0, 0), (0, 0, 10, 10))  # red in the stored top-left corner
    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / "rotated.jpg"
    path.write_bytes(encode(stored, "JPEG", exif=exif, quality=95))
    image = load_image(path, LIMIT)
    assert image.shape == (40, 30, 3)  # height 40, width 30
    # Rotated 90 degrees clockwise for display: the stored top-left is now the top-right.
    top_right = image[2:8, -8:-2].reshape(-1, 3).mean(axis=0)
    top_left = image[2:8, 2:8].reshape(-1, 3).mean(axis=0)
    assert top_right[0] > 200 and top_right[2] < 50
    assert top_left[2] > 200 and top_left[0] < 50


def test_grayscale_becomes_three_equal_channels() -> None:
    gray = np.arange(0, 240, 2, dtype=np.uint8).reshape(10, 12)
    image = load_image(encode(Image.fromarray(gray, "L"), "PNG"), LIMIT)
    assert image.shape == (10, 12, 3)
    for channel in range(3):
        assert np.array_equal(image[:, :, channel], gray)


def test_bilevel_image_loads() -> None:
    bits = Image.new("1", (9, 5), 0)
    bits.putpixel((3, 2), 1)
    image = load_image(encode(bits, "PNG"), LIMIT)
    assert image.shape == (5, 9, 3)
    assert image[2, 3].tolist() == [255, 255, 255] and image[0, 0].tolist() == [0, 0, 0]


def _palette_image() -> Image.Image:
    img = Image.new("P", (4, 3), 0)
    img.putpalette([10, 20, 30, 0, 255, 0, 200, 0, 0] + [0] * (256 * 3 - 9))
    img.putpixel((1, 1), 1)
    img.putpixel((2, 2), 2)
    return img


def test_palette_image_without_transparency() -> None:
    image = load_image(encode(_palette_image(), "PNG"), LIMIT)
    assert image.shape == (3, 4, 3)
    assert image[0, 0].tolist() == [10, 20, 30]
    assert image[1, 1].tolist() == [0, 255, 0]
    assert image[2, 2].tolist() == [200, 0, 0]


def test_palette_image_with_transparency_is_composited_over_white() -> None:
    image = load_image(encode(_palette_image(), "PNG", transparency=0), LIMIT)
    assert image[0, 0].tolist() == [255, 255, 255]  # the transparent index
    assert image[1, 1].tolist() == [0, 255, 0]
    assert image[2, 2].tolist() == [200, 0, 0]


def test_rgba_is_composited_over_white() -> None:
    rgba = np.zeros((2, 3, 4), np.uint8)
    rgba[0, 0] = (10, 20, 30, 0)  # fully transparent: white
    rgba[0, 1] = (10, 20, 30, 255)  # opaque: itself
    rgba[0, 2] = (0, 0, 0, 128)  # half black over white: mid grey
    image = load_image(encode(Image.fromarray(rgba, "RGBA"), "PNG"), LIMIT)
    assert image.shape == (2, 3, 3)
    assert image[0, 0].tolist() == [255, 255, 255]
    assert image[0, 1].tolist() == [10, 20, 30]
    assert all(abs(int(v) - 127) <= 1 for v in image[0, 2])


def test_grayscale_with_alpha_is_composited_over_white() -> None:
    la = Image.new("LA", (2, 1), (0, 0))
    la.putpixel((1, 0), (50, 255))
    image = load_image(encode(la, "PNG"), LIMIT)
    assert image[0, 0].tolist() == [255, 255, 255] and image[0, 1].tolist() == [50, 50, 50]


@pytest.mark.parametrize("fmt", ["JPEG", "TIFF"])
def test_cmyk_pure_cyan_becomes_rgb_cyan(fmt: str) -> None:
    cyan = Image.new("CMYK", (16, 8), (255, 0, 0, 0))
    image = load_image(encode(cyan, fmt), LIMIT)
    assert image.shape == (8, 16, 3)
    r, g, b = image.reshape(-1, 3).mean(axis=0)
    assert r < 8 and g > 247 and b > 247


def test_16bit_grayscale_png_is_scaled_not_clipped() -> None:
    values = np.array([[65535, 32768, 0, 257, 1000]], dtype=np.uint16)
    img = Image.fromarray(values)
    assert img.mode.startswith("I;16")
    data = encode(img, "PNG")
    with Image.open(io.BytesIO(data)) as reread:
        assert reread.mode in ("I;16", "I")  # really stored as 16 bits
    image = load_image(data, LIMIT)
    assert image.shape == (1, 5, 3) and image.dtype == np.uint8
    assert image[0, :, 0].tolist() == [255, 128, 0, 1, 4]
    assert np.array_equal(image[:, :, 0], image[:, :, 2])


def test_16bit_rgb_png_gives_correct_8bit_values(tmp_path: Path) -> None:
    rgb16 = np.zeros((2, 3, 3), np.uint16)
    rgb16[0, 0] = (65535, 0, 32768)
    rgb16[0, 1] = (257 * 10, 257 * 200, 257 * 255)
    rgb16[1, 2] = (65535, 65535, 65535)
    path = tmp_path / "deep.png"
    # Pillow cannot write 16-bit RGB; OpenCV can (it wants BGR).
    assert cv2.imwrite(str(path), np.ascontiguousarray(rgb16[:, :, ::-1]))
    image = load_image(path, LIMIT)
    assert image.shape == (2, 3, 3) and image.dtype == np.uint8
    assert image[0, 0].tolist() == [255, 0, 128]
    assert image[0, 1].tolist() == [10, 200, 255]
    assert image[1, 2].tolist() == [255, 255, 255]
    assert image[1, 0].tolist() == [0, 0, 0]


# --- bad inputs: one line each -----------------------------------------------------------------


def _png_bytes() -> bytes:
    return encode(Image.fromarray(textured(64, 64)), "PNG")


def _jpeg_bytes() -> bytes:
    return encode(Image.fromarray(textured(64, 64)), "JPEG", quality=90)


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.png"
    path.write_bytes(b"")
    assert "empty" in image_error(path)
    assert "empty" in image_error(b"")


@pytest.mark.parametrize("make", [_png_bytes, _jpeg_bytes], ids=["png", "jpeg"])
def test_truncated_file(tmp_path: Path, make) -> None:  # type: ignore[no-untyped-def]
    data = make()
    path = tmp_path / "cut.img"
    path.write_bytes(data[: len(data) // 2])
    message = image_error(path)
    assert "cut.img" in message and ("truncated" in message or "corrupt" in message)


def test_random_bytes_and_text_are_not_images(tmp_path: Path) -> None:
    noise = tmp_path / "noise.png"
    noise.write_bytes(np.random.default_rng(3).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    assert "noise.png" in image_error(noise)
    text = tmp_path / "notes.jpg"
    text.write_text("this is not a photo\n" * 20)
    message = image_error(text)
    assert "notes.jpg" in message and "PNG" in message  # names what would work


def test_gif_is_an_unsupported_format(tmp_path: Path) -> None:
    path = tmp_path / "anim.gif"
    path.write_bytes(encode(Image.new("P", (8, 8), 1), "GIF"))
    message = image_error(path)
    assert "GIF" in message and "PNG" in message


def test_missing_path_and_directory(tmp_path: Path) -> None:
    assert "not found" in image_error(tmp_path / "absent.png")
    assert "folder" in image_error(tmp_path)


def test_image_over_the_pixel_limit_is_refused() -> None:
    data = encode(Image.new("RGB", (100, 100), (1, 2, 3)), "PNG")
    message = image_error(data, max_pixels=5000)
    assert "100x100" in message and "max_image_pixels" in message
    assert load_image(data, max_pixels=10_000).shape == (100, 100, 3)  # at the limit is fine


def _png_claiming(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims `width`x`height` pixels; its data is a few bytes."""
    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
            + chunk(b"IEND", b""))


@pytest.mark.parametrize("width, height", [(100_000, 100_000), (9000, 8000)])
def test_decompression_bomb_is_refused_from_the_header_without_decoding(width: int, height: int) -> None:
    data = _png_claiming(width, height)
    assert len(data) < 200
    start = time.perf_counter()
    message = image_error(data, max_pixels=50_000_000)
    assert time.perf_counter() - start < 1.0
    assert "too large" in message or "over the limit" in message


# --- masks ---------------------------------------------------------------------------------------


def test_load_mask_thresholds_to_0_and_255(tmp_path: Path) -> None:
    soft = np.array([[0, 100, 127, 128, 200, 255]], dtype=np.uint8)
    path = tmp_path / "mask.png"
    Image.fromarray(soft, "L").save(path)
    mask = load_mask(path, (6, 1), LIMIT)
    assert mask.dtype == np.uint8 and mask.shape == (1, 6)
    assert mask[0].tolist() == [0, 0, 0, 255, 255, 255]


def test_load_mask_accepts_rgb_masks(tmp_path: Path) -> None:
    rgb = np.zeros((4, 5, 3), np.uint8)
    rgb[1:3, 1:4] = 255
    mask = load_mask(encode(Image.fromarray(rgb), "PNG"), (5, 4), LIMIT)
    assert np.array_equal(mask > 0, rgb[:, :, 0] > 0)


def test_a_mask_with_transparency_is_read_by_its_alpha(tmp_path: Path) -> None:
    """Transparent = not selected, opaque = selected, whatever the colour (a cut-out as the mask)."""
    rgba = np.zeros((4, 5, 4), np.uint8)
    rgba[..., :3] = 255  # white everywhere: by brightness alone all would be selected
    rgba[1:3, 1:4, 3] = 255
    rgba[0, 0, 3] = 100  # mostly transparent
    mask = load_mask(encode(Image.fromarray(rgba, "RGBA"), "PNG"), (5, 4), LIMIT)
    assert np.array_equal(mask > 0, rgba[..., 3] > 127)
    black_cutout = rgba.copy()
    black_cutout[..., :3] = 0
    assert np.array_equal(load_mask(encode(Image.fromarray(black_cutout, "RGBA"), "PNG"), (5, 4), LIMIT), mask)
    gray_alpha = np.stack([np.full((4, 5), 255, np.uint8), rgba[..., 3]], axis=2)
    assert np.array_equal(load_mask(encode(Image.fromarray(gray_alpha, "LA"), "PNG"), (5, 4), LIMIT), mask)


def test_a_fully_transparent_mask_selects_nothing(tmp_path: Path) -> None:
    clear = np.zeros((4, 5, 4), np.uint8)
    clear[..., :3] = 255
    assert not load_mask(encode(Image.fromarray(clear, "RGBA"), "PNG"), (5, 4), LIMIT).any()


def test_an_opaque_rgba_mask_is_read_by_its_brightness(tmp_path: Path) -> None:
    rgba = np.zeros((4, 5, 4), np.uint8)
    rgba[..., 3] = 255
    rgba[1:3, 1:4, :3] = 255
    mask = load_mask(encode(Image.fromarray(rgba, "RGBA"), "PNG"), (5, 4), LIMIT)
    assert np.array_equal(mask > 0, rgba[..., 0] > 0)


def test_load_mask_of_the_wrong_size_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "small.png"
    Image.new("L", (10, 20), 255).save(path)
    with pytest.raises(ImageError) as info:
        load_mask(path, (20, 10), LIMIT)
    message = str(info.value)
    assert "\n" not in message and "10x20" in message and "20x10" in message


def test_load_mask_bad_file_is_image_error(tmp_path: Path) -> None:
    path = tmp_path / "mask.png"
    path.write_text("nope")
    with pytest.raises(ImageError):
        load_mask(path, (4, 4), LIMIT)


# --- writing -------------------------------------------------------------------------------------


def test_save_png_is_lossless_and_keeps_metadata(tmp_path: Path) -> None:
    image = textured(37, 53, seed=5)
    metadata = {"mode": "fill", "prompt": "a red bücket, with ünïcode", "seed": "42", "steps": "2"}
    path = tmp_path / "out.png"
    save_png(image, path, metadata)
    assert np.array_equal(load_image(path, LIMIT), image)
    assert read_png_metadata(path) == metadata
    with Image.open(path) as img:
        assert img.format == "PNG" and img.mode == "RGB"


def test_save_png_of_a_mask_is_single_channel(tmp_path: Path) -> None:
    mask = np.zeros((7, 9), np.uint8)
    mask[2:5, 3:8] = 255
    path = tmp_path / "mask.png"
    save_png(mask, path)
    with Image.open(path) as img:
        assert img.mode == "L" and img.size == (9, 7)
    assert np.array_equal(load_mask(path, (9, 7), LIMIT), mask)
    assert read_png_metadata(path) == {}


def test_encode_png_round_trips_bytes() -> None:
    image = textured(5, 3, seed=9)
    assert np.array_equal(load_image(encode_png(image, {"k": "v"}), LIMIT), image)


def test_save_png_into_a_missing_folder_is_image_error(tmp_path: Path) -> None:
    with pytest.raises(ImageError) as info:
        save_png(textured(4, 4), tmp_path / "no" / "such" / "out.png")
    assert "\n" not in str(info.value)
