"""Reading photos and masks safely; writing photos with their colour profile, metadata and edit history.

Images are `HxWx3 uint8` RGB arrays; masks are `HxW uint8` with 255 = selected. A photo's pixels
stay in its own colour space: `PhotoInfo` carries the profile, EXIF, XMP and DPI read beside them,
and `encode_photo` writes them back.
"""
from __future__ import annotations

import functools
import io
import json
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image, ImageCms, ImageOps, PngImagePlugin, UnidentifiedImageError

from editor.core import colour
from editor.core.errors import ImageError

SUPPORTED_FORMATS = {"PNG": "PNG", "JPEG": "JPEG", "MPO": "JPEG", "WEBP": "WebP", "TIFF": "TIFF", "BMP": "BMP"}
_FORMAT_NAMES = "PNG, JPEG, WebP, TIFF or BMP"
ExportFormat = Literal["png", "jpeg", "tiff"]
EXTENSIONS: dict[str, str] = {"png": "png", "jpeg": "jpg", "tiff": "tif"}
ORIENTATION = 0x0112  # EXIF tag
XMP_TAG = 700  # TIFF tag holding the XMP packet
# TIFF tags that describe the file's own layout: a TIFF's EXIF is its first directory, and these must
# not travel into another file (sizes, offsets, sample layout, the profile and XMP kept on their own).
_TIFF_LAYOUT_TAGS = frozenset({254, 255, 256, 257, 258, 259, 262, 266, 273, 277, 278, 279, 284, 317, 320, 322, 323,
                               324, 325, 338, 339, 340, 341, 529, 530, 532, XMP_TAG, 33723, 34377, 34675})
_XMP_ORIENTATION = (re.compile(rb'tiff:Orientation="[0-9]"'), re.compile(rb"<tiff:Orientation>[0-9]</tiff:Orientation>"))


@dataclass(frozen=True)
class PhotoInfo:
    """What a photo file carries beside its pixels, as it will be written back.

    `exif` has its orientation reset to 1 (the pixels are already turned upright); `xmp` likewise.
    None: the file had none. The profile's colour space is RGB, the pixels' own (see `load_photo`).
    """

    icc_profile: bytes | None = None
    exif: bytes | None = None
    xmp: bytes | None = None
    dpi: tuple[float, float] | None = None

    @functools.cached_property
    def _display_transform(self) -> colour.Transform | None:
        return colour.srgb_transform(self.icc_profile)

    def to_srgb(self, image: np.ndarray) -> np.ndarray:
        """`image` (in this photo's colour space) as a browser should show it: converted to sRGB when
        the photo has another profile, else the same array. The transform is built once per photo."""
        return colour.apply(self._display_transform, image)

    @property
    def is_srgb(self) -> bool:
        return colour.is_srgb(self.icc_profile)


def load_photo(source: str | Path | bytes, max_pixels: int) -> tuple[np.ndarray, PhotoInfo]:
    """A photo to edit: `HxWx3 uint8` RGB upright (EXIF orientation applied), in its own colour
    space, and what its file carries beside the pixels.

    Refuses (ImageError, one line) what `load_image` refuses, and photos of more than 8 bits per
    channel: the edits work in 8 bits, and a download could not give the depth back. A CMYK photo
    with a profile is converted to sRGB properly (the editor works in RGB).
    """
    name, data = _read_bytes(source)
    with _open(name, data, max_pixels) as img:
        bits = _bits_per_channel(img, data)
        if bits > 8:
            raise ImageError(f"{name} has {bits} bits per channel: the editor works in 8 bits and would lose "
                             "that depth; save it with 8 bits per channel (PNG, JPEG or TIFF) first")
        info = _photo_info(img)
        img = _decode(name, img)
        return _to_rgb_in_profile(img, info)


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


def edit_metadata(steps: list[dict[str, str]]) -> dict[str, str]:
    """The text metadata of an edited photo: the last edit's settings as keys (mode, prompt, seed,
    model, ...) and "history", a JSON list of every edit's settings from the original to this one."""
    last = steps[-1] if steps else {}
    return {**last, "history": json.dumps(steps, ensure_ascii=False)}


