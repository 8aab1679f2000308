"""What every model-backed segmenter shares: the model loaded once on first use, the embedding
cache, one computation at a time, and GrabCut once the model failed to load.

SAM (segment-anything) and SAM 2.1 / EdgeTAM (transformers) differ only in how they embed a photo
and decode a click; they subclass `SharedSegmenter` for the rest.
"""
from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Generic, TypeVar

from editor.core.errors import ModelLoadError
from editor.models.base import ImageRef
from editor.models.embedding_cache import SegmenterCache
from editor.models.loading import LoadOnce
from editor.models.opencv import GrabCutSegmenter

M = TypeVar("M")
EXPIRED = "the photo's embedding was released to make room for others: prepare it again"


class SharedSegmenter(Generic[M]):
    def __init__(self, loader: Callable[[], M], description: str, cache_bytes: int, title: str,
                 source: str = "") -> None:
        """`loader` loads the model (once, at first use); `cache_bytes` bounds the image embeddings
        and click results kept, all photos together. `title` and `source` name the model in a
        load failure."""
        self._slot: LoadOnce[M] = LoadOnce(f"{title} ({source})" if source else title, loader)
        self._title = title
        self._description = description
        self._cache = SegmenterCache(cache_bytes)
        self._fallback = GrabCutSegmenter()
        self._lock = threading.Lock()  # one model, many sessions: one computation at a time

    @property
    def description(self) -> str:
        return f"grabcut ({self._title} failed to load)" if self.load_error else self._description

    @property
    def loaded(self) -> bool:
        return self._slot.loaded

    @property
    def load_error(self) -> str | None:
        """Why the model failed to load (one line, remembered), or None."""
        return self._slot.error

    @property
    def cached_bytes(self) -> int:
        """Bytes held by the embeddings and click results kept, never above `cache_budget`."""
        return self._cache.held

    @property
    def cache_budget(self) -> int:
        return self._cache.budget

    def embedding(self, key: str) -> object | None:
        """The kept embedding of the image prepared as `key` (to hand to another process), or None."""
        with self._lock:
            return self._cache.embedding(key)

    def adopt(self, ref: ImageRef, embedding: object) -> None:
        """Keep an embedding another process computed for `ref`'s image (same model), as if prepared here."""
        with self._lock:
            self._cache.put_embedding(ref.key, embedding, embedding.nbytes)  # type: ignore[attr-defined]

    def load(self) -> None:
        """Load the model now (it otherwise loads at the first photo); a failure is remembered."""
        self._loaded()

    def _loaded(self) -> M | None:
        """The loaded model, or None when it failed to load (the failure is in the status, once)."""
        try:
            return self._slot.get()
        except ModelLoadError:
            return None
