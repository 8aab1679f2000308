"""What crosses the boundary between the app and the model replicas: PNG bytes and small records.

Pure and torch-free: the app (the client) and the replicas both import it.
"""
from __future__ import annotations

import io
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image

from editor.core import photo_io

WIRE_COMPRESSION = 1  # PNG level for crops in flight: lossless, several times faster to write than level 6


def encode_png(image: np.ndarray) -> bytes:
    """An `HxWx3` photo or `HxW` mask (uint8) as lossless PNG bytes."""
    return photo_io.encode_png(image, compress_level=WIRE_COMPRESSION)


def decode_png(data: bytes) -> np.ndarray:
    """The array `encode_png` wrote (writable, unlike an array read from Ray's object store)."""
    with Image.open(io.BytesIO(data)) as image:
        return np.array(image)


@dataclass(frozen=True)
class Info:
    """One replica's model as the app sees it: its status lines and the attributes its interface names."""

    kind: str
    replica: str  # which replica answered (kind-pid)
    device: str
    description: str
    model_name: str = ""
    load_error: str | None = None
    backends: Any = None  # the replica's `Backends` (every kind's planned line), for the app's status
    # multiple, max_side, native_size, scale, tile; the inpainter's native_sizes (model name -> side)
    attributes: dict[str, Any] = field(default_factory=dict)