def encode_photo(image: np.ndarray, info: PhotoInfo, metadata: dict[str, str] | None = None,
                 fmt: ExportFormat = "png", colour_mode: Literal["keep", "srgb"] = "keep",
                 jpeg_quality: int = 95, compress_level: int = 6) -> bytes:
    """A photo's file: PNG, JPEG or TIFF with the photo's ICC profile, EXIF, XMP and DPI.

    `colour_mode` "keep" embeds the photo's own profile over its unchanged pixels; "srgb" converts
    the pixels to sRGB (when the profile is another one) and embeds sRGB. `metadata` is text: PNG
    text chunks, one key each; JPEG's comment and TIFF's image description hold it as JSON.
    """
    icc = info.icc_profile
    if colour_mode == "srgb":  # a cut-out's alpha is not a colour: it stays as it is
        rgb = colour.to_srgb(image[..., :3], icc)
        image, icc = (np.dstack([rgb, image[..., 3:]]) if image.shape[-1] == 4 else rgb), colour.SRGB_PROFILE
    picture = Image.fromarray(np.ascontiguousarray(image))
    options: dict = {}
    if icc:
        options["icc_profile"] = icc
    if info.dpi:
        options["dpi"] = info.dpi
    text = metadata or {}
    if fmt == "png":
        options.update(pnginfo=_png_text(text, info.xmp), compress_level=compress_level)
        if info.exif:
            options["exif"] = info.exif
    elif fmt == "jpeg":
        options.update(quality=jpeg_quality, subsampling=0 if jpeg_quality >= 90 else -1)
        options.update(_present(exif=info.exif, xmp=info.xmp, comment=_json_text(text)))
    elif fmt == "tiff":
        # uncompressed: libtiff (which compression needs) cannot write the EXIF sub-directories
        options.update(exif=_tiff_tags(info), **_present(description=_json_text(text)))
    else:
        raise ImageError(f"cannot export as {fmt!r}: use png, jpeg or tiff")
    buffer = io.BytesIO()
    picture.save(buffer, format=fmt.upper(), **options)
    return buffer.getvalue()


def write_photo(path: str | Path, image: np.ndarray, info: PhotoInfo, metadata: dict[str, str] | None = None,
                fmt: ExportFormat = "png", colour_mode: Literal["keep", "srgb"] = "keep",
                jpeg_quality: int = 95, compress_level: int = 6) -> None:
    """`encode_photo` written to `path` (ImageError, one line, when it cannot be written)."""
    data = encode_photo(image, info, metadata, fmt, colour_mode, jpeg_quality, compress_level)
    try:
        Path(path).write_bytes(data)
    except OSError as exc:
        raise ImageError(f"cannot write {path}: {exc.strerror or exc}") from None


def format_of(path: str | Path, default: ExportFormat) -> ExportFormat:
    """The export format a file name asks for by its extension; `default` for any other name."""
    suffix = Path(path).suffix.lower()
    named: dict[str, ExportFormat] = {".png": "png", ".jpg": "jpeg", ".jpeg": "jpeg", ".tif": "tiff", ".tiff": "tiff"}
    return named.get(suffix, default)


def read_photo_metadata(path: str | Path) -> dict[str, str]:
    """The text metadata `encode_photo` wrote, whatever the format."""
    with Image.open(path) as img:
        if img.format == "PNG":
            return {key: str(value) for key, value in img.text.items() if key != "XML:com.adobe.xmp"}
        raw = img.info.get("comment") if img.format == "JPEG" else img.tag_v2.get(270) if img.format == "TIFF" else None
    if not raw:
        return {}
    try:
        data = json.loads(raw.decode("utf-8") if isinstance(raw, bytes) else raw)
    except ValueError:
        return {}
    return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}


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


