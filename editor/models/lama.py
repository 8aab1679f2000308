"""Erasing with LaMa (big-lama) through spandrel: a dedicated model that fills a hole from its
surroundings in one forward pass, seconds on a CPU where diffusion takes a minute.

spandrel reads the published TorchScript `big-lama.pt`, a plain state dict saved as `.pt`/`.pth`,
and `.safetensors` copies (preferred: no pickle). LaMa takes RGB in 0..1 and a 0/1 mask, sides
multiples of 8, and returns the image with only the masked pixels repainted. It has no float16
(`supports_half=False`); bfloat16 works on CUDA. The model loads on first use (or at `load`), is
warmed up there (the first call on a CPU is several times slower than the next), and serves one
call at a time: it is shared by every session.
"""
from __future__ import annotations

import threading
from pathlib import Path
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from editor.core.errors import EditorError
from editor.models.loading import LoadOnce, out_of_memory_as
from editor.models.registry import LoadContext, ModelEntry
from editor.models.tensors import image_to_tensor, tensor_to_image

MULTIPLE = 8  # LaMa downsamples three times
WARM_UP_SIDE = 64
OOM_ADVICE = "select a smaller region, lower eraser.max_side, or set device=cpu"


class LamaEraser:
    """An `Eraser` over one LaMa file."""

    model_name = "lama"
    multiple = MULTIPLE

    def __init__(self, path: Path | Callable[[], Path], device: str, max_side: int) -> None:
        """`path` is the weights file, or a function giving it at the first load (fetching it there)."""
        self._weights = path if callable(path) else (lambda: path)
        self.device = device
        self.dtype = torch.bfloat16 if device == "cuda" else torch.float32
        self.max_side = max_side
        self.description = f"lama ({device}{', bfloat16' if self.dtype == torch.bfloat16 else ''})"
        self._slot: LoadOnce[Any] = LoadOnce(f"LaMa ({path.name if isinstance(path, Path) else 'big-lama'})",
                                             self._load)
        self._lock = threading.Lock()  # one forward at a time on the shared model

    @property
    def load_error(self) -> str | None:
        return self._slot.error

    def load(self) -> None:
        """Load and warm up now; ModelLoadError if that failed (tried once, remembered)."""
        self._slot.get()

    def erase(self, image: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """`image` (`HxWx3 uint8`, sides multiples of 8) with the masked pixels repainted; the others as given."""
        model = self._slot.get()
        with self._lock, out_of_memory_as(OOM_ADVICE):
            return self._forward(model, image, mask)

    def _load(self) -> Any:
        import spandrel
        from spandrel import MaskedImageModelDescriptor

        path = self._weights()
        descriptor = spandrel.ModelLoader(self.device).load_from_file(path)
        if not isinstance(descriptor, MaskedImageModelDescriptor) or descriptor.architecture.id != "LaMa":
            raise EditorError(f"{path} is a {descriptor.architecture.name} model, not LaMa: "
                              "set eraser.model to a LaMa file (big-lama.pt or .safetensors)")
        descriptor.eval()
        descriptor.to(self.dtype)
        side = WARM_UP_SIDE
        hole = np.zeros((side, side), np.uint8)
        hole[side // 4: side // 2, side // 4: side // 2] = 255
        self._forward(descriptor, np.zeros((side, side, 3), np.uint8), hole)
        return descriptor

    def _forward(self, model: Any, image: np.ndarray, mask: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            hole = torch.from_numpy(mask > 0)[None, None].to(self.device, self.dtype)
            return tensor_to_image(model(image_to_tensor(image, self.device, self.dtype), hole))


def load(entry: ModelEntry, path: Path | None, context: LoadContext) -> LamaEraser:
    """The eraser for `path` (weights load at first use, fetched then when not here); refuses at once
    when there is no file and nothing can fetch it."""
    weights = context.weights_file(entry, path, "set eraser.model to a LaMa file")
    eraser = LamaEraser(weights, context.device, context.config.eraser.max_side)
    eraser.description = context.description or eraser.description
    return eraser
