"""Colour profiles: telling sRGB from other profiles and converting pixels to sRGB with Little CMS.

The editor never converts the pixels it edits: a photo stays in its own colour space (Adobe RGB,
Display P3, ...) from the decoded file to the download. Only what a browser shows (which assumes
sRGB for an untagged PNG) and an export asked to be sRGB are converted, here.
Images are `HxWx3 uint8` RGB arrays; profiles are the ICC bytes as embedded in the file.
"""
from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageCms

# Relative colorimetric: in-gamut colours stay exact, out-of-gamut ones clip to the sRGB gamut
# boundary; matrix profiles (Adobe RGB, P3) have no perceptual tables, so perceptual would be the same.
INTENT = ImageCms.Intent.RELATIVE_COLORIMETRIC
SRGB_PROFILE: bytes = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()

Transform = ImageCms.ImageCmsTransform


def profile(icc: bytes) -> ImageCms.ImageCmsProfile | None:
    """The profile in `icc`, or None when Little CMS cannot read it (a damaged profile is ignored)."""
    try:
        return ImageCms.ImageCmsProfile(io.BytesIO(icc))
    except (OSError, ValueError, TypeError, ImageCms.PyCMSError):
        return None


def colour_space(icc: bytes) -> str | None:
    """'RGB', 'CMYK', 'GRAY', ... of a profile; None for an unreadable one."""
    read = profile(icc)
    return None if read is None else read.profile.xcolor_space.strip()


def is_srgb(icc: bytes | None) -> bool:
    """No profile (a browser and most software assume sRGB) or an sRGB one."""
    if not icc:
        return True
    read = profile(icc)
    if read is None:
        return True
    description = ImageCms.getProfileDescription(read) or ""
    return "srgb" in description.lower()


def srgb_transform(icc: bytes | None, mode: str = "RGB") -> Transform | None:
    """A transform from `icc` (pixels in `mode`) to sRGB RGB; None when there is nothing to convert
    (no profile, an sRGB one, or one Little CMS cannot read). Building one takes a few milliseconds:
    keep it for the photo (`PhotoInfo.to_srgb`)."""
    if mode == "RGB" and is_srgb(icc):
        return None
    source = profile(icc) if icc else None
    if source is None:
        return None
    try:
        return ImageCms.buildTransform(source, ImageCms.createProfile("sRGB"), mode, "RGB", INTENT)
    except ImageCms.PyCMSError:
        return None


def apply(transform: Transform | None, image: np.ndarray) -> np.ndarray:
    """`image` converted by `transform` (a new array), or `image` itself when there is none."""
    if transform is None:
        return image
    return np.asarray(ImageCms.applyTransform(Image.fromarray(np.ascontiguousarray(image)), transform))


def to_srgb(image: np.ndarray, icc: bytes | None) -> np.ndarray:
    """`image`, whose pixels are in the colour space of `icc`, converted to sRGB."""
    return apply(srgb_transform(icc), image)