def _photo_info(img: Image.Image) -> PhotoInfo:
    """What the file carries, read before the pixels are turned upright."""
    icc = img.info.get("icc_profile") or None
    dpi = img.info.get("dpi")
    return PhotoInfo(
        icc_profile=bytes(icc) if icc else None,
        exif=_upright_exif(img),
        xmp=_upright_xmp(_raw_xmp(img)),
        dpi=(float(dpi[0]), float(dpi[1])) if dpi and len(dpi) == 2 and all(d > 0 for d in dpi) else None,
    )


def _upright_exif(img: Image.Image) -> bytes | None:
    try:  # a copy: the image's own EXIF still has to turn the pixels upright
        exif = Image.Exif()
        exif.load(img.getexif().tobytes())
    except (OSError, ValueError, SyntaxError, KeyError, TypeError, OverflowError):
        return None  # unreadable EXIF: the photo opens without it
    if img.format == "TIFF":
        for tag in _TIFF_LAYOUT_TAGS & set(exif):
            del exif[tag]
    if not len(exif):
        return None
    if ORIENTATION in exif:
        exif[ORIENTATION] = 1
    try:
        return exif.tobytes()
    except (OSError, ValueError, TypeError, KeyError, OverflowError):
        return None


def _raw_xmp(img: Image.Image) -> bytes | None:
    value = img.info.get("xmp") or img.info.get("XML:com.adobe.xmp")
    if not value and img.format == "TIFF":
        value = img.tag_v2.get(XMP_TAG)
    if isinstance(value, str):
        value = value.encode("utf-8")
    return bytes(value) if value else None


def _upright_xmp(xmp: bytes | None) -> bytes | None:
    if xmp is None:
        return None
    xmp = _XMP_ORIENTATION[0].sub(b'tiff:Orientation="1"', xmp)
    return _XMP_ORIENTATION[1].sub(b"<tiff:Orientation>1</tiff:Orientation>", xmp)


def _bits_per_channel(img: Image.Image, data: bytes) -> int:
    """The file's bits per channel: Pillow reads 16-bit RGB PNG and TIFF as 8-bit RGB without a word."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        return 32 if img.mode in ("I", "F") else 16
    if img.format == "PNG" and data[12:16] == b"IHDR":
        return int(data[24])
    if img.format == "TIFF":
        bits = img.tag_v2.get(258, (8,))
        return max(bits) if isinstance(bits, tuple) else int(bits)
    return 8


def _to_rgb_in_profile(img: Image.Image, info: PhotoInfo) -> tuple[np.ndarray, PhotoInfo]:
    """The pixels as RGB in the colour space of the profile kept: a CMYK profile converts the
    pixels to sRGB (the profile is then dropped); a grey or unreadable one is dropped."""
    icc = info.icc_profile
    space = colour.colour_space(icc) if icc else None
    if icc and space == "CMYK" and img.mode == "CMYK":
        transform = colour.srgb_transform(icc, "CMYK")
        if transform is not None:
            return np.asarray(ImageCms.applyTransform(img, transform)).copy(), _without_profile(info)
    if icc and space != "RGB":
        info = _without_profile(info)
    return _to_rgb8(img), info


def _without_profile(info: PhotoInfo) -> PhotoInfo:
    return PhotoInfo(None, info.exif, info.xmp, info.dpi)


def _png_text(metadata: dict[str, str], xmp: bytes | None) -> PngImagePlugin.PngInfo:
    info = PngImagePlugin.PngInfo()
    for key, value in metadata.items():
        info.add_itxt(key, str(value))
    if xmp:
        info.add_itxt("XML:com.adobe.xmp", xmp.decode("utf-8", "replace"))
    return info


def _tiff_tags(info: PhotoInfo) -> Image.Exif:
    tags = Image.Exif()
    if info.exif:
        tags.load(info.exif)
    if info.xmp:
        tags[XMP_TAG] = info.xmp
    return tags


def _json_text(metadata: dict[str, str]) -> str | None:
    return json.dumps(metadata, ensure_ascii=False) if metadata else None


def _present(**values: object) -> dict[str, object]:
    return {key: value for key, value in values.items() if value}


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
