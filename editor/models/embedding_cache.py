"""What segmenters keep per image: content keys, image embeddings and decoded clicks in one byte budget.

Shared by every segmenter backend (segment-anything's SAM, SAM 2.1 and EdgeTAM, GrabCut). A
prepared image is named by its content key, so a click names the image without sending it.
The expensive embedding is kept once per image version; each click's low-resolution result is
kept too, so the next click refines it instead of replaying the whole click sequence. Embeddings
and click results share one byte budget, however many photos the sessions hold. Torch-free:
a cached value is anything its owner can size (`tensor_bytes` for torch tensors).
"""
from __future__ import annotations

import hashlib
import threading
import weakref
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterable
from typing import Any, Protocol, TypeVar

import numpy as np

from editor.core.prompts import Prompts

T = TypeVar("T")
KEYS_REMEMBERED = 8  # read-only photos whose content hash is remembered
IMAGES_REMEMBERED = 8  # photos GrabCut can still reach by key (weakly held: the sessions own them)


class Tensor(Protocol):
    def numel(self) -> int: ...

    def element_size(self) -> int: ...


def tensor_bytes(tensors: Tensor | Iterable[Tensor]) -> int:
    """The bytes a tensor, or a list of them (SAM 2's feature maps), holds."""
    if hasattr(tensors, "numel"):
        return tensors.numel() * tensors.element_size()  # type: ignore[union-attr]
    return sum(tensor_bytes(tensor) for tensor in tensors)  # type: ignore[union-attr]


class BytesLRU:
    """Values kept within a byte budget, the least recently used released first.

    A value larger than the whole budget is not kept. Not locked: its owner locks.
    """

    def __init__(self, budget: int) -> None:
        self.budget = budget
        self.held = 0  # bytes held now, never above the budget
        self._items: OrderedDict[Hashable, tuple[Any, int]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._items)

    def get(self, key: Hashable) -> Any | None:
        item = self._items.get(key)
        if item is None:
            return None
        self._items.move_to_end(key)
        return item[0]

    def put(self, key: Hashable, value: Any, size: int) -> None:
        if key in self._items:
            self.held -= self._items.pop(key)[1]
        if size > self.budget:
            return
        while self.held + size > self.budget:
            self.held -= self._items.popitem(last=False)[1][1]
        self._items[key] = (value, size)
        self.held += size


def image_key(image: np.ndarray) -> str:
    """A content hash identifying one version of an image."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update(str(image.shape).encode())
    digest.update(np.ascontiguousarray(image).data)
    return digest.hexdigest()


class ImageKeys:
    """`image_key`, remembered for the last few read-only images seen.

    The session stores each version read-only, so the same array object always holds the
    same pixels, and clicks on a 24-megapixel photo need not hash it again each time.
    """

    def __init__(self, size: int = KEYS_REMEMBERED) -> None:
        self._size = size
        self._known: OrderedDict[int, tuple[weakref.ref, str]] = OrderedDict()  # by id(image)
        self._lock = threading.Lock()  # the hashing itself runs outside it

    def __call__(self, image: np.ndarray) -> str:
        with self._lock:
            known = self._known.get(id(image))
        if known is not None and known[0]() is image and not image.flags.writeable:
            return known[1]
        key = image_key(image)
        if not image.flags.writeable and image.base is None:
            with self._lock:
                self._known[id(image)] = (weakref.ref(image), key)
                while len(self._known) > self._size:
                    self._known.popitem(last=False)
        return key


class RecentImages:
    """The last few prepared images by content key, held weakly: what GrabCut selects on.

    The sessions own the photos; once one is gone, its key finds nothing (prepare it again).
    """

    def __init__(self, size: int = IMAGES_REMEMBERED) -> None:
        self._size = size
        self._images: OrderedDict[str, weakref.ref] = OrderedDict()
        self._lock = threading.Lock()

    def put(self, key: str, image: np.ndarray) -> None:
        with self._lock:
            self._images.pop(key, None)
            self._images[key] = weakref.ref(image)
            while len(self._images) > self._size:
                self._images.popitem(last=False)

    def get(self, key: str) -> np.ndarray | None:
        with self._lock:
            ref = self._images.get(key)
        return None if ref is None else ref()


def click_steps(prompts: Prompts) -> list[Prompts]:
    """The growing prompt sets of a click-by-click session: box (or first point) first; each keeps
    the candidate its first click took, as every later one refines it."""
    first = 0 if prompts.box is not None else 1
    return [Prompts(prompts.points[:n], prompts.labels[:n], prompts.box, prompts.candidate)
            for n in range(first, len(prompts.points) + 1)]


class SegmenterCache:
    """One segmenter's image embeddings and decoded clicks, within one byte budget. Not locked:
    its owner locks (the owner's model lock, as computing and caching go together)."""

    def __init__(self, budget: int, size_of: Callable[[Any], int] = tensor_bytes) -> None:
        self._lru = BytesLRU(budget)
        self._size_of = size_of
        self.keys = ImageKeys()

    @property
    def held(self) -> int:
        return self._lru.held

    @property
    def budget(self) -> int:
        return self._lru.budget

    def embedding(self, key: str) -> Any | None:
        return self._lru.get(("embedding", key))

    def put_embedding(self, key: str, embedding: Any, size: int | None = None) -> None:
        self._lru.put(("embedding", key), embedding, self._size_of(embedding) if size is None else size)

    def decode(self, key: str, prompts: Prompts, previous: T | None, step: Callable[[Prompts, T | None], T]) -> T:
        """The low-resolution logits of `prompts`' last click, decoding only what is not kept yet.

        SAM is trained for interactive use: each click is decoded with the previous click's
        logits as its mask prompt. Clicks decoded before are taken from the cache; given
        `previous` (the caller's logits of all but the last click), only the last click runs.
        `step(prompts, logits)` decodes one click.
        """
        steps = click_steps(prompts)
        done, logits = self._longest_decoded(key, steps)
        if previous is not None and done < len(steps):
            done, logits = len(steps) - 1, previous
        for prompt_set in steps[done:]:
            logits = step(prompt_set, logits)
            self._lru.put(("logits", key, prompt_set), logits, self._size_of(logits))
        return logits  # type: ignore[return-value]

    def _longest_decoded(self, key: str, steps: list[Prompts]) -> tuple[int, Any | None]:
        """How many of `steps` are decoded already, and the last one's logits."""
        for done in range(len(steps), 0, -1):
            logits = self._lru.get(("logits", key, steps[done - 1]))
            if logits is not None:
                return done, logits
        return 0, None
