"""Reading photos and masks safely, writing lossless PNGs with edit metadata.

Images are `HxWx3 uint8` RGB arrays; masks are `HxW uint8` with 255 = selected.
"""
from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, PngImagePlugin, UnidentifiedImageError

from editor.core.errors import ImageError

SUPPORTED_FORMATS = {"PNG": "PNG", "JPEG": "JPEG", "MPO": "JPEG", "WEBP": "WebP", "TIFF": "TIFF", "BMP": "BMP"}
_FORMAT_NAMES = "PNG, JPEG, WebP, TIFF or BMP"


def load_image(source: str | Path | bytes, max_pixels: int) -> np.ndarray:
    """Decode a photo into `HxWx3 uint8` RGB with its EXIF orientation applied.

    Raises ImageError (one line) for missing, empty, corrupt, truncated, unsupported or
    oversized files. The size check runs on the header, before any pixel is decoded.
    """
    name, data = _read_bytes(source)
    with _open(name, data, max_pixels) as img:
        img = _decode(name, img)
        return _to_rgb8(img)


def load_mask(source: str | Path | bytes, size: tuple[int, int], max_pixels: int) -> np.ndarray:
    """Read a mask image as `HxW uint8` (255 = selected); `size` is the photo's (width, height).

    A mask with transparency is read by its alpha: opaque (alpha above 127) = selected,
    transparent = not, whatever the colour (a cut-out works as a mask). An opaque mask is read
    by its brightness: white = selected.
    """
    name, data = _read_bytes(source)
    with _open(name, data, max_pixels) as img:
        img = _decode(name, img)
        if img.size != size:
            raise ImageError(
                f"mask {name} is {img.size[0]}x{img.size[1]} but the image is {size[0]}x{size[1]}"
            )
        alpha = _alpha(img)
        if alpha is not None and alpha.min() < 255:
            return np.where(alpha > 127, 255, 0).astype(np.uint8)
        gray = np.asarray(_to_rgb8(img), dtype=np.uint16).sum(axis=2) // 3
    return np.where(gray > 127, 255, 0).astype(np.uint8)


def save_png(image: np.ndarray, path: str | Path, metadata: dict[str, str] | None = None,
             compress_level: int = 6) -> None:
    """Write an RGB or RGBA image or a single-channel mask losslessly, with text metadata; a lower
    `compress_level` (0-9) writes a bigger file much faster, with the same pixels."""
    try:
        Path(path).write_bytes(encode_png(image, metadata, compress_level))
    except OSError as exc:
        raise ImageError(f"cannot write {path}: {exc.strerror or exc}") from None


def encode_png(image: np.ndarray, metadata: dict[str, str] | None = None, compress_level: int = 6) -> bytes:
    info = PngImagePlugin.PngInfo()
    for key, value in (metadata or {}).items():
        info.add_itxt(key, str(value))
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image)).save(buffer, format="PNG", pnginfo=info,
                                                      compress_level=compress_level)
    return buffer.getvalue()


def read_png_metadata(path: str | Path) -> dict[str, str]:
    with Image.open(path) as img:
        return {key: str(value) for key, value in img.text.items()}


def _read_bytes(source: str | Path | bytes) -> tuple[str, bytes]:
    if isinstance(source, bytes):
        name, data = "upload", source
    else:
        path = Path(source)
        name = path.name
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise ImageError(f"image not found: {source}") from None
        except IsADirectoryError:
            raise ImageError(f"{source} is a folder, not an image") from None
        except OSError as exc:
            raise ImageError(f"cannot read {source}: {exc.strerror or exc}") from None
    if not data:
        raise ImageError(f"{name} is empty (0 bytes)")
    return name, data


def _open(name: str, data: bytes, max_pixels: int) -> Image.Image:
    try:
        with warnings.catch_warnings():
            # Our own limit below replaces Pillow's global decompression-bomb threshold.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError:
        raise ImageError(f"{name} is too large (over {max_pixels:,} pixels)") from None
    except UnidentifiedImageError:
        raise ImageError(f"{name} is not an image this editor can read (use {_FORMAT_NAMES})") from None
    except (OSError, ValueError, SyntaxError) as exc:
        raise ImageError(f"{name} is corrupt: {exc}") from None
    if img.format not in SUPPORTED_FORMATS:
        img.close()
        raise ImageError(f"{name} is a {img.format} image; use {_FORMAT_NAMES}")
    width, height = img.size
    if width * height > max_pixels:
        img.close()
        raise ImageError(
            f"{name} is {width}x{height} = {width * height / 1e6:.1f} megapixels, "
            f"over the limit of {max_pixels / 1e6:.1f} (max_image_pixels)"
        )
    return img


def _decode(name: str, img: Image.Image) -> Image.Image:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img.load()
            return ImageOps.exif_transpose(img) or img
    except Image.DecompressionBombError:
        raise ImageError(f"{name} is too large to decode") from None
    except (OSError, ValueError, SyntaxError, EOFError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ImageError(f"{name} is truncated or corrupt: {reason}") from None


def _has_alpha(img: Image.Image) -> bool:
    return img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (img.mode == "P" and "transparency" in img.info)


def _alpha(img: Image.Image) -> np.ndarray | None:
    """The 8-bit alpha channel, or None for an image without one."""
    return np.asarray(img.convert("RGBA"))[..., 3] if _has_alpha(img) else None


def _to_rgb8(img: Image.Image) -> np.ndarray:
    """Any Pillow mode to 8-bit RGB: 16-bit and float scaled (not clipped), alpha over white."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        return np.repeat(_scale_to_8bit(np.asarray(img))[:, :, None], 3, axis=2)
    if _has_alpha(img):
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return np.asarray(Image.alpha_composite(white, rgba).convert("RGB")).copy()
    return np.asarray(img.convert("RGB")).copy()


def _scale_to_8bit(values: np.ndarray) -> np.ndarray:
    if values.dtype.kind == "f":
        top = 1.0 if values.max(initial=0) <= 1.0 else 255.0
        return np.clip(np.rint(values / top * 255.0), 0, 255).astype(np.uint8)
    wide = values.astype(np.int64)
    top = 255 if wide.max(initial=0) <= 255 and values.dtype.itemsize == 1 else 65535
    return np.clip(np.rint(wide * 255.0 / top), 0, 255).astype(np.uint8)
