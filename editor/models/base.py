"""What the engine knows of its models: the interfaces and their request and result types.

This module imports neither torch nor Gradio, so the engine (and a client of a model served
in another process) can use the interfaces without loading a deep-learning library. Every
image is a numpy array: photos `HxWx3 uint8` RGB, masks `HxW uint8` with 255 = selected.
Each backend module implements one interface; `registry.py` names them.
"""
from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable

import numpy as np

from editor.core.errors import EditorError, ModelUnavailableError
from editor.core.prompts import Detection, Prompts

Kind = Literal["segmenter", "eraser", "inpainter", "detector", "upscaler"]
KINDS: tuple[Kind, ...] = ("segmenter", "eraser", "inpainter", "detector", "upscaler")
Progress = Callable[[int, int], None]  # (steps done, steps in all)
LANCZOS_NAME = "lanczos (no upscaling model)"  # what an upscale's metadata names when a plain resize did it


def fetch_command(what: str) -> str:
    """The one spelling of the command that downloads a model (a kind's default, or a registry name)."""
    return f"python -m editor download {what}"


class OutOfMemory(EditorError):
    """A model ran out of memory on its device; the person can retry smaller."""


class ImageExpired(EditorError):
    """A segmenter no longer holds the image an `ImageRef` names: prepare the image again."""


@dataclass(frozen=True)
class ImageRef:
    """An image a segmenter has prepared (embedded): its content key and size.

    Clicks name the image by this reference, so nothing sends the whole photo per click.
    """

    key: str
    width: int
    height: int


@dataclass(frozen=True)
class Segmentation:
    """One selection: the full-size mask and the model's low-resolution logits.

    `logits` (a small float32 array, or None for a model without them) is what the next click
    on the same object refines, passed back as `previous`.
    """

    mask: np.ndarray  # HxW uint8, 255 = selected
    logits: np.ndarray | None = None


class Segmenter(Protocol):
    description: str  # what selects now (names the fallback once the model failed to load)
    load_error: str | None  # why the model failed to load (one line), or None

    def load(self) -> None:
        """Load the model now rather than at the first photo; a failure is remembered, not raised."""

    def prepare(self, image: np.ndarray) -> ImageRef:
        """Do the expensive per-image work once (`HxWx3 uint8`) and keep it for the clicks."""

    def segment(self, ref: ImageRef, prompts: Prompts, previous: np.ndarray | None = None) -> Segmentation:
        """The object the validated prompts select on a prepared image; cheap.

        Raises ImageExpired when the prepared image is no longer held.
        """


class Eraser(Protocol):
    """Removes the masked object and fills the hole with what surrounds it."""

    description: str
    model_name: str
    load_error: str | None
    multiple: int  # the work image's sides are padded to a multiple of this
    max_side: int  # a crop with a longer side is resized down to this for the model

    def load(self) -> None:
        """Load the model now rather than at the first erase; ModelLoadError if it cannot be."""

    def erase(self, image: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """`image` (`HxWx3 uint8`, sides multiples of `multiple`) with the masked part refilled, same size."""


@dataclass(frozen=True)
class InpaintRequest:
    prompt: str
    negative_prompt: str
    steps: int
    guidance: float
    strength: float
    seed: int
    num_images: int = 1
    model: str = ""  # which inpainting model paints it (inpaint.models); "" the default, inpaint.model


class Inpainter(Protocol):
    description: str
    model_name: str
    native_size: int
    load_error: str | None  # why the model failed to load (one line), or None

    def load(self) -> None:
        """Load the model now rather than at the first edit; ModelLoadError if it cannot be."""

    def inpaint(
        self,
        image: np.ndarray,
        mask: np.ndarray,
        request: InpaintRequest,
        progress: Progress | None = None,
        cancel: threading.Event | None = None,
    ) -> list[np.ndarray]:
        """Repaint the masked part of `image` (`HxWx3 uint8`, sides multiples of 8) as asked.

        Returns `request.num_images` images of the same size; OutOfMemory on a full device.
        """


@runtime_checkable
class InpainterChoice(Protocol):
    """Several inpainting models behind one `Inpainter` (inpaint.model, then inpaint.models)."""

    names: tuple[str, ...]  # the default first

    def member(self, name: str) -> Inpainter:
        """The model `name` ("" the default); ModelUnavailableError when it holds none of that name."""


def inpainter_names(inpainter: Inpainter | None) -> tuple[str, ...]:
    """The inpainting models a person may choose among, the default first; none without an inpainter."""
    if inpainter is None:
        return ()
    return inpainter.names if isinstance(inpainter, InpainterChoice) else (inpainter.model_name,)


def choose_inpainter(inpainter: Inpainter, name: str) -> Inpainter:
    """The model `name` ("" the default) of a choice of inpainters, or of one when it is that one."""
    if isinstance(inpainter, InpainterChoice):
        return inpainter.member(name)
    if name in ("", inpainter.model_name):
        return inpainter
    raise ModelUnavailableError(f"no inpainting model {name!r} here: this editor runs {inpainter.model_name} "
                                "(more with inpaint.models)")


class Detector(Protocol):
    description: str
    load_error: str | None  # why the model failed to load (one line), or None

    def load(self) -> object:
        """Load the model now rather than at the first query; ModelLoadError if it cannot be."""

    def detect(self, image: np.ndarray, queries: list[str]) -> list[Detection]:
        """Boxes of `queries` (lower-case phrases) in an `HxWx3 uint8` photo, best first."""


class Upscaler(Protocol):
    """Enlarges a photo by the model's own factor; the engine cuts big photos into tiles for it."""

    description: str
    model_name: str
    scale: int  # the model's factor: each side comes out `scale` times longer
    tile: int  # the engine sends tiles of at most this side (plus overlap) so that any size fits in memory
    load_error: str | None  # why the model failed to load (one line), or None

    def load(self) -> None:
        """Load the model now rather than at the first upscale; ModelLoadError if it cannot be."""

    def upscale(self, image: np.ndarray) -> np.ndarray:
        """`image` (`HxWx3 uint8`) enlarged to `(H*scale)x(W*scale)x3 uint8`."""
