"""One byte budget for the pixels every session holds in memory: a thread-safe LRU of arrays.

What is cached here can always be read back from disk or computed again (rebuilt images, version
deltas, selection masks), so past the budget the least recently used entries are dropped. What a
session must hold (thumbnails, brush strokes) is "pinned": counted in the same budget, never dropped,
and the cache makes room for it.
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Hashable

import numpy as np

Key = tuple[str, str, Hashable]  # (session id, kind: "full" | "delta" | "mask", which)


class PixelCache:
    def __init__(self, budget_bytes: int) -> None:
        self.budget_bytes = budget_bytes
        self._lock = threading.Lock()
        self._entries: OrderedDict[Key, np.ndarray] = OrderedDict()
        self._cached_bytes = 0
        self._pinned: dict[tuple[str, str], int] = {}

    def get(self, key: Key) -> np.ndarray | None:
        """The cached array (the same object each time while it stays), marked as just used."""
        with self._lock:
            array = self._entries.get(key)
            if array is not None:
                self._entries.move_to_end(key)
            return array

    def put(self, key: Key, array: np.ndarray) -> np.ndarray:
        """Cache `array` as the most recently used entry, then drop the oldest ones past the budget.
        The newest entry always stays, so the budget must hold at least one photo."""
        with self._lock:
            self._remove(key)
            self._entries[key] = array
            self._cached_bytes += array.nbytes
            self._evict()
        return array

    def drop(self, key: Key) -> None:
        with self._lock:
            self._remove(key)

    def drop_session(self, session_id: str, kind: str | None = None) -> None:
        """Forget a session's entries (of one kind), and, without a kind, its pinned bytes."""
        with self._lock:
            for key in [k for k in self._entries if k[0] == session_id and kind in (None, k[1])]:
                self._remove(key)
            if kind is None:
                for owner in [o for o in self._pinned if o[0] == session_id]:
                    del self._pinned[owner]

    def pin(self, session_id: str, what: str, nbytes: int) -> None:
        """Set the bytes a session holds outside the cache for `what` (thumbnails, brush strokes)."""
        with self._lock:
            self._pinned[(session_id, what)] = nbytes
            self._evict()

    def keys(self, session_id: str, kind: str) -> list[Key]:
        """A session's cached keys of one kind, least recently used first."""
        with self._lock:
            return [k for k in self._entries if k[0] == session_id and k[1] == kind]

    def bytes_in_memory(self) -> int:
        with self._lock:
            return self._cached_bytes + sum(self._pinned.values())

    def _remove(self, key: Key) -> None:
        array = self._entries.pop(key, None)
        if array is not None:
            self._cached_bytes -= array.nbytes

    def _evict(self) -> None:
        pinned = sum(self._pinned.values())
        while len(self._entries) > 1 and self._cached_bytes + pinned > self.budget_bytes:
            _, array = self._entries.popitem(last=False)
            self._cached_bytes -= array.nbytes
