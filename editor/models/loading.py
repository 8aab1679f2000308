"""Loading a shared model once: any failure becomes one remembered line, never a traceback.

A model that fails to load (a damaged file, CUDA out of memory while moving it, any error a
library raises) is tried once. The failure is remembered for the life of the process: the
settings cannot change in a running process, so trying again would only fail again, at the
cost of every click. The line goes to the log when it happens and to the engine's status.
"""
from __future__ import annotations

import gc
import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Generic, TypeVar

from editor.core.errors import EditorError, ModelLoadError
from editor.models.base import OutOfMemory

T = TypeVar("T")
log = logging.getLogger(__name__)
REASON_CHARS = 300


def one_line(exc: BaseException) -> str:
    """An exception as one short line: the editor's own message as it is, another's with its type."""
    if isinstance(exc, EditorError):
        return reason(exc)
    text = _first_line(exc)
    return clip(f"{type(exc).__name__}: {text}" if text else type(exc).__name__)


def reason(exc: BaseException) -> str:
    """The first line of an error's message, clipped at a sentence's end (its type when it has none)."""
    return clip(_first_line(exc) or type(exc).__name__)


def reason_with_cause(exc: BaseException) -> str:
    """`reason`, after the first error of the chain that led to it: diffusers reports "unable to
    load weights from X at X" and keeps why (safetensors' "incomplete metadata") underneath."""
    text, inner = _first_line(exc) or type(exc).__name__, exc
    while (deeper := inner.__cause__ or inner.__context__) is not None:
        inner = deeper
    if inner is not exc and (cause := _first_line(inner)) and cause not in text:
        text = f"{cause.rstrip(' .')}: {text}"
    return clip(text)


def clip(text: str, limit: int = REASON_CHARS) -> str:
    """At most `limit` characters, cut after a whole sentence where one ends in time."""
    if len(text) <= limit:
        return text
    end = text.rfind(". ", 0, limit)
    return text[: end + 1] if end > limit // 3 else text[: limit - 3].rstrip() + "..."


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0].strip() if lines else ""


def load_failure(what: str, exc: BaseException) -> str:
    """The line that stands for a failed load of `what` ("SAM"), logged once.

    The editor's own errors already name the file and say what is wrong; another library's
    error gets the model's name in front.
    """
    message = one_line(exc) if isinstance(exc, EditorError) else f"{what} failed to load: {one_line(exc)}"
    log.error("%s", message)
    return message


@contextmanager
def out_of_memory_as(advice: str) -> Iterator[None]:
    """A device out-of-memory error inside becomes `OutOfMemory` with the person's advice; memory is released."""
    import torch

    try:
        yield
    except torch.cuda.OutOfMemoryError:
        torch.cuda.empty_cache()
        raise OutOfMemory(f"out of GPU memory: {advice}") from None


def release_memory() -> None:
    """Free what a failed load left half-moved (CUDA out of memory mid-way). Call it after the
    `except` block: until then the traceback's frames still hold the half-loaded model."""
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


class LoadOnce(Generic[T]):
    """`loader()` run at most once, by whichever thread asks first; its result or its failure is kept."""

    def __init__(self, what: str, loader: Callable[[], T]) -> None:
        self.what = what  # names the model in an error, e.g. "SAM"
        self._loader = loader
        self._value: T | None = None
        self._error: str | None = None
        self._lock = threading.Lock()

    @property
    def loaded(self) -> bool:
        return self._value is not None

    @property
    def error(self) -> str | None:
        """Why the load failed (one line), or None when it did not (or has not been tried yet)."""
        return self._error

    def get(self) -> T:
        """The loaded model; raises ModelLoadError, now and on every later call, if loading failed."""
        if self._value is None and self._error is None:
            with self._lock:
                if self._value is None and self._error is None:
                    try:
                        self._value = self._loader()
                    except Exception as exc:  # any type: torch, CUDA, safetensors and the hub raise many
                        self._error = load_failure(self.what, exc)
                    if self._error is not None:
                        release_memory()
        if self._error is not None:
            raise ModelLoadError(self._error)
        return self._value  # type: ignore[return-value]
