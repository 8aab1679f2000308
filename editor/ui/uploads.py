"""Which files a request may name: only what was uploaded to this editor, or the app's own examples.

A file argument arrives as Gradio's payload (`{"path": ..., "meta": {"_type": "gradio.FileData"}}`).
Gradio itself refuses a path outside its upload cache when the payload carries that `meta`
marker, but not a plain `{"path": ...}`, and a handler with `preprocess=False` gets the
payload as sent. So every path from a request is resolved here (symlinks and `..` too) and
must lie inside the upload cache or a folder the app names; anything else gets the same
message, whether or not something exists there.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from gradio.utils import get_upload_folder

from editor.core.errors import ImageError

REFUSED = "only files uploaded with the request can be opened (gradio_client: handle_file(path))"


class UploadRefused(ImageError):
    """A request named a file that was not uploaded to this editor."""


def upload_folder() -> Path:
    """Gradio's upload cache (GRADIO_TEMP_DIR, or `gradio` in the system's temporary folder), resolved."""
    return Path(os.path.realpath(get_upload_folder()))


def checked_upload(payload: Any, allowed: Sequence[Path] = ()) -> Path:
    """The real path of the file a request names, if it is a file inside the upload cache or one of
    the `allowed` folders; UploadRefused (one line, the same for every refusal) otherwise.

    `payload` is a Gradio file payload (a dict with `path`) or a path string; None means nothing
    was sent (its own message).
    """
    if payload is None:
        raise ImageError("send an image file")
    path = payload.get("path") if isinstance(payload, dict) else payload
    if not isinstance(path, str) or not path or "://" in path:
        raise UploadRefused(REFUSED)
    real = Path(os.path.realpath(path))
    roots = [upload_folder(), *(Path(os.path.realpath(folder)) for folder in allowed)]
    if not any(real.is_relative_to(root) and real != root for root in roots) or not real.is_file():
        raise UploadRefused(REFUSED)
    return real
