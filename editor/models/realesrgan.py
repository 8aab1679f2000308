"""Upscaling with Real-ESRGAN (x4plus, x2plus, the compact general x4v3) through spandrel.

spandrel reads the published `.pth` files (and `.safetensors` copies) and recognises their
architecture from the weights: RRDB for x4plus and x2plus (x2plus unshuffles 2x2 pixels first),
the compact VGG-style network for general-x4v3. It has no tiler: the engine cuts the photo into
tiles (`strategy.upscale_tiled`) and this model enlarges one tile per call. RGB in 0..1, float16
on CUDA (every Real-ESRGAN supports it), float32 on the CPU. The model loads on first use (or at
`load`) and serves one call at a time: it is shared by every session.
"""
from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from editor.core.errors import EditorError
from editor.models.loading import LoadOnce, out_of_memory_as
from editor.models.registry import LoadContext, ModelEntry
from editor.models.tensors import image_to_tensor, tensor_to_image

SCALES = (2, 4)
WARM_UP_SIDE = 16
OOM_ADVICE = "lower upscaler.tile, or set device=cpu"


class RealEsrganUpscaler:
    """An `Upscaler` over one Real-ESRGAN file (or any spandrel x2/x4 single-image model)."""

    def __init__(self, path: Path | Callable[[], Path], device: str, tile: int, model_name: str,
                 scale: int | None = None) -> None:
        """`path` is the weights file, or a function giving it at the first load (fetching it there);
        `scale` is the registry's factor, checked against the file's (None: read from the file)."""
        self._weights = path if callable(path) else (lambda: path)
        self.device = device
        self.tile = tile
        self.model_name = model_name
        self._expected_scale = scale
        self.dtype = torch.float32
        half = ", float16" if device == "cuda" else ""
        self.description = f"{model_name} ({device}{half}, tiles of {tile} px)"
        self._slot: LoadOnce[Any] = LoadOnce(f"upscaler {model_name}", self._load)
        self._lock = threading.Lock()  # one forward at a time on the shared model

    @property
    def load_error(self) -> str | None:
        return self._slot.error

    @property
    def scale(self) -> int:
        """The model's factor: the registry's, or, for a file of unknown factor, read by loading it."""
        if self._expected_scale is not None and not self._slot.loaded:
            return self._expected_scale
        return int(self._slot.get().scale)

    def load(self) -> None:
        """Load and warm up now; ModelLoadError if that failed (tried once, remembered)."""
        self._slot.get()

    def upscale(self, image: np.ndarray) -> np.ndarray:
        """`image` (`HxWx3 uint8`, one tile) enlarged to `(H*scale)x(W*scale)x3 uint8`."""
        model = self._slot.get()
        with self._lock, out_of_memory_as(OOM_ADVICE):
            return self._forward(model, image)

    def _load(self) -> Any:
        import spandrel
        from spandrel import ImageModelDescriptor

        path = self._weights()
        descriptor = spandrel.ModelLoader(self.device).load_from_file(path)
        if not isinstance(descriptor, ImageModelDescriptor) or descriptor.scale not in SCALES \
                or descriptor.input_channels != 3 or descriptor.output_channels != 3:
            scale = f" x{descriptor.scale}" if isinstance(descriptor, ImageModelDescriptor) else ""
            raise EditorError(f"{path} is a {descriptor.architecture.name}{scale} model, not an x2 or x4 RGB "
                              "upscaler: set upscaler.model to a Real-ESRGAN file (.pth or .safetensors)")
        if self._expected_scale is not None and descriptor.scale != self._expected_scale:
            raise EditorError(f"{path} enlarges x{descriptor.scale}, but {self.model_name} is x{self._expected_scale}")
        descriptor.eval()
        if self.device == "cuda" and descriptor.supports_half:
            self.dtype = torch.float16
        descriptor.to(self.dtype)
        self._forward(descriptor, np.zeros((WARM_UP_SIDE, WARM_UP_SIDE, 3), np.uint8))
        return descriptor

    def _forward(self, model: Any, image: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return tensor_to_image(model(image_to_tensor(image, self.device, self.dtype)))


def load(entry: ModelEntry, path: Path | None, context: LoadContext) -> RealEsrganUpscaler:
    """The upscaler for `path` (weights load at first use, fetched then when not here); refuses at once
    when there is no file and nothing can fetch it."""
    weights = context.weights_file(entry, path, "set upscaler.model to a Real-ESRGAN file")
    name = entry.name if entry.source is not None else Path(entry.name).name  # a local file: its file name
    upscaler = RealEsrganUpscaler(weights, context.device, context.config.upscaler.tile, name,
                                  entry.options.get("scale"))
    upscaler.description = context.description or upscaler.description
    return upscaler
