"""Selecting objects with segment-anything's SAM, with a per-image embedding cache.

The expensive step (the image embedding) runs once per image version, in `prepare`, and is
cached by the image's content key; every click after that (`segment`) runs SAM's small prompt
decoder once: the low-resolution result of each click is kept, so the next click refines it
instead of replaying the whole click sequence. Nothing about an image is stored on the shared
model, so many sessions can use one segmenter. The model itself loads on first use (or when
`load` is called, e.g. in the background at start-up), so the page is served at once; if it
fails to load, the failure is remembered and clicks select with GrabCut instead. Embeddings
and click results share one byte budget (`segmenter.embedding_cache_mb`), however many photos
the sessions hold.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from segment_anything import SamPredictor
from segment_anything.modeling import Sam

from editor.core import masks
from editor.core.prompts import Prompts
from editor.models.base import ImageExpired, ImageRef, Segmentation
from editor.models.embedding_cache import tensor_bytes
from editor.models.shared_segmenter import EXPIRED, SharedSegmenter

if TYPE_CHECKING:
    from editor.models.registry import LoadContext, ModelEntry

DEFAULT_CACHE_BYTES = 64 * 2**20  # one SAM embedding is 4 MB (256x64x64 floats), a click's result 256 KB


@dataclass(frozen=True)
class Embedding:
    """What `SamPredictor.set_image` computes for one image."""

    features: torch.Tensor
    original_size: tuple[int, int]
    input_size: tuple[int, int]

    @property
    def nbytes(self) -> int:
        return tensor_bytes(self.features)


class SamSegmenter(SharedSegmenter[Sam]):
    def __init__(self, model: Sam | Callable[[], Sam], description: str,
                 cache_bytes: int = DEFAULT_CACHE_BYTES) -> None:
        """`model` is a loaded SAM, or a function that loads it on first use.

        `cache_bytes` bounds the image embeddings and click results kept, all photos together.
        """
        super().__init__((lambda: model) if isinstance(model, Sam) else model, description, cache_bytes, "SAM")
        if isinstance(model, Sam):
            self._slot.get()  # given loaded: nothing left to fail

    @property
    def model(self) -> Sam:
        """The model, loaded on first use; raises ModelLoadError if it failed to load (tried once)."""
        return self._slot.get()

    def prepare(self, image: np.ndarray) -> ImageRef:
        """Embed `image` (`HxWx3 uint8`) unless its embedding is kept already; name it for the clicks."""
        if self._loaded() is None:
            return self._fallback.prepare(image)  # the failure is in the status, once
        key = self._cache.keys(image)
        with self._lock:
            if self._cache.embedding(key) is None:
                predictor = SamPredictor(self.model)
                with torch.inference_mode():
                    predictor.set_image(image, image_format="RGB")
                embedding = Embedding(predictor.features, predictor.original_size, predictor.input_size)
                self._cache.put_embedding(key, embedding, embedding.nbytes)
        return ImageRef(key, image.shape[1], image.shape[0])

    def segment(self, ref: ImageRef, prompts: Prompts, previous: np.ndarray | None = None) -> Segmentation:
        """The object the validated prompts select, refining click by click as SAM was trained.

        The first prompt alone asks for several masks and keeps the best-scoring one (a single
        click is ambiguous: part, object or group); each further click asks for one mask,
        refined with the previous step's low-resolution logits: `previous` (float32, 256x256 for the
        published models, from the last `Segmentation`), or else the cached steps, replayed where missing.
        Raises ImageExpired when the image's embedding was released.
        """
        if self._loaded() is None:
            return self._fallback.segment(ref, prompts, previous)
        with self._lock, torch.inference_mode():
            embedding = self._cache.embedding(ref.key)
            if embedding is None:
                raise ImageExpired(EXPIRED)
            predictor = self._predictor(embedding)
            start = None if previous is None else torch.as_tensor(previous, device=self.model.device)[None].float()
            logits = self._cache.decode(ref.key, prompts, start,
                                        lambda step, last: self._decode(predictor, embedding, step, last))
        return Segmentation(self._full_size_mask(logits, embedding), logits[0].float().cpu().numpy())

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
    ) -> torch.Tensor:
        """One click's low-resolution mask logits (1x256x256): the best-scoring of those asked for, or
        the candidate the prompts name."""
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
        return low_res[0][_chosen(scores[0], step.candidate if multimask else None)][None]


def _chosen(scores: torch.Tensor, candidate: int | None) -> int:
    """The index of the mask to keep: the candidate asked for, else the best-scoring."""
    return int(torch.argmax(scores)) if candidate is None else min(candidate, scores.shape[-1] - 1)


def load(entry: ModelEntry, path: Path | None, context: LoadContext) -> SamSegmenter:
    """The registry's `load` for Segment Anything: a checkpoint file, loaded (and, when it is not
    here yet, fetched) at the first photo or at `load()`; the architecture is read from the file."""
    from editor.models.sam_loader import load_sam

    def load_model() -> Sam:
        return load_sam(context.locate(entry, path), "auto", context.device)[0]  # the architecture is read from the file

    cache_bytes = int(context.config.segmenter.embedding_cache_mb * 2**20)
    return SamSegmenter(load_model, context.description or entry.title, cache_bytes)
