"""Selecting objects: Segment Anything with a per-image embedding cache, or GrabCut without weights.

The expensive step (the image embedding) runs once per image version and is cached by the
image's content hash; every click after that runs SAM's small prompt decoder once: the
low-resolution result of each click is kept, so the next click refines it instead of
replaying the whole click sequence. Nothing about an image is stored on the shared model,
so many sessions can use one segmenter. The model itself loads on first use (or when
`load` is called, e.g. in the background at start-up), so the page is served at once; if it
fails to load, the failure is remembered and clicks select with GrabCut instead. Embeddings
and click results share one byte budget (`segmenter.embedding_cache_mb`), however many photos
the sessions hold.
"""
from __future__ import annotations

import hashlib
import threading
import weakref
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from segment_anything import SamPredictor
from segment_anything.modeling import Sam

from editor.models import opencv
from editor.core import masks
from editor.core.errors import ModelLoadError
from editor.models.loading import LoadOnce
from editor.core.prompts import Prompts

if TYPE_CHECKING:
    from editor.models.registry import LoadContext, ModelEntry

DEFAULT_CACHE_BYTES = 64 * 2**20  # one SAM embedding is 4 MB (256x64x64 floats), a click's result 256 KB
KEYS_REMEMBERED = 8  # read-only photos whose content hash is remembered


class Segmenter(Protocol):
    description: str  # what selects now (names the fallback once the model failed to load)
    load_error: str | None  # why the model failed to load (one line), or None

    def load(self) -> None:
        """Load the model now rather than at the first photo; a failure is remembered, not raised."""

    def prepare(self, image: np.ndarray) -> None:
        """Do the per-image work ahead of the first click (`HxWx3 uint8`)."""

    def segment(self, image: np.ndarray, prompts: Prompts) -> np.ndarray:
        """The selected object as an `HxW uint8` mask (255 = selected), for validated prompts."""


@dataclass(frozen=True)
class Embedding:
    """What `SamPredictor.set_image` computes for one image."""

    features: torch.Tensor
    original_size: tuple[int, int]
    input_size: tuple[int, int]

    @property
    def nbytes(self) -> int:
        return tensor_bytes(self.features)


def tensor_bytes(tensor: torch.Tensor) -> int:
    return tensor.numel() * tensor.element_size()


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

    def __init__(self, size: int = 8) -> None:
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


