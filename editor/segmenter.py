"""Selecting objects: Segment Anything with a per-image embedding cache, or GrabCut without weights.

The expensive step (the image embedding) runs once per image version and is cached by the
image's content hash; every click after that runs only SAM's small prompt decoder. Nothing
about an image is stored on the shared model, so many sessions can use one segmenter.
"""
from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch
from segment_anything import SamPredictor
from segment_anything.modeling import Sam

from editor import classical
from editor.prompts import Prompts


class Segmenter(Protocol):
    description: str

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


def image_key(image: np.ndarray) -> str:
    """A content hash identifying one version of an image."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update(str(image.shape).encode())
    digest.update(np.ascontiguousarray(image).data)
    return digest.hexdigest()


class SamSegmenter:
    def __init__(self, model: Sam, description: str, cache_size: int = 8) -> None:
        self.model = model
        self.description = description
        self._cache_size = cache_size
        self._embeddings: OrderedDict[str, Embedding] = OrderedDict()
        self._lock = threading.Lock()  # one model, many sessions: one computation at a time

    def prepare(self, image: np.ndarray) -> None:
        self._embedding(image)

    def segment(self, image: np.ndarray, prompts: Prompts) -> np.ndarray:
        """Replay the clicks in order, as SAM was trained for interactive use.

        The first prompt alone asks for several masks and keeps the best-scoring one (a single
        click is ambiguous: part, object or group); each further click asks for one mask,
        refined with the previous step's low-resolution logits.
        """
        embedding = self._embedding(image)
        with self._lock, torch.inference_mode():
            predictor = self._predictor(embedding)
            logits = None
            for step in _steps(prompts):
                low_res, scores = self._decode(predictor, embedding, step, logits)
                logits = low_res[int(torch.argmax(scores))][None]
            masks = self.model.postprocess_masks(logits[None], embedding.input_size, embedding.original_size)
            selected = (masks[0, 0] > self.model.mask_threshold).cpu().numpy()
        return np.where(selected, 255, 0).astype(np.uint8)

    def _embedding(self, image: np.ndarray) -> Embedding:
        key = image_key(image)
        with self._lock:
            if key in self._embeddings:
                self._embeddings.move_to_end(key)
                return self._embeddings[key]
            predictor = SamPredictor(self.model)
            predictor.set_image(image, image_format="RGB")
            embedding = Embedding(predictor.features, predictor.original_size, predictor.input_size)
            self._embeddings[key] = embedding
            while len(self._embeddings) > self._cache_size:
                self._embeddings.popitem(last=False)
            return embedding

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

    def prepare(self, image: np.ndarray) -> None:
        pass  # GrabCut has no per-image precomputation

    def segment(self, image: np.ndarray, prompts: Prompts) -> np.ndarray:
        return classical.grabcut(image, prompts)