class SamSegmenter:
    def __init__(self, model: Sam | Callable[[], Sam], description: str,
                 cache_bytes: int = DEFAULT_CACHE_BYTES) -> None:
        """`model` is a loaded SAM, or a function that loads it on first use.

        `cache_bytes` bounds the image embeddings and click results kept, all photos together.
        """
        self._slot: LoadOnce[Sam] = LoadOnce("SAM", (lambda: model) if isinstance(model, Sam) else model)
        if isinstance(model, Sam):
            self._slot.get()  # given loaded: nothing left to fail
        self._description = description
        self._cache = BytesLRU(cache_bytes)
        self._keys = ImageKeys(KEYS_REMEMBERED)
        self._lock = threading.Lock()  # one model, many sessions: one computation at a time

    @property
    def description(self) -> str:
        return "grabcut (SAM failed to load)" if self.load_error else self._description

    @property
    def model(self) -> Sam:
        """The model, loaded on first use; raises ModelLoadError if it failed to load (tried once)."""
        return self._slot.get()

    @property
    def loaded(self) -> bool:
        return self._slot.loaded

    @property
    def load_error(self) -> str | None:
        """Why SAM failed to load (one line, remembered), or None."""
        return self._slot.error

    @property
    def cached_bytes(self) -> int:
        """Bytes held by the embeddings and click results kept, never above `cache_budget`."""
        return self._cache.held

    @property
    def cache_budget(self) -> int:
        return self._cache.budget

    def load(self) -> None:
        """Load the model now (it otherwise loads at the first photo); a failure is remembered."""
        self._sam()

    def prepare(self, image: np.ndarray) -> None:
        if self._sam() is not None:
            self._embedding(image)

    def segment(self, image: np.ndarray, prompts: Prompts) -> np.ndarray:
        """Replay the clicks in order, as SAM was trained for interactive use.

        The first prompt alone asks for several masks and keeps the best-scoring one (a single
        click is ambiguous: part, object or group); each further click asks for one mask,
        refined with the previous step's low-resolution logits. Steps already decoded for
        this image (the clicks before the last one) are taken from a cache.
        """
        if self._sam() is None:
            return opencv.grabcut(image, prompts)  # the failure is in the status, once
        key, embedding = self._embedding(image)
        steps = _steps(prompts)
        with self._lock, torch.inference_mode():
            done, logits = self._longest_decoded(key, steps)
            predictor = self._predictor(embedding)
            for step in steps[done:]:
                low_res, scores = self._decode(predictor, embedding, step, logits)
                logits = low_res[int(torch.argmax(scores))][None]
                self._remember(key, step, logits)
            return self._full_size_mask(logits, embedding)

    def _longest_decoded(self, key: str, steps: list[Prompts]) -> tuple[int, torch.Tensor | None]:
        """How many of `steps` are decoded already, and the last one's logits."""
        for done in range(len(steps), 0, -1):
            logits = self._cache.get(("logits", key, steps[done - 1]))
            if logits is not None:
                return done, logits
        return 0, None

    def _remember(self, key: str, step: Prompts, logits: torch.Tensor) -> None:
        self._cache.put(("logits", key, step), logits, tensor_bytes(logits))

    def _sam(self) -> Sam | None:
        """The model, or None when it failed to load."""
        try:
            return self.model
        except ModelLoadError:
            return None

    def _full_size_mask(self, logits: torch.Tensor, embedding: Embedding) -> np.ndarray:
        """SAM's `postprocess_masks`, with the last (largest) upscaling done by OpenCV.

        Upscaling a 12-megapixel mask is most of a click's time in torch on a CPU; OpenCV's
        bilinear resize uses the same pixel-centre convention and is several times faster.
        """
        side = self.model.image_encoder.img_size
        padded = F.interpolate(logits[None], (side, side), mode="bilinear", align_corners=False)
        rows, cols = embedding.input_size
        square = padded[0, 0, :rows, :cols].float().cpu().numpy()
        height, width = embedding.original_size
        full = cv2.resize(square, (width, height), interpolation=cv2.INTER_LINEAR)
        return masks.from_bool(full > self.model.mask_threshold)

    def _embedding(self, image: np.ndarray) -> tuple[str, Embedding]:
        key = self._keys(image)
        with self._lock:
            cached = self._cache.get(("embedding", key))
            if cached is not None:
                return key, cached
            predictor = SamPredictor(self.model)
            with torch.inference_mode():
                predictor.set_image(image, image_format="RGB")
            embedding = Embedding(predictor.features, predictor.original_size, predictor.input_size)
            self._cache.put(("embedding", key), embedding, embedding.nbytes)
            return key, embedding

    def _predictor(self, embedding: Embedding) -> SamPredictor:
        """A predictor of our own for this call, holding the cached embedding."""
        predictor = SamPredictor(self.model)
        predictor.features = embedding.features
        predictor.original_size = embedding.original_size
        predictor.input_size = embedding.input_size
        predictor.is_image_set = True
        return predictor

    def _decode(
        self, predictor: SamPredictor, embedding: Embedding, step: Prompts, logits: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Low-resolution mask logits and scores; no upsampling until the last step."""
        device = self.model.device
        points = None
        if step.points:
            coords = predictor.transform.apply_coords(np.array(step.points, dtype=np.float32), embedding.original_size)
            points = (
                torch.as_tensor(coords, dtype=torch.float32, device=device)[None],
                torch.as_tensor(step.labels, dtype=torch.int64, device=device)[None],
            )
        box = None
        if step.box is not None:
            box = predictor.transform.apply_boxes(np.array(step.box, dtype=np.float32), embedding.original_size)
            box = torch.as_tensor(box, dtype=torch.float32, device=device)
        sparse, dense = self.model.prompt_encoder(points=points, boxes=box, masks=logits)
        multimask = logits is None and len(step.points) == 1 and step.box is None
        low_res, scores = self.model.mask_decoder(
            image_embeddings=embedding.features,
            image_pe=self.model.prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=multimask,
        )
        return low_res[0], scores[0]


def _steps(prompts: Prompts) -> list[Prompts]:
    """The growing prompt sets of a click-by-click session: box (or first point) first."""
    first = 0 if prompts.box is not None else 1
    return [Prompts(prompts.points[:n], prompts.labels[:n], prompts.box) for n in range(first, len(prompts.points) + 1)]


class GrabCutSegmenter:
    """The fallback when no SAM checkpoint is available: OpenCV's GrabCut from the same prompts."""

    description = "grabcut (no SAM checkpoint)"
    load_error = None  # nothing to load, nothing to fail

    def load(self) -> None:
        pass  # nothing to load

    def prepare(self, image: np.ndarray) -> None:
        pass  # GrabCut has no per-image precomputation

    def segment(self, image: np.ndarray, prompts: Prompts) -> np.ndarray:
        return opencv.grabcut(image, prompts)


def load(entry: ModelEntry, path: Path | None, context: LoadContext) -> SamSegmenter:
    """The registry's `load` for Segment Anything: a checkpoint file, loaded (and, when it is not
    here yet, fetched) at the first photo or at `load()`; the architecture is read from the file."""
    from editor.models.sam_loader import load_sam

    def load_model() -> Sam:
        if path is None and context.fetch is None:
            raise ModelLoadError(f"{entry.name} is not on this machine")
        weights = path if path is not None else context.fetch()  # type: ignore[misc]
        return load_sam(weights, "auto", context.device)[0]  # the architecture is read from the file

    cache_bytes = int(context.config.segmenter.embedding_cache_mb * 2**20)
    return SamSegmenter(load_model, context.description or entry.title, cache_bytes)
